"""Record-level DP end to end: calibrated to a target ε, charged per round, shown per site."""

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from fedpharma.cli.main import DEMO_CONFIG, app
from fedpharma.core.config import PrivacyConfig, SitePolicyConfig
from fedpharma.report.html import render_report
from fedpharma.sim.engine import simulate


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    config = dataclasses.replace(
        DEMO_CONFIG,
        rounds=2,
        baselines=False,
        privacy=PrivacyConfig(record_level=True, target_epsilon=4.0),
        site_policy=SitePolicyConfig(record_epsilon=5.0),
    )
    return simulate(config, tmp_path_factory.mktemp("dp"))


def test_planned_rounds_spend_the_target_epsilon_and_no_more(dp_run):
    privacy = dp_run.summary.privacy
    assert privacy.accountant == "rdp (improved conversion)"
    for site, series in privacy.epsilon.items():
        record = series["record"]
        assert len(record) == 2 and record[0] < record[1], site
        assert record[1] == pytest.approx(4.0, rel=0.01)
        assert record[1] <= 4.0 + 1e-9


def test_privacy_command_prints_every_charge(dp_run):
    site_dir = dp_run.run_dir / "sites" / "site-1"
    result = CliRunner().invoke(app, ["privacy", str(site_dir)])
    assert result.exit_code == 0, result.output
    assert "record-level budget ε = 5" in result.output
    assert result.output.count("poisson_sampled") == 2
    assert "RDP accountant" in result.output


def test_summary_json_carries_the_privacy_section(dp_run):
    summary = json.loads((dp_run.run_dir / "summary.json").read_text())
    assert set(summary["privacy"]["final"]) == {"site-1", "site-2", "site-3", "site-4"}


def test_sites_requiring_dp_refuse_evaluation_once_and_the_run_reports_without_it(tmp_path):
    config = dataclasses.replace(
        DEMO_CONFIG,
        rounds=2,
        baselines=False,
        privacy=PrivacyConfig(record_level=True, noise_multiplier=1.0),
        site_policy=SitePolicyConfig(record_epsilon=50.0, require_dp=True),
    )
    result = simulate(config, tmp_path)
    privacy = result.summary.privacy
    assert privacy is not None
    sites = {"site-1", "site-2", "site-3", "site-4"}
    assert {r.site for r in privacy.refusals} == sites and len(privacy.refusals) == len(sites)
    assert all(r.round == 1 and "evaluation metrics" in r.reason for r in privacy.refusals)
    assert set(privacy.final) == sites  # every site trained, and charged
    assert result.summary.curves.sites == {}
    report = render_report(result.run_dir).read_text(encoding="utf-8")
    assert "evaluation metrics on its test labels" in report
