"""simulate → export → predict: the exported model predicts what the trained model predicts, and a
bundle whose preprocessing cannot be reproduced is refused in one line."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import fedpharma
from fedpharma.cli.main import app
from fedpharma.core.config import DatasetConfig, FeaturesConfig, ModelConfig
from fedpharma.core.errors import DataError
from fedpharma.data.datasets import load_dataset
from fedpharma.data.preprocessing import canonical_json
from fedpharma.models.trainer import TorchTrainer

runner = CliRunner()


def _config(data: Path, **model: object) -> dict[str, object]:
    return {
        "rounds": 2,
        "seed": 3,
        "baselines": False,
        "privacy_audit": False,
        "dataset": {"path": str(data), "label_columns": ["pIC50"], "task": "regression"},
        "features": {"n_bits": 256},
        "partition": {"n_sites": 3},
        "model": {"hidden": [16], **model},
        "training": {"batch_size": 16, "learning_rate": 0.01},
    }


@pytest.fixture(scope="module")
def run(molecules_csv, tmp_path_factory):
    return fedpharma.simulate(_config(molecules_csv), out=tmp_path_factory.mktemp("r") / "run")


@pytest.fixture(scope="module")
def bundle(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("b") / "model"
    result = runner.invoke(app, ["export", str(run.run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _predict_cli(bundle: Path, molecules: Path, out: Path) -> list[dict[str, str]]:
    result = runner.invoke(app, ["predict", str(bundle), str(molecules), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_exported_model_predicts_what_the_trained_model_predicts(
    run, bundle, molecules_csv, tmp_path
):
    # The reference: the run's final weights on the loader's own featurization of the data.
    dataset, _ = load_dataset(
        DatasetConfig(path=str(molecules_csv), label_columns=("pIC50",), task="regression"),
        FeaturesConfig(n_bits=256),
    )
    trainer = TorchTrainer(ModelConfig(hidden=(16,)), run.config.training, "regression", 256, 1)
    expected = trainer.predict(run.model.parameters, dataset)[:, 0]
    rows = _predict_cli(bundle, molecules_csv, tmp_path / "p.csv")
    assert len(rows) == len(dataset) == 150
    got = np.array([float(r["pIC50"]) for r in rows])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert {r["status"] for r in rows} == {"ok"}
    # …and in memory, through the public API, with the loaded bundle.
    smiles = [r["smiles"] for r in csv.DictReader(molecules_csv.open())]
    np.testing.assert_allclose(run.predict(smiles).values[:, 0], expected, rtol=1e-6)
    loaded = fedpharma.load_model(bundle)
    np.testing.assert_allclose(loaded.predict({"smiles": smiles}).values[:, 0], expected, rtol=1e-6)
    assert not np.allclose(expected, expected[0])  # a model that predicts, not a constant


def test_manifest_describes_the_model_and_its_provenance(run, bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["task"] == "regression"
    assert manifest["task_names"] == ["pIC50"]
    assert manifest["architecture"] == {
        "kind": "mlp",
        "hidden": [16],
        "dropout": 0.1,
        "n_features": 256,
        "n_tasks": 1,
    }
    assert manifest["preprocessing"]["recipe"]["n_bits"] == 256
    assert manifest["provenance"]["run_id"] == run.summary.run_id
    assert manifest["provenance"]["source"] == "simulation"
    assert manifest["provenance"]["round"] == 2
    assert manifest["label_scaling"].startswith("none")
    weights = (bundle / "weights.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == manifest["weights_sha256"]
    assert b"pickle" not in weights[:200] and weights[8:9] == b"{"  # a safetensors header


def test_invalid_molecules_get_no_prediction_and_are_named_by_row(bundle, tmp_path):
    molecules = tmp_path / "new.csv"
    molecules.write_text("smiles,id\nCCO,1\nnot-a-molecule,2\n,3\nc1ccccc1O,4\n")
    rows = _predict_cli(bundle, molecules, tmp_path / "p.csv")
    assert [r["status"] for r in rows] == ["ok", "unparsable", "empty", "ok"]
    assert rows[1]["pIC50"] == "" and float(rows[0]["pIC50"]) > 0


def _edited(bundle: Path, tmp_path: Path, edit, *, redigest: bool = True) -> Path:
    copy = tmp_path / "edited"
    copy.mkdir(parents=True)
    (copy / "weights.safetensors").write_bytes((bundle / "weights.safetensors").read_bytes())
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest["preprocessing"])
    if redigest:
        text = canonical_json(manifest["preprocessing"]["recipe"]).encode()
        manifest["preprocessing"]["recipe_digest"] = hashlib.sha256(text).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def _refused(bundle: Path, tmp_path: Path) -> str:
    molecules = tmp_path / "m.csv"
    molecules.write_text("smiles\nCCO\n")
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", str(bundle), str(molecules), "--out", str(out)])
    assert result.exit_code == DataError.exit_code, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not out.exists()
    return result.output


def test_a_recipe_that_disagrees_with_the_bundles_features_is_refused(bundle, tmp_path):
    def other_radius(pre):
        pre["recipe"]["radius"] = 3

    text = _refused(_edited(bundle, tmp_path, other_radius), tmp_path)
    assert "radius 3 (here 2)" in text


def test_a_recipe_that_does_not_match_its_digest_is_refused(bundle, tmp_path):
    def nbits(pre):
        pre["recipe"]["n_bits"] = 512

    assert "digest" in _refused(_edited(bundle, tmp_path, nbits, redigest=False), tmp_path)


def test_another_rdkit_is_accepted_only_if_the_reference_features_reproduce(bundle, tmp_path):
    def other_rdkit(pre):
        pre["recipe"]["rdkit_version"] = "2000.1.1"

    accepted = _edited(bundle, tmp_path / "a", other_rdkit)
    assert fedpharma.load_model(accepted).predict(["CCO"]).values.shape == (1, 1)

    def other_rdkit_and_features(pre):
        other_rdkit(pre)
        pre["reference_digest"] = "0" * 64

    text = _refused(_edited(bundle, tmp_path / "b", other_rdkit_and_features), tmp_path)
    assert "rdkit_version '2000.1.1'" in text and "featurize differently" in text


def test_damaged_weights_and_unknown_formats_are_refused(bundle, tmp_path):
    copy = _edited(bundle, tmp_path, lambda pre: None)
    blob = bytearray((copy / "weights.safetensors").read_bytes())
    blob[-1] ^= 1
    (copy / "weights.safetensors").write_bytes(bytes(blob))
    assert "SHA-256" in _refused(copy, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(manifest | {"format": 2}))
    assert "format 2" in _refused(copy, tmp_path)


def test_export_refuses_a_used_folder_and_a_missing_run_in_one_line(run, bundle, tmp_path):
    for args in (
        ["export", str(run.run_dir), "--out", str(bundle)],
        ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "m")],
        ["export", "--out", str(tmp_path / "m")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code != 0
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "m").exists()


def test_private_heads_are_exported_by_their_site_only(molecules_csv, tmp_path):
    run = fedpharma.simulate(_config(molecules_csv, private_heads=True), out=tmp_path / "run")
    refused = runner.invoke(app, ["export", str(run.run_dir), "--out", str(tmp_path / "m")])
    assert refused.exit_code != 0 and "--site-state" in refused.output
    out = tmp_path / "site-1-model"
    state = run.run_dir / "sites" / "site-1"
    result = runner.invoke(app, ["export", "--site-state", str(state), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["provenance"]["source"] == "site"
    assert manifest["provenance"]["site"] == "site-1"
    assert manifest["parameter_names"][-2:] == ["head.weight", "head.bias"]
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
    site_1 = fedpharma.load_model(out).predict(smiles).values
    np.testing.assert_allclose(site_1, run.site_model("site-1").predict(smiles).values)
    # each partner's head is its own: site-2's model predicts differently
    assert not np.allclose(site_1, run.site_model("site-2").predict(smiles).values)
    with pytest.raises(DataError, match="site_model"):
        run.predict(smiles)
