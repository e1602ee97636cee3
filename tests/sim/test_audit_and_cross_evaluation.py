"""The simulation's privacy audit (membership inference on the final model and on each site's
raw update) and its cross-site evaluation matrix, on a small tabular run with site-level DP."""

import dataclasses
import json
import math
import sqlite3

import numpy as np
import pytest

from fedpharma.core.config import (
    DatasetConfig,
    ModelConfig,
    PartitionConfig,
    PrivacyConfig,
    RunConfig,
    SecureConfig,
    SitePolicyConfig,
    TrainingConfig,
    load_site_policy,
)
from fedpharma.core.protocol import Refusal, TrainTask
from fedpharma.models.factory import build_trainer
from fedpharma.server.plan import build_federation
from fedpharma.sim.audit import next_round_updates
from fedpharma.sim.engine import build_site_runtimes, prepare_sites, simulate, site_trainers
from fedpharma.site.policy import SitePolicy

CLIP = 0.05
CONFIG = RunConfig(
    dataset=DatasetConfig(name="breast-cancer", kind="tabular"),
    partition=PartitionConfig(method="dirichlet", n_sites=3, alpha=5.0),
    model=ModelConfig(kind="mlp", hidden=(16,), dropout=0.0),
    training=TrainingConfig(local_epochs=2, learning_rate=0.01),
    privacy=PrivacyConfig(site_level=True, site_noise_multiplier=0.3, clip_norm=CLIP),
    site_policy=SitePolicyConfig(site_epsilon=1000.0, allow_cross_evaluation=True),
    rounds=2,
)
SITES = ("site-1", "site-2", "site-3")


@pytest.fixture(scope="module")
def prepared():
    return prepare_sites(CONFIG)


@pytest.fixture(scope="module")
def result(prepared, tmp_path_factory):
    return simulate(CONFIG, tmp_path_factory.mktemp("audit"), prepared=prepared)


def test_every_site_is_audited_on_the_final_model_and_its_raw_update(result):
    audit = json.loads((result.run_dir / "summary.json").read_text())["privacy_audit"]

    assert audit["secure_aggregation"] == "none"
    assert set(audit["sites"]) == set(SITES)
    for site, by in audit["sites"].items():
        assert by["nonmember_shift"] is False, site  # tabular rows: a random held-out split
        for target in ("final_model", "site_update"):
            for attack in ("loss_threshold", "calibrated"):
                scores = by[target][attack]
                assert 0.0 <= scores["auc"] <= 1.0, (site, target, attack)
                assert 0.0 <= scores["advantage"] <= 1.0, (site, target, attack)
                assert scores["n_members"] == scores["n_nonmembers"] > 0


def test_the_audit_round_charges_no_real_ledger(result):
    for site in SITES:
        site_dir = result.run_dir / "sites" / site
        policy = SitePolicy(load_site_policy(site_dir / "policy.toml"), site_dir / "privacy.sqlite")
        assert [entry.round for entry in policy.ledger.entries()] == [1, 2], site


def test_matrix_rows_are_the_federated_and_each_local_model(result):
    summary = result.summary
    matrix = summary.cross_evaluation

    assert matrix.test_sites == SITES
    assert matrix.allowed == dict.fromkeys(SITES, True)
    rows = matrix.rows
    assert [(r.model, r.trained_at) for r in rows] == [
        ("federated", None),
        *[("local", site) for site in SITES],
    ]
    for row in rows:
        assert set(row.scores) == set(SITES)
    for site in SITES:
        # The diagonal and the federated row are the comparison already computed.
        assert rows[0].scores[site] == pytest.approx(summary.sites[site].federated)
        local_row = next(r for r in rows if r.trained_at == site)
        assert local_row.scores[site] == pytest.approx(summary.sites[site].local)


def test_off_diagonal_cells_go_to_the_run_store(result):
    db = sqlite3.connect(result.run_dir / "run.sqlite")
    cells = set(
        db.execute(
            "SELECT model, site FROM comparison WHERE model LIKE 'local:%' AND name = 'roc_auc'"
        )
    )
    assert cells == {(f"local:{a}", b) for a in SITES for b in SITES if a != b}
    for model, site in cells:
        row = next(r for r in result.summary.cross_evaluation.rows if r.trained_at == model[6:])
        (value,) = db.execute(
            "SELECT value FROM comparison WHERE model = ? AND site = ? AND name = 'roc_auc'",
            (model, site),
        ).fetchone()
        assert value == pytest.approx(row.scores[site])


def test_switched_off_audit_and_no_baselines(prepared, tmp_path):
    config = dataclasses.replace(CONFIG, rounds=1, baselines=False, privacy_audit=False)

    summary = simulate(config, tmp_path, prepared=prepared).summary

    assert summary.privacy_audit is None
    assert [row.model for row in summary.cross_evaluation.rows] == ["federated"]


def _updates(prepared, config):
    trainer = build_trainer(config, prepared.dataset)
    trainers = site_trainers(config, prepared, trainer)
    federation = build_federation(config, planned_sites=3, noise_rng=np.random.default_rng(0))
    return next_round_updates(
        config,
        federation,
        lambda recipe, folder: build_site_runtimes(recipe, prepared, trainers, folder),
        run_id="audit-test",
        start=trainer.initial_parameters(0),
    )


def test_the_raw_update_is_what_the_site_sends_clipped_under_site_level_dp(prepared):
    updates = _updates(prepared, CONFIG)

    assert set(updates) == set(SITES)
    for site, update in updates.items():
        assert not isinstance(update, str), update
        assert 0 < np.linalg.norm(update.flatten()) <= CLIP * (1 + 1e-6), site


def test_the_raw_update_is_computed_even_where_the_policy_requires_secure_aggregation(
    prepared, tmp_path
):
    config = dataclasses.replace(
        CONFIG,
        privacy=PrivacyConfig(),
        secure=SecureConfig(mode="secagg"),
        site_policy=SitePolicyConfig(require_secure=True),
    )
    trainer = build_trainer(config, prepared.dataset)
    real = build_site_runtimes(config, prepared, site_trainers(config, prepared, trainer), tmp_path)
    plaintext = TrainTask("audit-test", 1, trainer.initial_parameters(0))
    assert isinstance(real["site-1"].handle(plaintext), Refusal)  # the real site would not send it

    updates = _updates(prepared, config)

    assert all(
        not isinstance(u, str) and math.isfinite(u.flatten().sum()) for u in updates.values()
    )
