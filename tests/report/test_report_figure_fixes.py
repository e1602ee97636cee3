"""The report's figure fixes: no empty loss panel under DP (and why), no baseline title without
baselines, no gain share over 100 %, identical ε lines drawn once, time and participation."""

from __future__ import annotations

from report_samples import make_no_baselines_summary, make_privacy_summary, make_regression_summary

from fedpharma.report.html import build_report_html, verdict_sentence
from fedpharma.report.plots import identical_epsilon_groups
from fedpharma.report.summary import parse_summary


def test_no_training_loss_panel_under_dp_but_a_sentence_saying_why():
    data = make_privacy_summary()
    data["curves"]["train_loss"] = [None] * len(data["curves"]["round"])
    page = build_report_html(parse_summary(data))
    assert "No training-loss curve: under differential privacy" in page
    assert 'alt="training loss per round"' not in page
    with_loss = build_report_html(parse_summary(make_privacy_summary()))
    assert 'alt="training loss per round"' in with_loss


def test_bar_chart_is_not_titled_after_baselines_that_were_not_run():
    page = build_report_html(parse_summary(make_no_baselines_summary()))
    assert "Local-only vs federated vs centralized" not in page
    assert "Federated model per partner" in page
    assert "Local-only vs federated vs centralized" in build_report_html(
        parse_summary(make_regression_summary())
    )


def test_a_federated_model_better_than_centralized_is_not_a_gain_share_over_100_percent():
    data = make_regression_summary()
    data["pooled"]["federated"] = 0.60  # local 0.83, centralized 0.63: "139 %" before
    verdict = verdict_sentence(parse_summary(data))
    assert verdict is not None and "%" not in verdict
    assert "even the centralized model" in verdict
    data["pooled"]["federated"] = 0.70
    assert "65%" in (verdict_sentence(parse_summary(data)) or "")


def test_sites_with_identical_epsilon_share_one_line():
    data = make_privacy_summary()
    data["privacy"]["epsilon"]["site-3"] = {"record": [2.19, 2.77, 3.23]}  # = site-1
    groups = identical_epsilon_groups(parse_summary(data).privacy)
    sites = sorted(sites for _, sites, _ in groups)
    assert sites == [("site-1", "site-3"), ("site-2",), ("site-4",)]


def test_time_and_participation_per_round_is_drawn_when_recorded():
    data = make_regression_summary()
    assert "Time and participation per round" not in build_report_html(parse_summary(data))
    data["activity"] = {
        "round": [1, 2, 3],
        "seconds": [1.5, 1.2, 1.3],
        "participants": [4, 3, 4],
        "planned_sites": 4,
    }
    assert "Time and participation per round" in build_report_html(parse_summary(data))
    data["activity"]["seconds"] = [1.0]
    try:
        parse_summary(data)
    except Exception as exc:
        assert "[activity] seconds has 1 values" in str(exc)
    else:
        raise AssertionError("a short series must be refused")
