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

from fedpharma.evaluation.metrics import compute_metrics, roc_auc

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


def site_weighted_differences(
    task: Objective,
    labels: Mapping[str, npt.ArrayLike],
    first: Mapping[str, npt.ArrayLike],
    second: Mapping[str, npt.ArrayLike],
    rng: np.random.Generator,
    resamples: int = 200,
) -> FloatArray:
    """The headline metric of ``first`` minus that of ``second`` on ``resamples`` resamples, as
    the report aggregates it: each site's metric on its own test rows, averaged over the sites
    with their test sizes as weights (a site where the metric is undefined on a resample is left
    out of that resample's mean). Each site's rows are resampled with replacement, the same rows
    for both models (stratified by site, paired). ``labels`` and the predictions are rows × tasks
    per site."""
    sites = [s for s in labels if len(np.asarray(labels[s]))]
    truth = {s: _matrix(labels[s]) for s in sites}
    a = {s: _matrix(first[s]) for s in sites}
    b = {s: _matrix(second[s]) for s in sites}
    out = np.empty(resamples)
    for index in range(resamples):
        weights, differences = [], []
        for s in sites:
            rows = rng.integers(0, len(truth[s]), len(truth[s]))
            score_a = headline_metric(task, truth[s][rows], a[s][rows])
            score_b = headline_metric(task, truth[s][rows], b[s][rows])
            if np.isfinite(score_a) and np.isfinite(score_b):
                weights.append(len(rows))
                differences.append(score_a - score_b)
        out[index] = np.average(differences, weights=weights) if weights else np.nan
    return out


def headline_metric(task: Objective, truth: FloatArray, predicted: FloatArray) -> float:
    """:data:`~fedpharma.evaluation.metrics.PRIMARY_METRIC` alone (ROC-AUC or RMSE, averaged
    over the tasks where it is defined), for the thousands of calls a bootstrap makes."""
    observed = ~np.isnan(truth)
    if task == "regression":
        counts = observed.sum(axis=0)
        squared = np.where(observed, truth - predicted, 0.0) ** 2
        per_task = np.sqrt(squared.sum(axis=0)[counts > 0] / counts[counts > 0])
        return float(per_task.mean()) if per_task.size else float("nan")
    aucs = []
    for j in range(truth.shape[1]):
        t, p = truth[observed[:, j], j], predicted[observed[:, j], j]
        if 0 < t.sum() < t.size:
            aucs.append(roc_auc(t, p))
    return float(np.mean(aucs)) if aucs else float("nan")


def _matrix(values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    return array[:, None] if array.ndim == 1 else array
