"""Per-task results of a deployed run's final model, pooled from the sites' counts.

After the last round the coordinator sends every admitted site a
:class:`~fedpharma.core.protocol.TaskSummaryTask` with the final model; each answers with, per
task, the counts of :mod:`fedpharma.evaluation.task_counts` on its test rows (bins of predicted
probability by class, or a (label, prediction) histogram on the grid the task fixes, and a few
sums), its own per-task metrics and its training labels' counts per bin or class (the report's
label distributions). Added over the sites, the counts give the pooled per-task
metrics, ROC / PR points, the reliability table and the parity histogram
(:func:`task_results_from_counts`, which a simulation uses too, on its sites' counts).

Not asked: a run with differential privacy (the counts carry no noise; each site refuses them
anyway once it trained under DP), and a run with private heads (each partner's tasks are its
own). A site's policy may decline; the report names the sites that took part.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedpharma.core.config import RunConfig
from fedpharma.core.dataset import Objective
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import Channel, Task, TaskSummaryResult, TaskSummaryTask
from fedpharma.evaluation import task_counts as tc
from fedpharma.report.summary import (
    Calibration,
    CurvePoints,
    LabelDistribution,
    Parity,
    TaskResult,
)
from fedpharma.server.label_statistics import gather_label_statistics
from fedpharma.server.round import Rejected, sort_replies

MAX_CURVE_POINTS = 60

SKIPPED_UNDER_DP = (
    "not asked: under differential privacy per-task counts of the sites' test rows would be an "
    "un-noised release (and each site refuses them in a run that asks it for DP)"
)
SKIPPED_PRIVATE_HEADS = "not asked: with private heads each partner's tasks are its own"
RESOLUTION = (
    f"pooled from the sites' counts: ROC / PR at {tc.SCORE_BINS} score bins (the ROC AUC within "
    "the stated tolerance of the exact one), accuracy, sensitivity, specificity, Brier, RMSE, "
    f"MAE and R² exact; parity on a {tc.PARITY_BINS}×{tc.PARITY_BINS} grid of the pooled "
    f"training labels' mean ± {tc.PARITY_SPAN:g} sd (outside values in the end bins); "
    "Spearman's ρ does not pool from counts"
)


@dataclass(frozen=True)
class TaskSummaries:
    """What the sites sent (each site's per-task vectors and metrics), who declined and why, or
    why nobody was asked."""

    task: Objective
    names: tuple[str, ...]
    edges: tuple[float, ...] = ()
    sent: Mapping[str, tuple[tuple[float, ...], dict[str, float]]] = field(default_factory=dict)
    labels: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    declined: Mapping[str, str] = field(default_factory=dict)
    skipped: str | None = None


def collect_task_summaries(
    config: RunConfig,
    channel: Channel,
    run_id: str,
    rnd: int,
    parameters: Parameters,
    task: Objective,
    names: Sequence[str],
    timeout: float | None = None,
    on_rejected: Rejected | None = None,
) -> TaskSummaries:
    """Ask every available site for the per-task counts of ``parameters`` (see module doc);
    ``on_rejected`` is told each reply rejected (malformed, or counts that cannot be)."""
    names = tuple(names)
    if config.privacy.enabled:
        return TaskSummaries(task, names, skipped=SKIPPED_UNDER_DP)
    if config.model.private_heads:
        return TaskSummaries(task, names, skipped=SKIPPED_PRIVATE_HEADS)
    edges: tuple[float, ...] = ()
    if task == "regression":
        grid = _parity_grid(config, channel, run_id, len(names), timeout)
        if grid is None:
            return TaskSummaries(task, names, skipped="not asked: no site sent label statistics")
        edges = grid
    tasks: dict[str, Task] = {
        site: TaskSummaryTask(
            run_id, rnd, parameters, len(names), tc.width(task), edges, tc.label_width(task)
        )
        for site in channel.available_sites()
    }
    results, refusals, failures = sort_replies(tasks, channel.exchange(tasks, timeout), on_rejected)
    sent: dict[str, tuple[tuple[float, ...], dict[str, float]]] = {}
    labels: dict[str, tuple[float, ...]] = {}
    declined = {site: f"refused: {r.reason}" for site, r in refusals.items()} | dict(failures)
    for site, reply in sorted(results.items()):
        if not isinstance(reply, TaskSummaryResult):
            continue
        try:
            _counts(task, len(names), reply.values)
            _label_counts(task, len(names), reply.label_counts)
        except ValueError as exc:
            declined[site] = f"rejected: {exc}"
            if on_rejected is not None:
                on_rejected(site, rnd, f"task summary: {exc}")
            continue
        sent[site] = (reply.values, dict(reply.metrics))
        labels[site] = reply.label_counts
    return TaskSummaries(task, names, edges, sent, labels, declined)


def _parity_grid(
    config: RunConfig, channel: Channel, run_id: str, n_tasks: int, timeout: float | None
) -> tuple[float, ...] | None:
    """Each task's parity edges from the label prior, else the sites' pooled label statistics
    (the release the output layer's calibration already uses)."""
    if config.model.label_mean and len(config.model.label_mean) == n_tasks:
        mean = np.array(config.model.label_mean, dtype=np.float64)
        std = np.array(config.model.label_std or [1.0] * n_tasks, dtype=np.float64)
    else:
        statistics = gather_label_statistics(channel, run_id, n_tasks, timeout)
        if statistics is None:
            return None
        mean, std = statistics.mean, statistics.std
    return tuple(float(e) for j in range(n_tasks) for e in tc.parity_edges(mean[j], std[j]))


def _counts(task: Objective, n_tasks: int, values: Sequence[float]) -> list[tc.TaskCounts]:
    step = tc.width(task)
    if len(values) != n_tasks * step:
        raise ValueError(f"expected {n_tasks} × {step} numbers")
    return [tc.from_vector(task, values[j * step : (j + 1) * step]) for j in range(n_tasks)]


def _label_counts(task: Objective, n_tasks: int, values: Sequence[float]) -> list[list[int]]:
    step = tc.label_width(task)
    vector = np.asarray(values, dtype=np.float64)
    if vector.shape != (n_tasks * step,) or np.any(vector < 0) or np.any(vector != vector.round()):
        raise ValueError(f"the label counts are {n_tasks} × {step} whole numbers of at least 0")
    return [[int(v) for v in vector[j * step : (j + 1) * step]] for j in range(n_tasks)]


def label_distributions_from_summaries(summaries: TaskSummaries) -> dict[str, LabelDistribution]:
    """Per task, each site's training labels as counts (the sites' own, not pooled)."""
    if not summaries.labels:
        return {}
    per_site = {
        site: _label_counts(summaries.task, len(summaries.names), values)
        for site, values in summaries.labels.items()
    }
    grid = tc.PARITY_BINS + 1
    out = {}
    for j, name in enumerate(summaries.names):
        edges: tuple[float, ...] = ()
        if summaries.task == "regression":
            parity = np.array(summaries.edges[j * grid : (j + 1) * grid])
            edges = tuple(float(e) for e in tc.label_edges(parity))
        out[name] = LabelDistribution(
            edges,
            {site: tuple(counts[j][:-1]) for site, counts in per_site.items()},
            {site: counts[j][-1] for site, counts in per_site.items()},
        )
    return out


def task_results_from_summaries(summaries: TaskSummaries) -> dict[str, TaskResult]:
    """Per task, the pooled :class:`TaskResult` of the sites that sent counts, each site's own
    metrics beside it."""
    if not summaries.sent:
        return {}
    per_site = {
        site: _counts(summaries.task, len(summaries.names), values)
        for site, (values, _) in summaries.sent.items()
    }
    grid = tc.PARITY_BINS + 1
    out = {}
    for j, name in enumerate(summaries.names):
        pooled = tc.pool(counts[j] for counts in per_site.values())
        assert pooled is not None
        edges = summaries.edges[j * grid : (j + 1) * grid] if summaries.edges else None
        result = task_results_from_counts(pooled, edges, tc.pooled_metrics(pooled))
        sites = {
            site: {
                key.split(":", 1)[1]: value
                for key, value in metrics.items()
                if key.split(":", 1)[0] == str(j)
            }
            for site, (_, metrics) in summaries.sent.items()
        }
        out[name] = TaskResult(
            result.n_test,
            result.metrics,
            result.parity,
            result.roc,
            result.pr,
            result.calibration,
            sites=sites,
            auc_tolerance=tc.auc_tolerance(pooled) if result.roc is not None else None,
        )
    return out


def task_results_from_counts(
    counts: tc.TaskCounts, edges: Sequence[float] | tc.Array | None, metrics: Mapping[str, float]
) -> TaskResult:
    """One task's :class:`TaskResult` from pooled counts and the metrics to show (NaN: none)."""
    values = {k: (float(v) if math.isfinite(v) else None) for k, v in metrics.items()}
    if counts.task == "regression":
        parity = None
        if counts.n and edges is not None:
            parity = Parity(
                tuple(float(e) for e in edges),
                tuple(tuple(int(c) for c in row) for row in counts.histogram),
            )
        return TaskResult(counts.n, values, parity=parity)
    roc, pr, table = tc.roc_points(counts), tc.pr_points(counts), tc.calibration_table(counts)
    calibration = None
    if table is not None:
        calibration = Calibration(
            tuple(float(v) for v in table[0]),
            tuple(float(v) for v in table[1]),
            tuple(int(v) for v in table[2]),
        )
    return TaskResult(
        counts.n,
        values,
        None,
        None if roc is None else _points(*roc),
        None if pr is None else _points(*pr),
        calibration,
    )


def _points(x: np.ndarray, y: np.ndarray) -> CurvePoints:
    """At most :data:`MAX_CURVE_POINTS` points, the ends kept."""
    keep = np.unique(np.linspace(0, len(x) - 1, min(len(x), MAX_CURVE_POINTS)).round().astype(int))
    return CurvePoints(tuple(float(v) for v in x[keep]), tuple(float(v) for v in y[keep]))


def summaries_to_json(summaries: TaskSummaries) -> str:
    """The store's text of ``summaries`` (read back by :func:`summaries_from_json`)."""
    return json.dumps(
        {
            "task": summaries.task,
            "names": list(summaries.names),
            "edges": list(summaries.edges),
            "sent": {s: [list(v), m] for s, (v, m) in summaries.sent.items()},
            "labels": {s: list(v) for s, v in summaries.labels.items()},
            "declined": dict(summaries.declined),
            "skipped": summaries.skipped,
        }
    )


def summaries_from_json(text: str) -> TaskSummaries:
    data = json.loads(text)
    task: Objective = "classification" if data["task"] == "classification" else "regression"
    return TaskSummaries(
        task,
        tuple(data["names"]),
        tuple(float(e) for e in data["edges"]),
        {s: (tuple(float(x) for x in v), dict(m)) for s, (v, m) in data["sent"].items()},
        {s: tuple(float(x) for x in v) for s, v in data.get("labels", {}).items()},
        dict(data["declined"]),
        data["skipped"],
    )
