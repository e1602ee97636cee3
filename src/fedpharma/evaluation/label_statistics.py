"""A site's label sufficient statistics: what it contributes to the consortium's label mean and
spread (see :mod:`fedpharma.server.label_statistics`)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def statistics_metrics(labels: npt.NDArray[np.floating]) -> dict[str, float]:
    """A site's contribution: per task t, ``count:t``, ``sum:t``, ``sum_of_squares:t``."""
    observed = ~np.isnan(labels)
    values = np.where(observed, labels, 0.0).astype(np.float64)
    out = {}
    for t in range(labels.shape[1]):
        out[f"count:{t}"] = float(observed[:, t].sum())
        out[f"sum:{t}"] = float(values[:, t].sum())
        out[f"sum_of_squares:{t}"] = float((values[:, t] ** 2).sum())
    return out
