"""Fixtures for data-layer tests: the shared public benchmark files, skipped when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA_ENV = "FEDPHARMA_SHARED_DATA"


def shared_data_dir() -> Path:
    """``$FEDPHARMA_SHARED_DATA``, or ``../shared/data`` next to the repository."""
    override = os.environ.get(SHARED_DATA_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = shared_data_dir()
    if not folder.is_dir():
        pytest.skip(f"shared benchmark data not found at {folder} (set {SHARED_DATA_ENV})")
    return folder
