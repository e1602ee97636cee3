"""A clinical CSV with a site column, end to end: the data's site names, a declared missing code,
the federated fit written with its digest, no n_sites needed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from fedpharma.bundle.export import export_run
from fedpharma.core.config import (
    DatasetConfig,
    ModelConfig,
    PartitionConfig,
    PrivacyConfig,
    RunConfig,
    SecureConfig,
    SimulationConfig,
    SitePolicyConfig,
    TrainingConfig,
)
from fedpharma.core.dataset import dense
from fedpharma.data.federated_preprocessing import FittedPreprocessing
from fedpharma.data.schema import load_schema
from fedpharma.models.bundle import LABEL_SCALING_FOLDED, WEIGHTS_FILE, read_weights
from fedpharma.models.trainer import TorchTrainer
from fedpharma.privacy import Budget, PrivacyLedger, make_accountant
from fedpharma.server.feature_statistics import PREPROCESSING_FILE
from fedpharma.sim.engine import simulate
from fedpharma.sim.sites import prepare_sites


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


def _write_progression(folder: Path) -> Path:
    """A regression set in clinical units (a disease score near 150 ± 75, as scikit-learn's
    diabetes set), from three hospitals of different sizes."""
    rng = np.random.default_rng(4)
    lines = ["bmi,age,hospital,progression"]
    for i in range(300):
        hospital = ["north", "south", "east"][0 if i < 180 else 1 if i < 270 else 2]
        bmi = rng.normal(27 + (3 if hospital == "east" else 0), 4)
        age = rng.integers(20, 80)
        progression = 150 + 14 * (bmi - 27) + 0.8 * (age - 50) + rng.normal(0, 25)
        lines.append(f"{bmi:.2f},{age},{hospital},{progression:.1f}")
    data = folder / "progression.csv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "progression.schema.toml").write_text(
        '[[columns]]\nname = "bmi"\ntype = "float"\nunits = "kg/m2"\n\n'
        '[[columns]]\nname = "age"\ntype = "int"\n\n'
        '[[columns]]\nname = "hospital"\ntype = "category"\nrole = "site"\n'
        'categories = ["east", "north", "south"]\n\n'
        '[[columns]]\nname = "progression"\ntype = "float"\nrole = "label"\n',
        encoding="utf-8",
    )
    return data


def test_regression_targets_are_standardized_federatedly_and_reported_in_label_units(
    tmp_path: Path,
) -> None:
    data = _write_progression(tmp_path)
    config = RunConfig(
        dataset=DatasetConfig(
            path=str(data), kind="tabular", label_columns=("progression",), task="regression"
        ),
        partition=PartitionConfig(method="natural"),
        model=ModelConfig(kind="linear"),
        training=TrainingConfig(learning_rate=0.05),
        rounds=8,
        baselines=False,
        privacy_audit=False,
    )
    messages: list[str] = []
    result = simulate(config, tmp_path / "run", on_status=messages.append)
    assert any("targets standardized by 3 sites' summed label statistics" in m for m in messages)

    # pooled oracle: the same split, every site's training labels in one place
    sites = prepare_sites(config).sites
    pooled = np.concatenate([d.train.dense_labels() for d in sites.values()]).astype(np.float64)
    fit = json.loads((tmp_path / "run" / PREPROCESSING_FILE).read_text())
    np.testing.assert_allclose(fit["label_center"], pooled.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(fit["label_scale"], pooled.std(axis=0), rtol=1e-9)

    # the reported RMSE is in label units: recomputed from the raw test labels
    for name, site in sites.items():
        predicted = result.predictions["federated"][name]
        truth = site.test.dense_labels()
        rmse = float(np.sqrt(np.mean((predicted - truth) ** 2)))
        reported = result.summary.sites[name].metrics["federated"]["rmse"]  # type: ignore[index]
        assert reported == pytest.approx(rmse, rel=1e-5)
        assert 10.0 < rmse < 0.8 * float(pooled.std())  # learned, and not standardized units

    # the exported model answers in label units without any transform beside it
    manifest = export_run(tmp_path / "run", tmp_path / "bundle")
    assert manifest.label_scaling == LABEL_SCALING_FOLDED
    weights = read_weights(
        tmp_path / "bundle" / WEIGHTS_FILE, manifest.parameter_names, manifest.weights_sha256
    )
    schema = load_schema(tmp_path / "progression.schema.toml")
    fitted = FittedPreprocessing.from_json(
        json.dumps({k: v for k, v in fit.items() if k != "digest"}), schema
    )
    plain = TorchTrainer(config.model, config.training, "regression", len(fitted.output_names), 1)
    for name, site in sites.items():
        test = dataclasses.replace(
            site.test,
            features=fitted.transform(dense(site.test.features)),
            feature_names=fitted.output_names,
        )
        np.testing.assert_allclose(
            plain.predict(weights, test), result.predictions["federated"][name], rtol=1e-4
        )


def test_under_secure_aggregation_the_statistics_are_a_secure_sum(tmp_path: Path) -> None:
    data = _write_progression(tmp_path)
    schema_file = tmp_path / "progression.schema.toml"
    schema_file.write_text(
        schema_file.read_text()
        .replace('units = "kg/m2"\n', 'units = "kg/m2"\nmin = 10.0\nmax = 60.0\n')
        .replace(
            'name = "age"\ntype = "int"\n', 'name = "age"\ntype = "int"\nmin = 18\nmax = 100\n'
        )
        .replace('role = "label"\n', 'role = "label"\nmin = -200.0\nmax = 800.0\n'),
        encoding="utf-8",
    )
    config = RunConfig(
        dataset=DatasetConfig(
            path=str(data), kind="tabular", label_columns=("progression",), task="regression"
        ),
        partition=PartitionConfig(method="natural"),
        model=ModelConfig(kind="linear"),
        training=TrainingConfig(learning_rate=0.05),
        secure=SecureConfig(mode="secagg"),
        rounds=2,
        baselines=False,
        privacy_audit=False,
    )
    messages: list[str] = []
    simulate(config, tmp_path / "run", on_status=messages.append)
    text = "\n".join(messages)
    assert "secure sum (secagg, 64-bit ring)" in text, text
    assert "securely summed label statistics" in text
    sites = prepare_sites(config).sites
    train = [d.train for d in sites.values()]
    pooled_x = np.concatenate([dense(t.features) for t in train]).astype(np.float64)
    pooled_y = np.concatenate([t.dense_labels() for t in train]).astype(np.float64)
    fit = json.loads((tmp_path / "run" / PREPROCESSING_FILE).read_text())
    np.testing.assert_allclose(fit["center"], pooled_x.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(fit["scale"], pooled_x.std(axis=0), rtol=1e-9)
    np.testing.assert_allclose(fit["label_center"], pooled_y.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(fit["label_scale"], pooled_y.std(axis=0), rtol=1e-9)


def test_worker_processes_train_the_tabular_sites_on_the_drivers_fit(tmp_path: Path) -> None:
    """On the process pool each worker loads its own rows and applies the fit the driver made,
    targets' standardization included (weakened: a worker that used its raw rows would train
    another model, or fail on width)."""
    import torch

    data = _write_progression(tmp_path)
    config = RunConfig(
        dataset=DatasetConfig(
            path=str(data), kind="tabular", label_columns=("progression",), task="regression"
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
