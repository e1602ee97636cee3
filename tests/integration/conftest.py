"""Fixtures for deployment tests: a PKI, and CLI processes that are killed at teardown.

The helpers the tests import live in ``deploy_helpers.py`` (not here, see its docstring).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_helpers import SITES, Proc

from fedpharma.transport import pki


@pytest.fixture(scope="session")
def pki_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    pki.provision("itest", SITES, root, days=2)
    return root


@pytest.fixture
def procs(tmp_path):
    """Start CLI processes; every one still running at teardown is killed (by its own pid)."""
    started: list[Proc] = []

    def start(name: str, *args: str) -> Proc:
        proc = Proc(list(args), tmp_path / f"{name}-{len(started)}.log", tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill9()
