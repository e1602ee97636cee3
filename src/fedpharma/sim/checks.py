"""Checks of a simulation's data before any training: each a typed error that says what to do."""

from __future__ import annotations

from collections.abc import Mapping

from fedpharma.core.errors import DataError

MIN_TEST_ROWS = 2
"""The fewest held-out rows per simulated site: one row has no spread, so most metrics
(R², correlations, AUCs) would be undefined."""


def check_test_sizes(test_rows: Mapping[str, int], n_rows: int) -> None:
    """Every site holds at least :data:`MIN_TEST_ROWS` held-out rows."""
    small = {name: n for name, n in test_rows.items() if n < MIN_TEST_ROWS}
    if small:
        sizes = ", ".join(f"{name} has {n}" for name, n in small.items())
        raise DataError(
            f"too few held-out rows for test metrics ({sizes}; each site needs "
            f"{MIN_TEST_ROWS}): {n_rows} rows over {len(test_rows)} sites; use fewer sites "
            "([partition] n_sites), a larger [dataset] test_fraction, or more data"
        )
