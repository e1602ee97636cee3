"""Fixtures for the report tests: a fresh sample summary and a run directory to write it into."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from report_samples import Summary, make_regression_summary


@pytest.fixture
def regression_summary() -> Summary:
    """A new dict each test, so tests may break it freely."""
    return make_regression_summary()


@pytest.fixture
def write_run(tmp_path: Path) -> Callable[[Summary], Path]:
    """Write a summary into a fresh run directory and return the directory."""

    def write(summary: Summary) -> Path:
        run_dir = tmp_path / "run"
        run_dir.mkdir(exist_ok=True)
        (run_dir / "summary.json").write_text(json.dumps(summary), "utf-8")
        return run_dir

    return write
