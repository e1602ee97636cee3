"""A deployed run's per-task results: pooled from the sites' counts, equal to the computation on
the pooled rows (exactly, or within the binning's stated tolerance); a reply whose size the task
fixes, whatever the rows; nothing asked, and nothing sent, under differential privacy."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fedpharma.core.config import SitePolicyConfig, config_from_dict
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    LocalTraining,
    RecordDP,
    Refusal,
    TaskSummaryResult,
    TaskSummaryTask,
    TrainSettings,
    TrainTask,
)
from fedpharma.core.protocol.codec import decode_message, encode_message
from fedpharma.core.protocol.messages import validate_reply
from fedpharma.evaluation import task_counts as tc
from fedpharma.evaluation.metrics import average_precision, per_task_metrics, roc_auc
from fedpharma.server.audit import AuditLog
from fedpharma.server.run_observers import AuditRejections
from fedpharma.server.task_summary import (
    SKIPPED_UNDER_DP,
    collect_task_summaries,
    summaries_from_json,
    summaries_to_json,
    task_results_from_summaries,
)
from fedpharma.site.policy import SitePolicy
from fedpharma.site.runtime import SiteRuntime
from fedpharma.transport.inprocess import InProcessChannel

MODEL = Parameters(("scale",), (np.ones(1, dtype=np.float32),))


class Echo:
    """Predicts each row's first feature column(s) times the model's scale: predictions the test
    knows, so the pooled computation can be done on the same rows."""

    def predict(self, params, data):
        n_tasks = len(data.task_names)
        return np.asarray(data.features, dtype=np.float32)[:, :n_tasks] * params.arrays[0][0]


def _dataset(task, labels, predictions):
    n = len(labels)
    return Dataset(
        features=predictions.astype(np.float32),
        labels=labels.astype(np.float32),
        task=task,
        task_names=tuple(f"t{j}" for j in range(labels.shape[1])),
        groups=np.arange(n),
    )


def _rows(task, n, seed):
    rng = np.random.default_rng(seed)
    if task == "classification":
        labels = (rng.random((n, 2)) < 0.35).astype(np.float64)
        scores = np.clip(0.35 * labels + 0.65 * rng.random((n, 2)), 0, 1)
    else:
        labels = rng.normal(6.0, 1.2, (n, 2))
        scores = labels + rng.normal(0, [0.3, 0.9], (n, 2))
    labels[rng.random((n, 2)) < 0.15] = np.nan  # sparse multitask labels
    return labels, scores.astype(np.float32).astype(np.float64)


def _sites(task, sizes=(30, 55, 80), policies=None):
    sites, rows = {}, {}
    for k, n in enumerate(sizes):
        name = f"site-{k + 1}"
        labels, scores = _rows(task, n, k)
        rows[name] = (labels.astype(np.float32).astype(np.float64), scores)
        data = _dataset(task, labels, scores)
        policy = (policies or {}).get(name)
        train = _dataset(task, *_rows(task, 2 * n, 100 + k))  # other rows than the test's
        sites[name] = SiteRuntime(name, SiteData(train, data), Echo(), policy=policy)
    return sites, rows


def _config(task, **privacy):
    raw = {
        "dataset": {"path": "x.csv", "label_columns": ["t0", "t1"], "task": task},
        "privacy": privacy,
    }
    return config_from_dict(raw)


def _collect(task, sites, config=None):
    channel = InProcessChannel(sites)
    config = config or _config(task)
    return collect_task_summaries(config, channel, "run", 3, MODEL, task, ("t0", "t1"))


def test_regression_results_pooled_from_counts_equal_the_pooled_rows():
    sites, rows = _sites("regression")
    summaries = summaries_from_json(summaries_to_json(_collect("regression", sites)))
    assert tuple(summaries.sent) == ("site-1", "site-2", "site-3") and not summaries.declined
    results = task_results_from_summaries(summaries)
    labels = np.concatenate([r[0] for r in rows.values()])
    scores = np.concatenate([r[1] for r in rows.values()])
    exact = per_task_metrics("regression", labels, scores)
    grid = tc.PARITY_BINS + 1
    for j, name in enumerate(("t0", "t1")):
        got = results[name]
        observed = np.isfinite(labels[:, j])
        assert got.n_test == observed.sum()
        for metric in ("rmse", "mae", "r2"):
            assert got.metrics[metric] == pytest.approx(exact[j][metric], rel=1e-9)
        assert got.metrics["spearman"] is None  # not poolable from counts
        edges = np.array(summaries.edges[j * grid : (j + 1) * grid])
        clipped = [np.clip(v[observed], edges[0], edges[-1]) for v in (labels[:, j], scores[:, j])]
        histogram, _, _ = np.histogram2d(*clipped, bins=(edges, edges))
        assert got.parity is not None
        np.testing.assert_array_equal(np.array(got.parity.counts), histogram)
        # each site's own metrics, as it computed them on its rows
        own = per_task_metrics("regression", *rows["site-2"])[j]["rmse"]
        assert got.sites["site-2"]["rmse"] == pytest.approx(own, rel=1e-6)


def test_classification_results_are_exact_or_within_the_stated_auc_tolerance():
    sites, rows = _sites("classification", sizes=(60, 90, 150))
    results = task_results_from_summaries(_collect("classification", sites))
    labels = np.concatenate([r[0] for r in rows.values()])
    scores = np.concatenate([r[1] for r in rows.values()])
    exact = per_task_metrics("classification", labels, scores)
    for j, name in enumerate(("t0", "t1")):
        got = results[name]
        observed = np.isfinite(labels[:, j])
        truth, predicted = labels[observed, j], scores[observed, j]
        for metric in ("accuracy", "sensitivity", "specificity", "brier"):
            assert got.metrics[metric] == pytest.approx(exact[j][metric], rel=1e-9)
        assert got.auc_tolerance is not None and 0 < got.auc_tolerance < 0.02
        assert abs(got.metrics["roc_auc"] - roc_auc(truth, predicted)) <= got.auc_tolerance
        assert got.metrics["pr_auc"] == pytest.approx(average_precision(truth, predicted), abs=0.02)
        assert got.calibration is not None and sum(got.calibration.counts) == observed.sum()
        # the reliability table: counts and rates exact per decile, the mean prediction within
        # half a score bin of the rows' own
        decile = tc.grid_index(predicted, tc.SCORE_EDGES) // (tc.SCORE_BINS // tc.CALIBRATION_BINS)
        filled = np.unique(decile)
        calibration = got.calibration
        assert calibration.counts == tuple(int((decile == d).sum()) for d in filled)
        np.testing.assert_allclose(
            calibration.observed, [truth[decile == d].mean() for d in filled], rtol=1e-12
        )
        np.testing.assert_allclose(
            calibration.predicted, [predicted[decile == d].mean() for d in filled], atol=0.005
        )
        assert got.roc is not None and (got.roc.x[0], got.roc.y[-1]) == (0.0, 1.0)


def test_the_reply_size_is_fixed_by_the_task_not_by_the_rows():
    small, _ = _sites("regression", sizes=(20,))
    large, large_rows = _sites("regression", sizes=(4000,))
    task = TaskSummaryTask(
        "run", 3, MODEL, 2, tc.width("regression"), tuple(tc.parity_edges(6.0, 1.2)) * 2
    )
    replies = [s["site-1"].handle(task) for s in (small, large)]
    assert all(isinstance(r, TaskSummaryResult) for r in replies)
    sizes = [len(encode_message(r)) for r in replies]
    assert len(replies[0].values) == len(replies[1].values) == 2 * tc.width("regression")
    assert sizes[1] < 1.2 * sizes[0]  # 200 times the rows, the same message
    labels, scores = large_rows["site-1"]
    row_values = set(labels[np.isfinite(labels)].tolist()) | set(scores.ravel().tolist())
    sent = set(replies[1].values) | set(replies[1].metrics.values())
    assert not (sent & row_values)  # no row's label or prediction among the numbers sent


def test_a_site_refuses_a_summary_shaped_other_than_its_data_and_a_longer_reply_is_rejected():
    sites, _ = _sites("regression", sizes=(40,))
    site = sites["site-1"]
    edges = tuple(tc.parity_edges(6.0, 1.2)) * 2
    # a coordinator asking for one number per row (40) instead of the fixed width
    greedy = TaskSummaryTask("run", 3, MODEL, 2, 40, edges)
    reply = site.handle(greedy)
    assert (
        isinstance(reply, Refusal) and "this site's regression data has 2 task(s)" in reply.reason
    )
    honest = TaskSummaryTask("run", 3, MODEL, 2, tc.width("regression"), edges)
    good = site.handle(honest)
    assert isinstance(good, TaskSummaryResult)
    padded = TaskSummaryResult("run", 3, "site-1", (*good.values, 6.1), good.metrics)
    with pytest.raises(ProtocolError, match="holds"):
        validate_reply(honest, "site-1", padded)
    unasked = dataclasses.replace(good, label_counts=(6.1,))  # counts the task did not ask for
    with pytest.raises(ProtocolError, match="holds"):
        validate_reply(honest, "site-1", unasked)
    assert decode_message(encode_message(honest)) == honest


def test_under_dp_the_coordinator_asks_nothing_and_says_why():
    sites, _ = _sites("regression")
    asked = []

    class Watching(InProcessChannel):
        def exchange(self, tasks, timeout=None):
            asked.extend(type(t).__name__ for t in tasks.values())
            return super().exchange(tasks, timeout)

    config = _config("regression", record_level=True, target_epsilon=3.0)
    summaries = collect_task_summaries(
        config, Watching(sites), "run", 3, MODEL, "regression", ("t0", "t1")
    )
    assert summaries.skipped == SKIPPED_UNDER_DP and not summaries.sent
    assert asked == []  # not even the label statistics for the grid
    assert task_results_from_summaries(summaries) == {}


def test_a_site_asked_for_dp_in_a_run_sends_no_counts_in_it():
    sites, _ = _sites("regression", sizes=(40,))
    site = sites["site-1"]
    dp = RecordDP(max_grad_norm=1.0, delta=1e-5, planned_rounds=3, noise_multiplier=1.0)
    train = TrainTask("run", 1, MODEL, TrainSettings(LocalTraining(1, 0), record_dp=dp))
    assert isinstance(site.handle(train), Refusal)  # no policy: it accounts for nothing
    task = TaskSummaryTask(
        "run", 3, MODEL, 2, tc.width("regression"), tuple(tc.parity_edges(6.0, 1.2)) * 2
    )
    reply = site.handle(task)
    assert isinstance(reply, Refusal) and "differential privacy" in reply.reason
    # another run, with no DP asked, gets its counts
    other = TaskSummaryTask("other", 3, MODEL, 2, task.width, task.edges)
    assert isinstance(site.handle(other), TaskSummaryResult)


def test_a_site_whose_policy_declines_is_named_and_left_out(tmp_path):
    declines = SitePolicy(SitePolicyConfig(allow_task_summary=False), tmp_path / "ledger.sqlite")
    sites, _ = _sites("classification", policies={"site-2": declines})
    summaries = _collect("classification", sites)
    assert tuple(summaries.sent) == ("site-1", "site-3")
    assert "declines per-task summaries" in summaries.declined["site-2"]
    results = task_results_from_summaries(summaries)
    assert set(results["t0"].sites) == {"site-1", "site-3"}


def test_a_dp_runs_report_says_why_it_has_no_per_task_results(tmp_path):
    from fedpharma.report.html import build_report_html
    from fedpharma.server.run_summary import summary_from_store
    from fedpharma.server.store import RunStore

    config = _config("regression", record_level=True, target_epsilon=3.0)
    store = RunStore.create(tmp_path / "run.sqlite", "run", config.to_dict())
    sites, _ = _sites("regression")
    summaries = collect_task_summaries(
        config, InProcessChannel(sites), "run", 3, MODEL, "regression", ("t0", "t1")
    )
    store.record_task_summaries(3, summaries_to_json(summaries))
    store.close()
    summary = summary_from_store(tmp_path)
    assert summary.tasks == {} and summary.task_summary is not None
    assert summary.task_summary.skipped == SKIPPED_UNDER_DP
    assert "No per-task results: not asked: under differential privacy" in build_report_html(
        summary
    )


def test_counts_no_honest_site_sends_are_rejected_and_the_site_named():
    sites, _ = _sites("classification")

    class Inflating(SiteRuntime):
        """Claims 10⁶ rows more than its bins hold, to outweigh the other sites."""

        def handle(self, task):
            reply = super().handle(task)
            if isinstance(reply, TaskSummaryResult):
                values = list(reply.values)
                values[0] += 1e6
                return dataclasses.replace(reply, values=tuple(values))
            return reply

    honest = sites["site-3"]
    sites["site-3"] = Inflating("site-3", honest.data, honest.trainer)
    summaries = _collect("classification", sites)
    assert tuple(summaries.sent) == ("site-1", "site-2")
    assert "do not add up" in summaries.declined["site-3"]


def test_rejected_summaries_are_audited_like_other_rejections(tmp_path):
    """Counts that cannot be (inflated) and a reply of the wrong size both land in audit.jsonl
    as ``result_rejected``, naming the site."""
    sites, _ = _sites("classification", sizes=(30, 55, 80, 40))

    class Inflating(SiteRuntime):
        def handle(self, task):
            reply = super().handle(task)
            if isinstance(reply, TaskSummaryResult):
                return dataclasses.replace(reply, values=(reply.values[0] + 1e6, *reply.values[1:]))
            return reply

    class Longer(SiteRuntime):
        def handle(self, task):
            reply = super().handle(task)
            if isinstance(reply, TaskSummaryResult):
                return dataclasses.replace(reply, values=(*reply.values, 0.0))
            return reply

    for name, kind in (("site-3", Inflating), ("site-4", Longer)):
        sites[name] = kind(name, sites[name].data, sites[name].trainer)
    audit = AuditLog(tmp_path / "audit.jsonl")
    summaries = collect_task_summaries(
        _config("classification"),
        InProcessChannel(sites),
        "run",
        3,
        MODEL,
        "classification",
        ("t0", "t1"),
        on_rejected=AuditRejections(audit),
    )
    audit.close()
    assert tuple(summaries.sent) == ("site-1", "site-2")
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    rejected = {e["site"]: e["reason"] for e in entries if e["kind"] == "result_rejected"}
    assert set(rejected) == {"site-3", "site-4"}
    assert "task summary" in rejected["site-3"] and "do not add up" in rejected["site-3"]
    assert "task summary from 'site-4' holds" in rejected["site-4"]


def test_each_sites_training_label_counts_come_with_its_summary():
    from fedpharma.server.task_summary import label_distributions_from_summaries

    sites, _ = _sites("regression")
    summaries = summaries_from_json(summaries_to_json(_collect("regression", sites)))
    distributions = label_distributions_from_summaries(summaries)
    for j, name in enumerate(("t0", "t1")):
        got = distributions[name]
        edges = np.array(got.edges)
        assert len(edges) == tc.LABEL_BINS + 1
        for site, runtime in sites.items():
            column = runtime.data.train.dense_labels()[:, j].astype(np.float64)
            observed = column[np.isfinite(column)]
            clipped = np.clip(observed, edges[0], edges[-1])
            assert got.counts[site] == tuple(np.histogram(clipped, bins=edges)[0])
            assert got.missing[site] == column.size - observed.size
    sites, _ = _sites("classification")
    classes = label_distributions_from_summaries(_collect("classification", sites))["t1"]
    column = sites["site-2"].data.train.dense_labels()[:, 1]
    assert classes.edges == ()
    assert classes.counts["site-2"] == ((column == 0).sum(), (column == 1).sum())
