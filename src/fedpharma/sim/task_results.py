"""Per-task results of the federated model on the pooled test rows of a simulation.

A multitask run's headline is a macro-average over tasks (:mod:`fedpharma.evaluation.metrics`);
this module keeps each task's own metrics and the aggregates the report plots: a parity
histogram for regression, ROC and precision–recall curves and a reliability table for
classification (Niculescu-Mizil & Caruana 2005). Only counts, rates and curve points go into
``summary.json``, never a row's label or prediction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from sklearn import metrics as sk

from fedpharma.core.dataset import Objective, SiteData
from fedpharma.evaluation.metrics import per_task_metrics
from fedpharma.report.summary import (
    Calibration,
    CurvePoints,
    LabelDistribution,
    Parity,
    TaskResult,
)

PARITY_BINS = 24
LABEL_BINS = 20
CALIBRATION_BINS = 10
MAX_CURVE_POINTS = 60

Array = npt.NDArray[np.float64]


def task_results(
    task: Objective, names: Sequence[str], labels: Array, predictions: Array
) -> dict[str, TaskResult]:
    """Each task's :class:`TaskResult`; ``labels`` (NaN = missing) and ``predictions`` are
    rows × tasks over every site's test rows."""
    metrics = per_task_metrics(task, labels, predictions)
    out = {}
    for j, name in enumerate(names):
        observed = np.isfinite(labels[:, j]) & np.isfinite(predictions[:, j])
        truth, predicted = labels[observed, j], predictions[observed, j]
        values = {k: (v if math.isfinite(v) else None) for k, v in metrics[j].items()}
        if task == "regression":
            out[name] = TaskResult(int(observed.sum()), values, parity=_parity(truth, predicted))
        else:
            roc, pr = _curves(truth, predicted)
            calibration = _calibration(truth, predicted)
            out[name] = TaskResult(int(observed.sum()), values, None, roc, pr, calibration)
    return out


def _parity(truth: Array, predicted: Array) -> Parity | None:
    if truth.size == 0:
        return None
    low = float(min(truth.min(), predicted.min()))
    high = float(max(truth.max(), predicted.max()))
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, PARITY_BINS + 1)
    counts, _, _ = np.histogram2d(truth, predicted, bins=(edges, edges))
    return Parity(
        tuple(float(e) for e in edges), tuple(tuple(int(c) for c in row) for row in counts)
    )


def _curves(truth: Array, predicted: Array) -> tuple[CurvePoints | None, CurvePoints | None]:
    if truth.size == 0 or len(np.unique(truth)) < 2:
        return None, None  # undefined on one class, as the AUCs are
    fpr, tpr, _ = sk.roc_curve(truth, predicted)
    precision, recall, _ = sk.precision_recall_curve(truth, predicted)
    return _points(fpr, tpr), _points(recall[::-1], precision[::-1])


def _points(x: Array, y: Array) -> CurvePoints:
    """At most :data:`MAX_CURVE_POINTS` points, the ends kept."""
    keep = np.unique(np.linspace(0, len(x) - 1, min(len(x), MAX_CURVE_POINTS)).round().astype(int))
    return CurvePoints(tuple(float(v) for v in x[keep]), tuple(float(v) for v in y[keep]))


def _calibration(truth: Array, predicted: Array) -> Calibration | None:
    if truth.size == 0:
        return None
    bins = np.clip((predicted * CALIBRATION_BINS).astype(int), 0, CALIBRATION_BINS - 1)
    filled = [b for b in range(CALIBRATION_BINS) if (bins == b).any()]
    return Calibration(
        predicted=tuple(float(predicted[bins == b].mean()) for b in filled),
        observed=tuple(float(truth[bins == b].mean()) for b in filled),
        counts=tuple(int((bins == b).sum()) for b in filled),
    )


def pooled_task_results(
    predictions: Mapping[str, Array], sites: Mapping[str, SiteData]
) -> dict[str, TaskResult]:
    """:func:`task_results` of one model over every site's test rows; empty when the sites'
    tasks differ (private heads: each partner's own tasks)."""
    if len({data.test.task_names for data in sites.values()}) != 1:
        return {}
    first = next(iter(sites.values())).test
    labels = np.concatenate([data.test.dense_labels() for data in sites.values()]).astype(
        np.float64
    )
    predicted = np.concatenate([predictions[name] for name in sites])
    return task_results(first.task, first.task_names, labels, predicted)


def label_distributions(sites: Mapping[str, SiteData]) -> dict[str, LabelDistribution]:
    """Per task, each site's training labels as counts (see :class:`LabelDistribution`); empty
    when the sites' tasks differ. The shared bins span the pooled range, which a simulation
    knows; each site's counts are what it could release by itself."""
    if not sites or len({data.train.task_names for data in sites.values()}) != 1:
        return {}
    first = next(iter(sites.values())).train
    out = {}
    for j, name in enumerate(first.task_names):
        columns = {
            site: data.train.dense_labels()[:, j].astype(np.float64) for site, data in sites.items()
        }
        observed = {site: c[np.isfinite(c)] for site, c in columns.items()}
        missing = {site: int(len(c) - len(observed[site])) for site, c in columns.items()}
        if first.task == "classification":
            classes = {s: (int((o == 0).sum()), int((o == 1).sum())) for s, o in observed.items()}
            out[name] = LabelDistribution((), classes, missing)
            continue
        pooled = np.concatenate(list(observed.values()))
        if pooled.size == 0:
            continue
        low, high = float(pooled.min()), float(pooled.max())
        edges = np.linspace(low, high if high > low else low + 1.0, LABEL_BINS + 1)
        counts = {
            s: tuple(int(c) for c in np.histogram(o, bins=edges)[0]) for s, o in observed.items()
        }
        out[name] = LabelDistribution(tuple(float(e) for e in edges), counts, missing)
    return out
