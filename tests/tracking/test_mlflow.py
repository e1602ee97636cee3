"""The MLflow observer logs a simulation to a local store, offline: params, per-round metrics,
ε per site, the summary and the model bundle, which loads back as the run's model."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import fedpharma
from fedpharma.cli.main import app

mlflow = pytest.importorskip("mlflow")


def _config(data):
    return {
        "rounds": 2,
        "baselines": False,
        "privacy_audit": False,
        "dataset": {"path": str(data), "label_columns": ["pIC50"], "task": "regression"},
        "features": {"n_bits": 128},
        "partition": {"n_sites": 3},
        "model": {"hidden": [8]},
        "privacy": {"record_level": True, "noise_multiplier": 1.0},
        "site_policy": {"record_epsilon": 50.0},
    }


def test_a_simulation_is_logged_to_a_local_mlflow_store(molecules_csv, tmp_path):
    store = f"file:{tmp_path / 'mlruns'}"
    result = fedpharma.simulate(
        _config(molecules_csv), out=tmp_path / "run", mlflow=store, experiment="qsar"
    )
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("qsar")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["rounds"] == "2" and run.data.params["features.n_bits"] == "128"
    history = client.get_metric_history(run.info.run_id, "test_rmse")
    assert [m.step for m in history] == [1, 2]
    assert history[-1].value == pytest.approx(result.summary.curves.pooled[-1])
    epsilon = client.get_metric_history(run.info.run_id, "site-1/epsilon_record")
    assert [m.step for m in epsilon] == [1, 2] and epsilon[1].value > epsilon[0].value > 0
    assert "final_federated_rmse" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "model"} <= artifacts
    local = client.download_artifacts(run.info.run_id, "model", str(tmp_path / "dl"))
    model = fedpharma.load_model(local)
    np.testing.assert_array_equal(model.parameters.flatten(), result.model.parameters.flatten())


def test_the_cli_logs_to_mlflow_too(molecules_csv, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        f'rounds = 1\nbaselines = false\nprivacy_audit = false\n[dataset]\npath = "{molecules_csv}"'
        '\nlabel_columns = ["pIC50"]\ntask = "regression"\n[features]\nn_bits = 64\n'
        "[partition]\nn_sites = 3\n[model]\nhidden = [4]\n"
    )
    store = f"file:{tmp_path / 'mlruns'}"
    out = tmp_path / "run"
    args = ["simulate", str(config), "--out", str(out), "--mlflow", store]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("fedpharma").experiment_id])
    assert run.info.run_name == "run" and "test_rmse" in run.data.metrics
