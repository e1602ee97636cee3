"""A deployed tabular run over gRPC + mTLS: each hospital holds its own CSV; the coordinator
runs the data checks, fits the preprocessing from the sites' sums and hands it out over the same
protocol messages a simulation uses, before round 1."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import SITES

from fedpharma.bundle.export import site_model
from fedpharma.core.config import load_config
from fedpharma.core.dataset import dense
from fedpharma.core.deploy_config import load_server_config, load_site_config
from fedpharma.data.federated_preprocessing import (
    FittedPreprocessing,
    column_sums,
    fitted_width,
)
from fedpharma.data.schema import load_schema
from fedpharma.models.bundle import LABEL_SCALING_FOLDED
from fedpharma.models.output import fold_target_scaling
from fedpharma.models.trainer import TorchTrainer
from fedpharma.server.coordinator import STORE_FILE, run_coordinator
from fedpharma.server.feature_statistics import PREPROCESSING_FILE
from fedpharma.server.store import RunStore
from fedpharma.site.deploy import load_site_data, serve

SCHEMA = """
[[columns]]
name = "lactate"
type = "float"
units = "mmol/L"
min = 0.1
max = 20.0
missing = ["0"]
impute = "median"

[[columns]]
name = "age"
type = "int"
min = 18
max = 100

[[columns]]
name = "died"
type = "int"
role = "label"
"""


def _hospital(path: Path, seed: int, n: int, *, zeros: bool, one_class: bool) -> None:
    rng = np.random.default_rng(seed)
    lines = ["lactate,age,died"]
    for i in range(n):
        died = 0 if one_class else int(i % 3 == 0)
        lactate = "0" if zeros and i % 2 else f"{rng.normal(2.0 + 2.5 * died, 0.8):.2f}"
        lines.append(f"{lactate},{rng.integers(30, 90)},{died}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write(folder: Path, pki_root: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trial.schema.toml").write_text(SCHEMA, encoding="utf-8")
    for k, site in enumerate(SITES):
        # site-3's outcomes are all one class: refused by the labels rule
        _hospital(folder / f"{site}.csv", k, (90, 50, 40)[k], zeros=k == 1, one_class=k == 2)
    (folder / "run.toml").write_text(
        f"""
rounds = 2
seed = 3
baselines = false
[dataset]
path = "{folder / "site-1.csv"}"
kind = "tabular"
label_columns = ["died"]
task = "classification"
schema = "{folder / "trial.schema.toml"}"
[partition]
n_sites = 3
[model]
kind = "linear"
[training]
learning_rate = 0.05
[strategy]
min_sites = 2
[data_checks]
labels = "refuse"
"""
    )
    (folder / "server.toml").write_text(
        f"""
run_config = "run.toml"
runs_dir = "runs"
[server]
address = "127.0.0.1:0"
tls = "{pki_root / "coordinator"}"
heartbeat_seconds = 0.3
liveness_timeout = 2.0
[round_control]
round_timeout = 60.0
wait_for_sites = 60.0
join_deadline = 30.0
"""
    )
    files = {"server": folder / "server.toml"}
    for site in SITES:
        files[site] = folder / f"{site}.toml"
        files[site].write_text(
            f"""
run_config = "run.toml"
state_dir = "state-{site}"
[site]
coordinator = "ADDRESS"
tls = "{pki_root / "sites" / site}"
pull_wait = 0.5
backoff_max = 0.5
give_up_after = 60.0
[data]
path = "{folder / f"{site}.csv"}"
kind = "tabular"
label_columns = ["died"]
task = "classification"
"""
        )
    return files


def test_a_deployed_tabular_run_checks_fits_and_hands_out_the_preprocessing(pki_root, tmp_path):
    files = _write(tmp_path, pki_root)
    config = load_server_config(files["server"])
    recipe = load_config(config.run_config)
    lines: list[str] = []
    ended: dict[str, str] = {}
    stop = threading.Event()

    def start_sites(address: str) -> None:
        for site in SITES:
            files[site].write_text(files[site].read_text().replace("ADDRESS", address))
            site_config = load_site_config(files[site])
            threading.Thread(
                target=lambda c=site_config, s=site: ended.update({s: serve(c, recipe, stop=stop)}),
                daemon=True,
            ).start()

    try:
        result = run_coordinator(config, recipe, on_status=lines.append, on_listening=start_sites)
        deadline = time.monotonic() + 30
        while "site-3" not in ended and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
    text = "\n".join(lines)
    assert result.rounds_completed == 2, text
    assert "site site-3 refused: data check failed for rule 'labels' on column 'died'" in text
    assert "data check failed" in ended["site-3"]
    assert "features imputed and standardized from 2 sites' summed statistics" in text
    assert "applied at 2 site(s)" in text

    # the fit equals the pooled fit of the two admitted hospitals' training rows
    fit = json.loads((result.run_dir / PREPROCESSING_FILE).read_text())
    schema = load_schema(tmp_path / "trial.schema.toml")
    pooled = None
    for site in ("site-1", "site-2"):
        train = load_site_data(load_site_config(files[site]).data, recipe).train
        sums = column_sums(dense(train.features), schema)
        pooled = sums if pooled is None else pooled + sums
    assert pooled is not None
    expected = FittedPreprocessing.fit(schema, pooled, indicate_all=True)
    assert fit["digest"] == expected.digest()
    assert fit["indicator_names"] == ["missing(lactate)"]


REGRESSION_SCHEMA = """
[[columns]]
name = "bmi"
type = "float"
units = "kg/m2"
min = 10.0
max = 60.0
impute = "mean"

[[columns]]
name = "progression"
type = "float"
role = "label"
min = -200.0
max = 800.0
"""


@pytest.mark.parametrize("secure", ["none", "secagg", "ckks"])
def test_a_deployed_regression_trains_on_standardized_targets_and_reports_label_units(
    pki_root, tmp_path, secure
):
    files = _write(tmp_path, pki_root)
    if secure != "none":  # the statistics become a secure sum among the three hospitals
        run = tmp_path / "run.toml"
        run.write_text(run.read_text() + f'[secure]\nmode = "{secure}"\n')
    (tmp_path / "trial.schema.toml").write_text(REGRESSION_SCHEMA, encoding="utf-8")
    for k, site in enumerate(SITES):
        rng = np.random.default_rng(10 + k)
        lines = ["bmi,progression"]
        for i in range((90, 50, 40)[k]):
            bmi = rng.normal(27 + 2 * k, 4)
            shown = "" if i % 9 == 0 else f"{bmi:.2f}"
            lines.append(f"{shown},{150 + 14 * (bmi - 27) + rng.normal(0, 25):.1f}")
        (tmp_path / f"{site}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for path in (tmp_path / "run.toml", *(files[site] for site in SITES)):
        text = path.read_text().replace('"died"', '"progression"')
        path.write_text(text.replace('task = "classification"', 'task = "regression"'))
    config = load_server_config(files["server"])
    recipe = load_config(config.run_config)
    lines: list[str] = []
    stop = threading.Event()

    def start_sites(address: str) -> None:
        for site in SITES:
            files[site].write_text(files[site].read_text().replace("ADDRESS", address))
            site_config = load_site_config(files[site])
            threading.Thread(
                target=lambda c=site_config: serve(c, recipe, stop=stop), daemon=True
            ).start()

    try:
        result = run_coordinator(config, recipe, on_status=lines.append, on_listening=start_sites)
    finally:
        stop.set()
    text = "\n".join(lines)
    assert result.rounds_completed == 2, text
    if secure == "none":
        assert "targets standardized by 3 sites' summed label statistics" in text
    else:
        assert f"secure sum ({secure}" in text, text
        assert "targets standardized by 3 sites' securely summed label statistics" in text

    # the targets' scaling equals the pooled one of the three hospitals' training labels
    fit = json.loads((result.run_dir / PREPROCESSING_FILE).read_text())
    data = {site: load_site_data(load_site_config(files[site]).data, recipe) for site in SITES}
    pooled = np.concatenate([d.train.dense_labels() for d in data.values()]).astype(np.float64)
    tolerance = 1e-5 if secure == "ckks" else 1e-9  # CKKS decrypts a float32 mean
    np.testing.assert_allclose(fit["label_center"], pooled.mean(axis=0), rtol=tolerance)
    np.testing.assert_allclose(fit["label_scale"], pooled.std(axis=0), rtol=tolerance)

    # each site's reported RMSE is in label units: the folded model on its raw test labels
    schema = load_schema(tmp_path / "trial.schema.toml")
    fitted = FittedPreprocessing.from_json(
        json.dumps({k: v for k, v in fit.items() if k != "digest"}), schema
    )
    assert fitted.target_scaling is not None
    folded = fold_target_scaling(result.parameters, fitted.target_scaling)
    plain = TorchTrainer(recipe.model, recipe.training, "regression", fitted_width(schema), 1)
    store = RunStore(result.run_dir / STORE_FILE)
    reported = {
        site: value
        for rnd, site, name, value, _ in store.metric_history("evaluate")
        if rnd == 2 and name == "rmse"
    }
    store.close()
    assert set(reported) == set(SITES), text
    for site, held in data.items():
        test = dataclasses.replace(
            held.test,
            features=fitted.transform(dense(held.test.features)),
            feature_names=fitted.output_names,
        )
        rmse = float(
            np.sqrt(np.mean((plain.predict(folded, test) - held.test.dense_labels()) ** 2))
        )
        assert reported[site] == pytest.approx(rmse, rel=1e-4)
        assert rmse > 10.0  # label units (the labels spread about 75), not standardized ones
        # what the hospital keeps of its model, and exports, answers in label units too
        manifest, kept = site_model(Path(load_site_config(files[site]).state_dir))
        assert manifest.label_scaling == LABEL_SCALING_FOLDED
        np.testing.assert_allclose(
            plain.predict(kept, test), plain.predict(folded, test), rtol=1e-5, atol=1e-3
        )
