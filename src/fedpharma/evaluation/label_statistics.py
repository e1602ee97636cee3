"""A site's label sufficient statistics: what it contributes to the consortium's label mean and
spread (see :mod:`fedpharma.server.label_statistics`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedpharma.core.dataset import Matrix, SparseMatrix


@dataclass(frozen=True)
class LabelSums:
    """Per task: the count of observed labels, their sum and their sum of squares."""

    count: tuple[float, ...]
    total: tuple[float, ...]
    sum_of_squares: tuple[float, ...]


def label_sums(labels: Matrix) -> LabelSums:
    """A site's contribution, over its observed labels only (a missing label is NaN, or absent
    from a sparse matrix)."""
    if isinstance(labels, SparseMatrix):
        tasks, values = labels.indices, labels.values.astype(np.float64)
        width = labels.n_columns
        return LabelSums(
            tuple(np.bincount(tasks, minlength=width).astype(float).tolist()),
            tuple(np.bincount(tasks, weights=values, minlength=width).tolist()),
            tuple(np.bincount(tasks, weights=values**2, minlength=width).tolist()),
        )
    observed = ~np.isnan(labels)
    values = np.where(observed, labels, 0.0).astype(np.float64)
    columns = range(labels.shape[1])
    return LabelSums(
        tuple(float(observed[:, t].sum()) for t in columns),
        tuple(float(values[:, t].sum()) for t in columns),
        tuple(float((values[:, t] ** 2).sum()) for t in columns),
    )
