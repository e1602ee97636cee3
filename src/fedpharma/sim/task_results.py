"""Per-task results of the federated model on the pooled test rows of a simulation.

A multitask run's headline is a macro-average over tasks (:mod:`fedpharma.evaluation.metrics`);
this module keeps each task's own metrics and the aggregates the report plots: a parity
histogram for regression, ROC and precision–recall curves and a reliability table for
classification (Niculescu-Mizil & Caruana 2005). Only counts, rates and curve points go into
``summary.json``, never a row's label or prediction.

The figures come from the same counts a deployed site sends
(:mod:`fedpharma.evaluation.task_counts`): ROC and PR points at the 100 score bins' edges
(before: at every distinct score), and the reliability table's mean prediction from the score
bins' midpoints (within 0.005 of the rows' mean). The metrics stay exact, from the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from fedpharma.core.dataset import Objective, SiteData
from fedpharma.evaluation.metrics import per_task_metrics
from fedpharma.evaluation.task_counts import LABEL_BINS, PARITY_BINS, label_counts, task_counts
from fedpharma.report.summary import LabelDistribution, TaskResult
from fedpharma.server.task_summary import task_results_from_counts

Array = npt.NDArray[np.float64]


def task_results(
    task: Objective, names: Sequence[str], labels: Array, predictions: Array
) -> dict[str, TaskResult]:
    """Each task's :class:`TaskResult`; ``labels`` (NaN = missing) and ``predictions`` are
    rows × tasks over every site's test rows. The metrics are exact (the driver holds the rows);
    the figures come from the counts a deployed site sends
    (:func:`fedpharma.server.task_summary.task_results_from_counts`), so both draw alike."""
    metrics = per_task_metrics(task, labels, predictions)
    out = {}
    for j, name in enumerate(names):
        edges = _parity_edges(labels[:, j], predictions[:, j]) if task == "regression" else None
        counts = task_counts(task, labels[:, j], predictions[:, j], edges)
        out[name] = task_results_from_counts(counts, edges, metrics[j])
    return out


def _parity_edges(truth: Array, predicted: Array) -> Array | None:
    """The pooled rows' range (a simulation knows it), in :data:`PARITY_BINS` bins."""
    observed = np.isfinite(truth) & np.isfinite(predicted)
    if not observed.any():
        return None
    low = float(min(truth[observed].min(), predicted[observed].min()))
    high = float(max(truth[observed].max(), predicted[observed].max()))
    if high <= low:
        high = low + 1.0
    return np.linspace(low, high, PARITY_BINS + 1)


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
        edges = None
        if first.task == "regression":
            pooled = np.concatenate([c[np.isfinite(c)] for c in columns.values()])
            if pooled.size == 0:
                continue
            low, high = float(pooled.min()), float(pooled.max())
            edges = np.linspace(low, high if high > low else low + 1.0, LABEL_BINS + 1)
        # the counts a deployed site sends (fedpharma.evaluation.task_counts.label_counts)
        counts = {s: label_counts(first.task, c, edges) for s, c in columns.items()}
        out[name] = LabelDistribution(
            () if edges is None else tuple(float(e) for e in edges),
            {s: tuple(int(v) for v in c[:-1]) for s, c in counts.items()},
            {s: int(c[-1]) for s, c in counts.items()},
        )
    return out
