"""A clinical CSV with a site column, end to end: the data's site names, a declared missing code,
the federated fit written with its digest, no n_sites needed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from fedpharma.core.config import (
    DatasetConfig,
    ModelConfig,
    PartitionConfig,
    PrivacyConfig,
    RunConfig,
    SimulationConfig,
    SitePolicyConfig,
    TrainingConfig,
)
from fedpharma.privacy import Budget, PrivacyLedger, make_accountant
from fedpharma.server.feature_statistics import PREPROCESSING_FILE
from fedpharma.sim.engine import simulate


def _write_trial(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = ["record,lactate,age,hospital,died"]
    for i in range(240):
        hospital = ["st-mary", "royal", "tiny"][0 if i < 140 else 1 if i < 220 else 2]
        died = int(rng.random() < 0.3)
        lactate = f"{rng.normal(2.0 + 2.5 * died, 0.8):.2f}" if hospital != "royal" else "0"
        lines.append(f"{i},{lactate},{rng.integers(30, 90)},{hospital},{died}")
    data = folder / "trial.csv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "trial.schema.toml").write_text(
        '[[columns]]\nname = "record"\nrole = "drop"\n\n'
        '[[columns]]\nname = "lactate"\ntype = "float"\nunits = "mmol/L"\nmissing = ["0"]\n'
        'impute = "mean"\n\n[[columns]]\nname = "age"\ntype = "int"\n\n'
        '[[columns]]\nname = "hospital"\ntype = "category"\nrole = "site"\n'
        'categories = ["royal", "st-mary", "tiny"]\n\n'
        '[[columns]]\nname = "died"\ntype = "int"\nrole = "label"\n',
        encoding="utf-8",
    )
    return data


def test_a_clinical_csv_keeps_its_site_names_and_is_fitted_federatedly(tmp_path: Path) -> None:
    data = _write_trial(tmp_path)
    config = RunConfig(
        dataset=DatasetConfig(
            path=str(data), kind="tabular", label_columns=("died",), task="classification"
        ),
        partition=PartitionConfig(method="natural"),
        model=ModelConfig(kind="linear"),
        training=TrainingConfig(learning_rate=0.05),
        rounds=3,
        baselines=False,
        privacy_audit=False,
    )
    messages: list[str] = []
    result = simulate(config, tmp_path / "run", on_status=messages.append)
    assert set(result.summary.sites) == {"royal", "st-mary", "tiny"}
    assert any("3 sites' summed statistics" in m for m in messages)
    fit = json.loads((tmp_path / "run" / PREPROCESSING_FILE).read_text())
    assert fit["indicator_names"] == ["missing(lactate)"]  # royal's zeros are missing, not 0
    assert len(fit["digest"]) == 64
    # the report's config shows what applies: no chemistry settings for a tabular run
    assert "features" not in result.summary.config and "data_checks" in result.summary.config
    shown = result.summary.config
    assert "statistics_noise_multiplier" in shown["privacy"]  # type: ignore[index]
    assert "class_weight" in shown["training"]  # type: ignore[index]
    # the tiny site (20 rows) still holds out a test set
    assert result.summary.sites["tiny"].n_test >= 2


def test_under_a_dp_policy_the_feature_sums_are_noised_and_charged_to_each_site(
    tmp_path: Path,
) -> None:
    data = _write_trial(tmp_path)
    schema = tmp_path / "trial.schema.toml"
    schema.write_text(
        schema.read_text()
        .replace('units = "mmol/L"\n', 'units = "mmol/L"\nmin = 0.1\nmax = 20.0\n')
        .replace(
            'name = "age"\ntype = "int"\n', 'name = "age"\ntype = "int"\nmin = 18\nmax = 100\n'
        ),
        encoding="utf-8",
    )
    config = RunConfig(
        dataset=DatasetConfig(
            path=str(data), kind="tabular", label_columns=("died",), task="classification"
        ),
        partition=PartitionConfig(method="natural"),
        model=ModelConfig(kind="linear"),
        training=TrainingConfig(learning_rate=0.05),
        privacy=PrivacyConfig(
            record_level=True, noise_multiplier=1.0, statistics_noise_multiplier=3.0
        ),
        site_policy=SitePolicyConfig(require_dp=True, record_epsilon=20.0),
        rounds=1,
        baselines=False,
        privacy_audit=False,
    )
    messages: list[str] = []
    simulate(config, tmp_path / "run", on_status=messages.append)
    assert any("3 sites' summed statistics under DP (σ = 3, charged)" in m for m in messages)
    fit = json.loads((tmp_path / "run" / PREPROCESSING_FILE).read_text())
    assert fit["source"] == "federated DP sums"
    for site in ("royal", "st-mary", "tiny"):
        ledger = PrivacyLedger(
            tmp_path / "run" / "sites" / site / "privacy.sqlite",
            {"record": Budget(20.0, 1e-5)},
            make_accountant("rdp"),
        )
        events = [type(e.event).__name__ for e in ledger.entries("record")]
        assert events[0] == "GaussianEvent" and len(events) >= 2  # the sums, then training


def test_worker_processes_train_the_tabular_sites_on_the_drivers_fit(tmp_path: Path) -> None:
    """On the process pool each worker loads its own rows and applies the fit the driver made
    (weakened: a worker that used its raw rows would train another model, or fail on width)."""
    import torch

    data = _write_trial(tmp_path)
    config = RunConfig(
        dataset=DatasetConfig(
            path=str(data), kind="tabular", label_columns=("died",), task="classification"
        ),
        partition=PartitionConfig(method="natural"),
        model=ModelConfig(kind="linear"),
        rounds=2,
        baselines=False,
        privacy_audit=False,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker trains: the same float sums
    try:
        sequential = simulate(config, tmp_path / "seq").parameters
    finally:
        torch.set_num_threads(threads)
    pooled_config = dataclasses.replace(
        config, simulation=SimulationConfig(backend="processes", workers=2)
    )
    pooled = simulate(pooled_config, tmp_path / "pool").parameters
    np.testing.assert_array_equal(pooled.flatten(), sequential.flatten())
