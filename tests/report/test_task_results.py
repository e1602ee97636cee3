"""Per-task results: each task's own metrics and the aggregates behind the parity, ROC, PR and
calibration figures (counts and curve points, never a row's value), rendered in the report."""

from __future__ import annotations

import numpy as np
from report_samples import make_classification_summary, make_regression_summary

from fedpharma.core import serde
from fedpharma.evaluation.metrics import per_task_metrics
from fedpharma.report.html import build_report_html
from fedpharma.report.summary import parse_summary
from fedpharma.sim.task_results import task_results


def _regression():
    rng = np.random.default_rng(0)
    labels = rng.normal(6, 1, (80, 2))
    labels[::7, 1] = np.nan
    return labels, labels + rng.normal(0, [0.2, 0.8], labels.shape)


def test_each_task_keeps_its_own_metrics_and_a_parity_histogram():
    labels, predictions = _regression()
    results = task_results("regression", ["a", "b"], labels, predictions)
    expected = per_task_metrics("regression", labels, predictions)
    assert results["a"].metrics["rmse"] == expected[0]["rmse"]
    assert results["b"].metrics["rmse"] == expected[1]["rmse"] > results["a"].metrics["rmse"]
    assert results["b"].n_test == np.isfinite(labels[:, 1]).sum()
    parity = results["b"].parity
    assert parity is not None and results["b"].roc is None
    assert sum(map(sum, parity.counts)) == results["b"].n_test  # every observed row, once
    # a good model's rows sit on the diagonal band
    counts = np.array(results["a"].parity.counts)
    i, j = np.indices(counts.shape)
    assert counts[abs(i - j) <= 2].sum() / counts.sum() > 0.9


def test_classification_tasks_get_roc_pr_and_calibration_or_none_on_one_class():
    rng = np.random.default_rng(1)
    labels = (rng.random((200, 2)) < 0.3).astype(float)
    labels[:, 1] = 0.0  # one class only
    predictions = np.clip(0.3 * labels + 0.7 * rng.random(labels.shape), 0, 1)
    results = task_results("classification", ["x", "y"], labels, predictions)
    roc, calibration = results["x"].roc, results["x"].calibration
    assert roc is not None and (roc.x[0], roc.y[0], roc.x[-1], roc.y[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert len(roc.x) <= 60 and results["x"].pr is not None
    assert calibration is not None and sum(calibration.counts) == 200
    assert all(0 <= r <= 1 for r in calibration.observed)
    assert results["y"].roc is None and results["y"].metrics["roc_auc"] is None


def test_the_report_shows_per_task_metrics_and_figures():
    labels, predictions = _regression()
    data = make_regression_summary()
    results = task_results("regression", ["a", "b"], labels, predictions)
    data["tasks"] = {k: serde.to_dict(v) for k, v in results.items()}
    page = build_report_html(parse_summary(data))
    assert "Per-task metrics" in page and "Parity · a" in page and "Parity · b" in page
    rng = np.random.default_rng(2)
    labels = (rng.random((90, 1)) < 0.4).astype(float)
    results = task_results("classification", ["NR-AR"], labels, rng.random((90, 1)))
    data = make_classification_summary()
    data["tasks"] = {k: serde.to_dict(v) for k, v in results.items()}
    page = build_report_html(parse_summary(data))
    assert "ROC, precision–recall and calibration · NR-AR" in page
    assert "Per-task metrics" not in build_report_html(parse_summary(make_regression_summary()))


def test_label_distributions_are_counts_per_site_and_are_drawn():
    from fedpharma.core.dataset import Dataset, SiteData
    from fedpharma.sim.task_results import label_distributions

    def site(labels):
        labels = np.asarray(labels, dtype=np.float32)[:, None]
        n = len(labels)
        data = Dataset(
            np.zeros((n, 2), np.float32), labels, "regression", ("y",), np.zeros(n, np.int64)
        )
        return SiteData(data, data)

    sites = {"a": site([1.0, 1.1, np.nan, 2.0]), "b": site([5.0, 5.5, 6.0])}
    (distribution,) = label_distributions(sites).values()
    assert sum(distribution.counts["a"]) == 3 and distribution.missing == {"a": 1, "b": 0}
    assert distribution.counts["a"][0] == 2 and distribution.counts["b"][-1] == 1
    assert distribution.edges[0] == 1.0 and distribution.edges[-1] == 6.0
    data = make_regression_summary()
    data["label_distributions"] = {"y": serde.to_dict(distribution)}
    assert "Label distribution per site · y" in build_report_html(parse_summary(data))
