"""Paired bootstrap of a test metric: how sure is "model A beats model B" on this test set?

The test rows are resampled with replacement, the same rows for every model (paired), and each
model is scored on each resample. The spread of a model's metric, or of the difference or ratio
between two models, is then the part of the uncertainty that comes from which molecules happen
to be in a small test set (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13:
percentile intervals). It does not cover training randomness (seeds, partition, split).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fedpharma.evaluation.metrics import compute_metrics

if TYPE_CHECKING:
    from fedpharma.core.dataset import Objective

FloatArray = npt.NDArray[np.float64]


def paired_bootstrap(
    task: Objective,
    labels: npt.ArrayLike,
    predictions: Mapping[str, npt.ArrayLike],
    metric: str,
    rng: np.random.Generator,
    resamples: int = 1000,
) -> dict[str, FloatArray]:
    """``metric`` of each model in ``predictions`` on ``resamples`` resamples of the test rows,
    the same rows for every model; NaN where the metric is undefined on a resample."""
    truth = np.asarray(labels)
    predicted = {model: np.asarray(p) for model, p in predictions.items()}
    scores = {model: np.empty(resamples) for model in predicted}
    for index in range(resamples):
        rows = rng.integers(0, len(truth), len(truth))
        for model, p in predicted.items():
            scores[model][index] = compute_metrics(task, truth[rows], p[rows])[metric]
    return scores


def percentile_interval(values: FloatArray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of ``values`` (NaNs ignored)."""
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)
