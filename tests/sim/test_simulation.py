"""A full federated simulation on bundled data (ChEMBL2321810 series shipped with RDKit)."""

import dataclasses
import json
import sqlite3

import numpy as np
import pytest

from fedpharma.cli.main import DEMO_CONFIG
from fedpharma.report.summary import Metric
from fedpharma.sim.engine import prepare_sites, simulate

CONFIG = dataclasses.replace(DEMO_CONFIG, rounds=12)


@pytest.fixture(scope="module")
def prepared():
    return prepare_sites(CONFIG)


@pytest.fixture(scope="module")
def result(prepared, tmp_path_factory):
    return simulate(CONFIG, tmp_path_factory.mktemp("run"), prepared=prepared)


def test_sites_hold_disjoint_scaffolds_and_disjoint_test_sets(prepared):
    seen_groups = [set(d.train.groups) | set(d.test.groups) for d in prepared.sites.values()]
    for i, a in enumerate(seen_groups):
        for b in seen_groups[i + 1 :]:
            assert not a & b, "a scaffold sits at two partners"
    for data in prepared.sites.values():
        assert not set(data.train.groups) & set(data.test.groups)


def test_federated_model_beats_the_mean_local_only_model(result):
    sites = result.summary.sites.values()
    mean_local = np.mean([s.local for s in sites])
    mean_federated = np.mean([s.federated for s in sites])
    assert result.summary.metric == Metric(name="rmse", higher_is_better=False)
    assert mean_federated < mean_local


def test_summary_json_holds_three_models_per_partner_and_pooled(result):
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert set(summary["sites"]) == {"site-1", "site-2", "site-3", "site-4"}
    for entry in [*summary["sites"].values(), summary["pooled"]]:
        for model in ("local", "federated", "centralized"):
            assert isinstance(entry[model], float)
            assert entry["metrics"][model]["rmse"] == pytest.approx(entry[model])
    assert summary["config"]["rounds"] == 12
    assert summary["curves"]["round"] == list(range(1, 13))


def test_run_store_holds_rounds_metrics_and_a_verified_checkpoint(result):
    from fedpharma.server.store import RunStore

    db = sqlite3.connect(result.run_dir / "run.sqlite")
    assert db.execute("SELECT count(*) FROM rounds").fetchone() == (12,)
    sites = db.execute("SELECT count(DISTINCT site) FROM site_metrics").fetchone()
    assert sites == (4,)
    models = {m for (m,) in db.execute("SELECT DISTINCT model FROM comparison")}
    # The demo's sites allow cross evaluation: each local-only model is scored elsewhere too.
    cross = {f"local:site-{i}" for i in range(1, 5)}
    assert models == {"local", "federated", "centralized"} | cross
    rnd, params = RunStore(result.run_dir / "run.sqlite").latest_checkpoint()
    assert rnd == 12
    np.testing.assert_allclose(params.flatten(), result.parameters.flatten())


def test_same_seed_gives_the_same_federated_model(prepared, result, tmp_path):
    config = dataclasses.replace(CONFIG, baselines=False)
    again = simulate(config, tmp_path, prepared=prepared)
    np.testing.assert_array_equal(again.parameters.flatten(), result.parameters.flatten())


def test_the_summary_holds_the_overlap_counts_and_the_headline_intervals(result):
    overlap = result.summary.chemical_overlap
    assert set(overlap) == set(result.summary.sites)
    # the sites hold disjoint scaffolds (a scaffold partition): only a hash collision shares one
    assert all(o.scaffolds > 0 and o.scaffolds_shared <= 2 for o in overlap.values())
    assert all(0 < o.bits_shared <= o.bits for o in overlap.values())
    # the config dump shows what applies: no feature-sum noise, no class weights here
    shown = result.summary.config
    assert "statistics_noise_multiplier" not in shown["privacy"]
    assert "class_weight" not in shown["training"]
    assert set(result.summary.intervals) == {
        "federated-local",
        "federated-centralized",
        "centralized-local",
    }
