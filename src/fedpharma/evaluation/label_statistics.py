"""A site's label sufficient statistics: what it contributes to the consortium's label mean and
spread (see :mod:`fedpharma.server.label_statistics`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class LabelSums:
    """Per task: the count of observed labels, their sum and their sum of squares."""

    count: tuple[float, ...]
    total: tuple[float, ...]
    sum_of_squares: tuple[float, ...]


def label_sums(labels: npt.NDArray[np.floating]) -> LabelSums:
    """A site's contribution, over its observed labels only (a missing label is NaN)."""
    observed = ~np.isnan(labels)
    values = np.where(observed, labels, 0.0).astype(np.float64)
    columns = range(labels.shape[1])
    return LabelSums(
        tuple(float(observed[:, t].sum()) for t in columns),
        tuple(float(values[:, t].sum()) for t in columns),
        tuple(float((values[:, t] ** 2).sum()) for t in columns),
    )
