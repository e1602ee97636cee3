"""Prediction metrics for sparse multitask labels (NaN = missing), without torch.

Each task (column) is scored on its observed rows only; the summary is the unweighted mean over
the tasks on which a metric is defined, the usual macro-average for multitask bioactivity
benchmarks (Wu et al. 2018, "MoleculeNet", §3.3). A metric is undefined on a task when:

- the task has no observed label (every metric), or a single one (r2);
- classification labels of one class only (roc_auc, pr_auc need both classes; the whole task is
  skipped, as MoleculeNet does);
- spearman on constant labels or predictions (no ranking to correlate);
- any prediction at an observed position is NaN or infinite (a diverged model scores NaN rather
  than crashing the evaluation of a whole federated run).

When no task qualifies the mean is NaN.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from scipy import stats
from sklearn import metrics as sk

if TYPE_CHECKING:
    from fedpharma.data.dataset import Task

FloatArray = npt.NDArray[np.floating]

PRIMARY_METRIC: dict[Task, tuple[str, bool]] = {
    "regression": ("rmse", False),
    "classification": ("roc_auc", True),
}
"""Per task type: the metric that ranks models, and whether higher is better."""

REGRESSION_METRICS = ("rmse", "mae", "r2", "spearman")
CLASSIFICATION_METRICS = ("roc_auc", "pr_auc", "accuracy")
CLASSIFICATION_THRESHOLD = 0.5  # on predicted probabilities, for accuracy


def per_task_metrics(
    task: Task, y_true: npt.ArrayLike, y_pred: npt.ArrayLike
) -> list[dict[str, float]]:
    """One dict per task (column), in column order; NaN marks a metric undefined on that task.

    ``y_true`` and ``y_pred`` are n×t (a 1-D array is one task). ``y_true`` holds NaN where a
    label is missing; for classification it holds 0/1 and ``y_pred`` class-1 probabilities.
    """
    if task not in PRIMARY_METRIC:
        raise ValueError(f"unknown task {task!r}; expected 'regression' or 'classification'")
    truth, predicted = as_matrices(y_true, y_pred)
    score = _regression_scores if task == "regression" else _classification_scores
    results = []
    for column in range(truth.shape[1]):
        observed = ~np.isnan(truth[:, column])
        results.append(score(truth[observed, column], predicted[observed, column]))
    return results


def compute_metrics(task: Task, y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> dict[str, float]:
    """Each metric averaged over the tasks on which it is defined (NaN if none): see module doc."""
    names = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    per_task = per_task_metrics(task, y_true, y_pred)
    summary = {}
    for name in names:
        defined = [scores[name] for scores in per_task if not math.isnan(scores[name])]
        summary[name] = float(np.mean(defined)) if defined else math.nan
    return summary


def as_matrices(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Labels and predictions as float64 n×t matrices (a 1-D array is one task), same shape."""
    truth = np.asarray(y_true, dtype=np.float64)
    predicted = np.asarray(y_pred, dtype=np.float64)
    if truth.ndim == 1:
        truth = truth[:, None]
    if predicted.ndim == 1:
        predicted = predicted[:, None]
    if truth.ndim != 2 or truth.shape != predicted.shape:
        raise ValueError(
            f"y_true has shape {np.shape(y_true)} and y_pred {np.shape(y_pred)}; "
            "expected the same n×t shape"
        )
    return truth, predicted


def _regression_scores(truth: FloatArray, predicted: FloatArray) -> dict[str, float]:
    scores = dict.fromkeys(REGRESSION_METRICS, math.nan)
    if len(truth) == 0 or not np.all(np.isfinite(predicted)):
        return scores
    scores["rmse"] = float(np.sqrt(sk.mean_squared_error(truth, predicted)))
    scores["mae"] = float(sk.mean_absolute_error(truth, predicted))
    if len(truth) >= 2:
        scores["r2"] = float(sk.r2_score(truth, predicted))
    if np.ptp(truth) > 0 and np.ptp(predicted) > 0:
        scores["spearman"] = float(stats.spearmanr(truth, predicted).statistic)
    return scores


def _classification_scores(truth: FloatArray, predicted: FloatArray) -> dict[str, float]:
    scores = dict.fromkeys(CLASSIFICATION_METRICS, math.nan)
    if not np.all(np.isin(truth, (0.0, 1.0))):
        raise ValueError("classification labels must be 0 or 1 (or NaN when missing)")
    if len(np.unique(truth)) < 2 or not np.all(np.isfinite(predicted)):
        return scores
    scores["roc_auc"] = float(sk.roc_auc_score(truth, predicted))
    scores["pr_auc"] = float(sk.average_precision_score(truth, predicted))
    scores["accuracy"] = float(
        sk.accuracy_score(truth, (predicted >= CLASSIFICATION_THRESHOLD).astype(np.float64))
    )
    return scores
