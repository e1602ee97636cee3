"""Checks of a simulation's data before any training: each a typed error that says what to do."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedpharma.core.dataset import Dataset
from fedpharma.core.errors import DataError

MIN_TEST_ROWS = 2
"""The fewest held-out rows per simulated site: one row has no spread, so most metrics
(R², correlations, AUCs) would be undefined."""


def check_binary_labels(dataset: Dataset) -> None:
    """A classification dataset's labels are 0 or 1 (or missing): refuse it before training,
    naming each column that holds anything else."""
    if dataset.task != "classification":
        return
    labels = dataset.labels
    bad = [
        name
        for j, name in enumerate(dataset.task_names)
        if not np.isin(labels[np.isfinite(labels[:, j]), j], (0.0, 1.0)).all()
    ]
    if bad:
        columns = ", ".join(map(repr, bad))
        raise DataError(
            f'task = "classification" needs labels 0 or 1, but column(s) {columns} hold other '
            'values; binarize them, or set task = "regression"'
        )


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
