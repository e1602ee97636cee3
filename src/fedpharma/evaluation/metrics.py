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
    from fedpharma.core.dataset import Objective

FloatArray = npt.NDArray[np.floating]

PRIMARY_METRIC: dict[Objective, tuple[str, bool]] = {
    "regression": ("rmse", False),
    "classification": ("roc_auc", True),
}
"""Per task type: the metric that ranks models, and whether higher is better."""

REGRESSION_METRICS = ("rmse", "mae", "r2", "spearman")
CLASSIFICATION_METRICS = ("roc_auc", "pr_auc", "accuracy", "sensitivity", "specificity", "brier")
CLASSIFICATION_THRESHOLD = 0.5  # on predicted probabilities: accuracy, sensitivity, specificity


def per_task_metrics(
    task: Objective, y_true: npt.ArrayLike, y_pred: npt.ArrayLike
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


def compute_metrics(
    task: Objective, y_true: npt.ArrayLike, y_pred: npt.ArrayLike
) -> dict[str, float]:
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
    scores["roc_auc"] = roc_auc(truth, predicted)
    scores["pr_auc"] = average_precision(truth, predicted)
    called = predicted >= CLASSIFICATION_THRESHOLD
    positive = truth == 1
    scores["accuracy"] = float(np.mean(called == positive))
    # What a clinician reads at the threshold: positives found, negatives cleared.
    scores["sensitivity"] = float(np.mean(called[positive]))
    scores["specificity"] = float(np.mean(~called[~positive]))
    # Brier (1950): mean squared error of the probabilities, calibration and sharpness together.
    scores["brier"] = float(np.mean((predicted - truth) ** 2))
    return scores


def roc_auc(truth: FloatArray, scores: FloatArray) -> float:
    """Area under the ROC curve of 0/1 ``truth`` (both classes present) ranked by ``scores``.

    The Mann–Whitney statistic with average ranks for ties, U / (n₊ n₋) (Hanley & McNeil 1982,
    "The meaning and use of the area under a ROC curve", Radiology 143): equal to the trapezoidal
    area scikit-learn computes, at a fraction of its per-call cost (one rank, no validation).
    """
    positive = truth == 1
    n_positive = int(positive.sum())
    n_negative = truth.size - n_positive
    ranks = stats.rankdata(scores)
    u = float(ranks[positive].sum()) - n_positive * (n_positive + 1) / 2
    return u / (n_positive * n_negative)


def average_precision(truth: FloatArray, scores: FloatArray) -> float:
    """Σ_k (R_k − R_{k−1}) P_k over the distinct score thresholds, from the highest down: the
    step-wise area under the precision–recall curve, scikit-learn's ``average_precision_score``
    (no interpolation; tied scores form one threshold)."""
    order = np.argsort(-scores, kind="stable")
    ranked_scores, hits = scores[order], truth[order] == 1
    last_of_tie = np.r_[np.flatnonzero(np.diff(ranked_scores)), hits.size - 1]
    true_positives = np.cumsum(hits)[last_of_tie]
    precision = true_positives / (last_of_tie + 1)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))
