"""A deployed run's model leaves it: the coordinator's run exports (with its audit head), each
site keeps its own model in its state_dir and exports it there, and both predict alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
from deploy_helpers import SITES, recipe_toml, run_in_threads, write_deployment
from typer.testing import CliRunner

import fedpharma
from fedpharma.cli.main import app
from fedpharma.core.config import load_config
from fedpharma.core.deploy_config import load_server_config
from fedpharma.server.coordinator import read_head

runner = CliRunner()


@pytest.fixture(scope="module")
def deployed(molecules_csv, pki_root, tmp_path_factory):
    """A finished 2-round deployment over mutual TLS; each site with its own state_dir."""
    folder = tmp_path_factory.mktemp("deploy")
    files = write_deployment(folder, pki_root, recipe_toml(molecules_csv), port=0)
    lines: list[str] = []
    result = run_in_threads(files, on_status=lines.append)
    assert result.rounds_completed == 2
    return folder, result, lines


def test_the_coordinators_run_exports_with_its_audit_head(deployed, tmp_path):
    _folder, result, _lines = deployed
    out = tmp_path / "model"
    exported = runner.invoke(app, ["export", str(result.run_dir / "run.sqlite"), "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    provenance = json.loads((out / "manifest.json").read_text())["provenance"]
    head = read_head(result.run_dir)
    assert head is not None
    assert provenance["source"] == "deployment" and provenance["round"] == 2
    assert provenance["audit_head"] == f"{head.seq}:{head.hash}"
    assert provenance["run_id"] == result.run_id
    model = fedpharma.load_model(out)
    np.testing.assert_array_equal(model.parameters.flatten(), result.parameters.flatten())


def test_each_site_keeps_the_final_model_and_exports_it_at_its_site(deployed, tmp_path):
    folder, result, _lines = deployed
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
    for site in SITES:
        out = tmp_path / site
        state = folder / f"state-{site}"
        exported = runner.invoke(app, ["export", "--site-state", str(state), "--out", str(out)])
        assert exported.exit_code == 0, exported.output
        model = fedpharma.load_model(out)
        assert model.manifest.provenance.site == site
        assert model.manifest.provenance.run_id == result.run_id
        # The last task a site answered carried the run's final model (round 2's evaluation).
        assert model.manifest.provenance.round == 2
        np.testing.assert_array_equal(model.parameters.flatten(), result.parameters.flatten())
        assert model.predict(smiles).values.shape == (3, 1)


def test_a_deployed_run_gets_a_report_from_its_run_store(deployed):
    _folder, result, _lines = deployed
    assert not (result.run_dir / "summary.json").exists()
    rendered = runner.invoke(app, ["report", str(result.run_dir)])
    assert rendered.exit_code == 0, rendered.output
    page = (result.run_dir / "report.html").read_text()
    assert "deployed" in page and "Learning curves" in page
    assert "Time and participation per round" in page
    assert "Federated model per partner" in page  # no baselines in a deployment
    assert "Local-only vs federated" not in page
    for site in SITES:
        assert site in page


def test_site_progress_lines_name_the_task_and_count_rounds_from_1(deployed):
    _folder, _result, lines = deployed
    text = "\n".join(lines)
    assert "before round 1: task received (preprocessing check" in text
    assert "round 1: task received (train" in text and "round 2: result sent (evaluate" in text
    assert "round 0" not in text


def test_a_deployed_report_has_per_task_results_equal_to_the_pooled_rows(deployed):
    """The sites' counts, pooled by the coordinator, give what the pooled rows give: RMSE, MAE,
    R² exactly and the parity histogram cell by cell, on the grid the coordinator fixed."""
    from fedpharma.evaluation.metrics import per_task_metrics
    from fedpharma.evaluation.task_counts import task_counts
    from fedpharma.models.factory import build_trainer
    from fedpharma.server.coordinator import model_shape
    from fedpharma.server.run_summary import summary_from_store
    from fedpharma.sim.engine import prepare_sites

    folder, result, _lines = deployed
    recipe = load_config(load_server_config(folder / "server.toml").run_config)
    summary = summary_from_store(result.run_dir)
    assert summary.task_summary is not None and summary.task_summary.sites == SITES
    assert not summary.task_summary.declined and summary.task_summary.skipped is None
    trainer = build_trainer(recipe, model_shape(recipe))
    sites = prepare_sites(recipe).sites  # the demo sites hold exactly these rows
    labels = np.concatenate([s.test.dense_labels() for s in sites.values()]).astype(np.float64)
    predictions = np.concatenate(
        [trainer.predict(result.parameters, s.test) for s in sites.values()]
    ).astype(np.float64)
    (got,) = summary.tasks.values()
    exact = per_task_metrics("regression", labels, predictions)[0]
    for metric in ("rmse", "mae", "r2"):
        assert got.metrics[metric] == pytest.approx(exact[metric], rel=1e-5)
    assert got.n_test == np.isfinite(labels[:, 0]).sum()
    assert got.parity is not None
    pooled = task_counts("regression", labels[:, 0], predictions[:, 0], np.array(got.parity.edges))
    np.testing.assert_array_equal(np.array(got.parity.counts), pooled.histogram)
    assert set(got.sites) == set(SITES)
    rendered = runner.invoke(app, ["report", str(result.run_dir)])
    assert rendered.exit_code == 0, rendered.output
    page = (result.run_dir / "report.html").read_text()
    assert "Per-task metrics" in page and "Parity · pIC50" in page
    assert "Label distribution per site · pIC50" in page
    assert f"From the counts of {', '.join(SITES)}." in page
