"""Fixtures for data-layer tests: the shared public benchmark files.

Without them the tests that read them are skipped, each with the reason and the folder looked at
(``pytest -rs`` lists them). Where the data must be there (CI exports
``FEDPHARMA_REQUIRE_SHARED_DATA=1`` when ``../shared/data`` exists), a missing folder fails those
tests instead, so they cannot be skipped silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA_ENV = "FEDPHARMA_SHARED_DATA"
REQUIRE_SHARED_DATA_ENV = "FEDPHARMA_REQUIRE_SHARED_DATA"


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
        reason = f"shared benchmark data not found at {folder} (set {SHARED_DATA_ENV})"
        if os.environ.get(REQUIRE_SHARED_DATA_ENV) == "1":
            pytest.fail(f"{reason}, but {REQUIRE_SHARED_DATA_ENV}=1 says it must be there")
        pytest.skip(reason)
    return folder
