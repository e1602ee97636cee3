"""Per-task aggregates that pool across sites: counts on fixed grids and a few sums.

One implementation for a simulation (which pools its sites' rows in the driver) and a deployment
(where each site computes its part and sends it; :mod:`fedpharma.server.task_summary`). Per task
and site, over the test rows with a label and a finite prediction:

- classification: negatives and positives per bin of :data:`SCORE_BINS` equal bins of the
  predicted probability on [0, 1] (``histogram`` 2 × :data:`SCORE_BINS`), and the sum of squared
  errors (Brier);
- regression: the 2-D histogram of (label, prediction) on ``edges`` the coordinator fixes
  (:data:`PARITY_BINS` bins per axis; a value outside the grid counts in its end bin), and the
  sums of squared and absolute errors, of the labels and of their squares.

Added over sites, these give the pooled metrics exactly, except the ranking ones, which follow
the grid (:func:`pooled_metrics`): the binned ROC AUC counts a positive and a negative in one
bin as a tie (half), so it is within :func:`auc_tolerance` of the exact one; average precision
takes one threshold per bin; Spearman's ρ does not pool from counts and is left undefined. The
curves, the reliability table and the parity histogram come from the same counts. Nothing of a
single row is in them beyond which bin it falls in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedpharma.core.dataset import Objective
from fedpharma.evaluation.metrics import (
    CLASSIFICATION_METRICS,
    CLASSIFICATION_THRESHOLD,
    REGRESSION_METRICS,
)

SCORE_BINS = 100
"""Equal bins of the predicted probability on [0, 1]; the classification grid, fixed."""
SCORE_EDGES = np.linspace(0.0, 1.0, SCORE_BINS + 1)
PARITY_BINS = 24
"""Bins per axis of the parity histogram."""
CALIBRATION_BINS = 10
"""Reliability-table bins: each is SCORE_BINS / CALIBRATION_BINS consecutive score bins."""
PARITY_SPAN = 4.0
"""A deployed parity grid spans the pooled training labels' mean ± this many standard
deviations (:func:`parity_edges`)."""
LABEL_BINS = 20
"""Bins of a regression task's training-label distribution at each site."""
SUMS: dict[Objective, tuple[str, ...]] = {
    "classification": ("squared_error",),
    "regression": ("squared_error", "absolute_error", "label", "label_squared"),
}

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TaskCounts:
    """One task's aggregates at a site, or added over sites (see the module docstring)."""

    task: Objective
    n: int
    sums: Array
    histogram: Array

    def __add__(self, other: TaskCounts) -> TaskCounts:
        if self.task != other.task or self.histogram.shape != other.histogram.shape:
            raise ValueError("task counts of different kinds or grids do not add")
        return TaskCounts(
            self.task, self.n + other.n, self.sums + other.sums, self.histogram + other.histogram
        )


def width(task: Objective) -> int:
    """The length of one task's :func:`to_vector`."""
    cells = 2 * SCORE_BINS if task == "classification" else PARITY_BINS * PARITY_BINS
    return 1 + len(SUMS[task]) + cells


def grid_index(values: Array, edges: Array) -> npt.NDArray[np.intp]:
    """The bin of each value on ``edges`` (as ``np.histogram``: a bin holds its lower edge, the
    last also its upper edge); values outside the grid go to its end bins."""
    index = np.searchsorted(edges, values, side="right") - 1
    return np.clip(index, 0, len(edges) - 2)


def task_counts(task: Objective, truth: Array, predicted: Array, edges: Array | None) -> TaskCounts:
    """One task's counts over rows with a label and a finite prediction (1-D arrays; NaN =
    missing label). ``edges``: the parity grid (regression only)."""
    truth = np.asarray(truth, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    kept = np.isfinite(truth) & np.isfinite(predicted)
    truth, predicted = truth[kept], predicted[kept]
    error = predicted - truth
    if task == "classification":
        histogram = np.zeros((2, SCORE_BINS))
        bins = grid_index(predicted, SCORE_EDGES)
        positive = truth == 1
        np.add.at(histogram[0], bins[~positive], 1.0)
        np.add.at(histogram[1], bins[positive], 1.0)
        sums = np.array([float(np.sum(error**2))])
    else:
        if edges is None or len(edges) != PARITY_BINS + 1:
            raise ValueError(f"a regression task needs {PARITY_BINS + 1} parity edges")
        grid = np.asarray(edges, dtype=np.float64)
        histogram = np.zeros((PARITY_BINS, PARITY_BINS))
        np.add.at(histogram, (grid_index(truth, grid), grid_index(predicted, grid)), 1.0)
        sums = np.array(
            [
                float(np.sum(error**2)),
                float(np.sum(np.abs(error))),
                float(np.sum(truth)),
                float(np.sum(truth**2)),
            ]
        )
    return TaskCounts(task, int(kept.sum()), sums, histogram)


def to_vector(counts: TaskCounts) -> list[float]:
    """``[n, *sums, *histogram]``: what a site sends for one task."""
    return [float(counts.n), *counts.sums.tolist(), *counts.histogram.ravel().tolist()]


def from_vector(task: Objective, values: Iterable[float]) -> TaskCounts:
    """:func:`to_vector`'s inverse; raises ValueError for a vector no honest site sends (wrong
    length, a negative or fractional count, counts that do not add up to ``n``)."""
    vector = np.asarray(list(values), dtype=np.float64)
    if vector.shape != (width(task),) or not np.all(np.isfinite(vector)):
        raise ValueError(f"a {task} task's counts are {width(task)} finite numbers")
    n_sums = len(SUMS[task])
    n, sums, cells = vector[0], vector[1 : 1 + n_sums], vector[1 + n_sums :]
    counts = np.concatenate([[n], cells])
    if np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise ValueError("counts must be whole numbers of at least 0")
    if cells.sum() != n:
        raise ValueError("the bin counts do not add up to the row count")
    if sums[0] < 0 or (task == "regression" and (sums[1] < 0 or sums[3] < 0)):
        raise ValueError("a sum of squares or of absolute values is negative")
    shape = (2, SCORE_BINS) if task == "classification" else (PARITY_BINS, PARITY_BINS)
    return TaskCounts(task, int(n), sums, cells.reshape(shape))


def pool(counts: Iterable[TaskCounts]) -> TaskCounts | None:
    """The sum over sites; None for none."""
    total: TaskCounts | None = None
    for part in counts:
        total = part if total is None else total + part
    return total


def parity_edges(mean: float, std: float) -> Array:
    """A deployed parity grid: mean ± :data:`PARITY_SPAN` standard deviations of the pooled
    training labels (mean ± 1 where the spread is unknown or zero)."""
    if not math.isfinite(mean):
        mean = 0.0
    half = PARITY_SPAN * std if math.isfinite(std) and std > 0 else 1.0
    return np.linspace(mean - half, mean + half, PARITY_BINS + 1)


def label_width(task: Objective) -> int:
    """The length of one task's :func:`label_counts`."""
    return (LABEL_BINS if task == "regression" else 2) + 1


def label_edges(parity: Array) -> Array:
    """A regression task's label-distribution grid: the parity grid's span in
    :data:`LABEL_BINS` bins."""
    return np.linspace(float(parity[0]), float(parity[-1]), LABEL_BINS + 1)


def label_counts(task: Objective, labels: Array, edges: Array | None) -> list[float]:
    """One site's training labels of one task: counts per bin of ``edges`` (regression; outside
    values in the end bins) or of class 0 and 1 (classification), then the rows without it."""
    labels = np.asarray(labels, dtype=np.float64)
    observed = labels[np.isfinite(labels)]
    missing = float(labels.size - observed.size)
    if task == "classification":
        return [float((observed == 0).sum()), float((observed == 1).sum()), missing]
    if edges is None:
        raise ValueError("a regression task's label counts need edges")
    bins = grid_index(observed, np.asarray(edges, dtype=np.float64))
    return [*np.bincount(bins, minlength=len(edges) - 1).astype(float).tolist(), missing]


# ----- pooled results ---------------------------------------------------------------------------


def _thresholds(counts: TaskCounts) -> tuple[Array, Array]:
    """Cumulative (negatives, positives) scored at or above each non-empty bin, top bin first."""
    negatives, positives = counts.histogram[0][::-1], counts.histogram[1][::-1]
    filled = (negatives + positives) > 0
    return np.cumsum(negatives)[filled], np.cumsum(positives)[filled]


def _both_classes(counts: TaskCounts) -> bool:
    return counts.task == "classification" and bool(
        counts.histogram[0].sum() > 0 and counts.histogram[1].sum() > 0
    )


def roc_points(counts: TaskCounts) -> tuple[Array, Array] | None:
    """(false positive rate, true positive rate) at each bin's lower edge as threshold, from
    (0, 0); None on one class."""
    if not _both_classes(counts):
        return None
    false, true = _thresholds(counts)
    return np.r_[0.0, false / false[-1]], np.r_[0.0, true / true[-1]]


def pr_points(counts: TaskCounts) -> tuple[Array, Array] | None:
    """(recall, precision) at each bin threshold, from (0, 1); None on one class."""
    if not _both_classes(counts):
        return None
    false, true = _thresholds(counts)
    return np.r_[0.0, true / true[-1]], np.r_[1.0, true / (true + false)]


def binned_auc(counts: TaskCounts) -> float:
    """The trapezoidal area under :func:`roc_points` (rows in one bin tie); NaN on one class."""
    points = roc_points(counts)
    if points is None:
        return math.nan
    x, y = points
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def auc_tolerance(counts: TaskCounts) -> float:
    """How far :func:`binned_auc` can be from the exact AUC of the same rows: half the share of
    positive–negative pairs that fall in one bin (each such pair counts ½ binned, 0 or 1
    exactly)."""
    if not _both_classes(counts):
        return 0.0
    negatives, positives = counts.histogram
    return float(np.sum(negatives * positives) / (2 * negatives.sum() * positives.sum()))


def binned_average_precision(counts: TaskCounts) -> float:
    """Σ (R_k − R_{k−1}) P_k over the bin thresholds (a bin's rows form one threshold)."""
    points = pr_points(counts)
    if points is None:
        return math.nan
    recall, precision = points
    return float(np.sum(np.diff(recall) * precision[1:]))


def calibration_table(counts: TaskCounts) -> tuple[Array, Array, Array] | None:
    """Per non-empty reliability bin: mean predicted probability (each row at its score bin's
    midpoint, so within half a score bin of the rows' mean), observed positive rate, rows."""
    if counts.task != "classification" or counts.n == 0:
        return None
    group = SCORE_BINS // CALIBRATION_BINS
    negatives = counts.histogram[0].reshape(CALIBRATION_BINS, group)
    positives = counts.histogram[1].reshape(CALIBRATION_BINS, group)
    rows = negatives + positives
    mids = ((SCORE_EDGES[:-1] + SCORE_EDGES[1:]) / 2).reshape(CALIBRATION_BINS, group)
    total = rows.sum(axis=1)
    filled = total > 0
    predicted = (rows * mids).sum(axis=1)[filled] / total[filled]
    return predicted, positives.sum(axis=1)[filled] / total[filled], total[filled]


def pooled_metrics(counts: TaskCounts) -> dict[str, float]:
    """The metrics of :mod:`fedpharma.evaluation.metrics` from pooled counts (NaN where
    undefined, as there; see the module docstring for which are exact)."""
    if counts.task == "classification":
        scores = dict.fromkeys(CLASSIFICATION_METRICS, math.nan)
        if not _both_classes(counts):
            return scores
        threshold = int(np.searchsorted(SCORE_EDGES, CLASSIFICATION_THRESHOLD))
        negatives, positives = counts.histogram
        found, cleared = positives[threshold:].sum(), negatives[:threshold].sum()
        scores["roc_auc"] = binned_auc(counts)
        scores["pr_auc"] = binned_average_precision(counts)
        scores["accuracy"] = float((found + cleared) / counts.n)
        scores["sensitivity"] = float(found / positives.sum())
        scores["specificity"] = float(cleared / negatives.sum())
        scores["brier"] = float(counts.sums[0] / counts.n)
        return scores
    scores = dict.fromkeys(REGRESSION_METRICS, math.nan)
    if counts.n == 0:
        return scores
    squared, absolute, total, total_squared = (float(v) for v in counts.sums)
    scores["rmse"] = math.sqrt(squared / counts.n)
    scores["mae"] = absolute / counts.n
    spread = total_squared - total**2 / counts.n
    if counts.n >= 2 and spread > 0:
        scores["r2"] = 1.0 - squared / spread
    return scores
