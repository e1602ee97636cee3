"""The report's words follow the bootstrap intervals (no "worse" inside the noise), small test
sets and small audits get caveats, and the intervals come from resampling each site's rows."""

from __future__ import annotations

import numpy as np
import pytest
from report_samples import make_audit_summary, make_classification_summary, make_regression_summary

from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.evaluation.bootstrap import headline_metric, site_weighted_differences
from fedpharma.evaluation.metrics import compute_metrics
from fedpharma.report.comparison import audit_caveats, chance_auc_std
from fedpharma.report.html import build_report_html, verdict_sentence
from fedpharma.report.summary import parse_summary
from fedpharma.sim.intervals import headline_intervals


def _with_intervals(data: dict, **intervals: tuple[float, float]) -> dict:
    data["intervals"] = {
        key.replace("_", "-"): {"low": low, "high": high, "resamples": 200}
        for key, (low, high) in intervals.items()
    }
    return data


def test_a_gap_inside_the_interval_is_not_called_worse() -> None:
    data = make_classification_summary()
    data["pooled"]["federated"] = 0.712  # 0.008 below local-only, as in the issue
    summary = parse_summary(_with_intervals(data, federated_local=(-0.041, 0.022)))
    verdict = verdict_sentence(summary)
    assert verdict is not None and "worse" not in verdict
    assert "within the noise of these test sets" in verdict
    assert "−0.041 to +0.022" in verdict and "200 resamples" in verdict


def test_a_gap_outside_the_interval_is_called_by_its_name_in_the_metrics_direction() -> None:
    data = make_classification_summary()
    data["pooled"]["federated"] = 0.6
    worse = verdict_sentence(parse_summary(_with_intervals(data, federated_local=(-0.2, -0.05))))
    assert worse is not None and worse.startswith("The federated model does worse than")
    # RMSE: lower is better, so a negative difference is a win
    data = _with_intervals(
        make_regression_summary(),
        federated_local=(-0.22, -0.1),
        federated_centralized=(-0.01, 0.09),
    )
    verdict = verdict_sentence(parse_summary(data))
    assert verdict is not None
    assert verdict.startswith("The federated model beats training on each site alone")
    assert (
        "and the centralized model (one model on every site's training rows pooled) score "
        "within the noise" in verdict
    )


def test_small_test_sets_and_small_audits_carry_a_caveat() -> None:
    data = make_regression_summary()
    data["sites"]["site-2"]["n_test"] = 12
    page = build_report_html(parse_summary(data))
    assert page.count("only 12 test rows") == 1 and "only 50 test rows" not in page

    audit = parse_summary(make_audit_summary()).privacy_audit
    assert audit is not None
    notes = audit_caveats(audit)
    assert len(notes) == 1 and "Few records attacked at site-1" in notes[0]


def test_the_chance_auc_spread_is_what_an_attack_that_learns_nothing_shows() -> None:
    rng = np.random.default_rng(0)
    members, nonmembers = 15, 25
    truth = np.r_[np.ones(members), np.zeros(nonmembers)]
    aucs = [
        headline_metric("classification", truth[:, None], rng.random((40, 1))) for _ in range(4000)
    ]
    assert np.std(aucs) == pytest.approx(chance_auc_std(members, nonmembers), rel=0.06)


def test_the_headline_metric_and_its_site_stratified_bootstrap() -> None:
    rng = np.random.default_rng(1)
    truth = (rng.random((80, 2)) < 0.4).astype(float)
    truth[::7, 1] = np.nan
    scores = rng.random((80, 2))
    assert headline_metric("classification", truth, scores) == pytest.approx(
        compute_metrics("classification", truth, scores)["roc_auc"]
    )
    values = rng.normal(size=(80, 1))
    assert headline_metric("regression", values, values + 0.5) == pytest.approx(0.5)
    labels = {"a": values[:50], "b": values[50:]}
    good = {"a": values[:50] + 0.1, "b": values[50:] + 0.1}
    bad = {"a": values[:50] + rng.normal(0, 1, (50, 1)), "b": values[50:] + 1.0}
    same = site_weighted_differences("regression", labels, good, good, rng, 50)
    assert np.all(same == 0)
    better = site_weighted_differences("regression", labels, good, bad, rng, 200)
    assert np.percentile(better, 97.5) < 0  # good's RMSE is lower on every resample


def _site(rng: np.random.Generator, n: int) -> SiteData:
    test = Dataset(
        features=np.zeros((n, 1), dtype=np.float32),
        labels=(rng.random((n, 1)) < 0.5).astype(np.float32),
        task="classification",
        task_names=("y",),
        groups=np.zeros(n, dtype=np.int64),
    )
    return SiteData(test, test)


def test_a_simulation_gets_an_interval_for_every_comparison_it_ran() -> None:
    rng = np.random.default_rng(2)
    sites = {"a": _site(rng, 60), "b": _site(rng, 20)}
    labels = {n: s.test.dense_labels().astype(np.float64) for n, s in sites.items()}
    predictions = {
        "federated": {n: 0.7 * y + 0.3 * rng.random(y.shape) for n, y in labels.items()},
        "local": {n: rng.random(y.shape) for n, y in labels.items()},
    }
    intervals = headline_intervals(predictions, sites, seed=0)
    assert set(intervals) == {"federated-local"}  # no centralized model was run
    assert 0 < intervals["federated-local"].low < intervals["federated-local"].high


def test_the_report_shows_the_overlap_as_counts() -> None:
    data = make_regression_summary()
    data["chemical_overlap"] = {
        "site-1": {"scaffolds": 120, "scaffolds_shared": 30, "bits": 900, "bits_shared": 850},
        "site-2": {"scaffolds": 0, "scaffolds_shared": 0, "bits": 0, "bits_shared": 0},
    }
    page = build_report_html(parse_summary(data))
    assert "Chemical-space overlap" in page and "120 (25% shared)" in page
    assert "900 (94% shared)" in page
    assert "Chemical-space overlap" not in build_report_html(
        parse_summary(make_regression_summary())
    )


def test_a_deployed_reports_overlap_shows_set_sizes_and_how_many_sites_hold_each_bucket() -> None:
    data = make_regression_summary()
    data["consortium_overlap"] = {
        "buckets": 65536,
        "sites": {
            "site-1": {"scaffolds": 1200, "bits": 250},
            "site-2": {"scaffolds": 7, "bits": 3},
        },
        "contributors": ["site-1", "site-2", "site-3"],
        "scaffolds_held_by": [1100, 50, 2],
        "bits_held_by": [10, 20, 230],
        "declined": {"site-4": "refused: this site holds no chemical-overlap key"},
    }
    summary = parse_summary(data)
    assert summary.consortium_overlap is not None
    assert summary.consortium_overlap.scaffolds_held_by == (1100, 50, 2)
    page = build_report_html(summary)
    assert (
        "Held by exactly" in page and '<th scope="row">3 sites</th><td>2</td><td>230</td>' in page
    )
    assert '<th scope="row">site-1</th><td>1,200</td><td>250</td>' in page
    assert "Summed securely over site-1, site-2, site-3, in 65,536 scaffold buckets" in page
    assert "site-4 took no part (refused: this site holds no chemical-overlap key)." in page


def test_a_deployed_report_says_why_the_overlap_is_missing() -> None:
    data = make_regression_summary()
    data["consortium_overlap"] = {"missing": "not asked: needs [secure] in the run config"}
    page = build_report_html(parse_summary(data))
    assert "No consortium counts: not asked: needs [secure] in the run config." in page
    assert "Held by exactly" not in page
    # a summary.json written before the field existed reads as having none
    assert parse_summary(make_regression_summary()).consortium_overlap is None
