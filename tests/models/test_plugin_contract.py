"""The contract every model plugin keeps: the built-in networks, the EMR-signal example, an
installed third-party plugin and chemprop's D-MPNN (skipped without ``fedpharma[chemprop]``).

Initial parameters are a function of the seed; names are stable through training; fit and
predict have the data's shape; missing labels are masked; DP-SGD either trains the network or
is refused with Opacus's and the plugin's reasons; private heads keep ``head.*`` at the site.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedpharma.core.config import ModelConfig, PrivacyConfig, RunConfig, TrainingConfig
from fedpharma.core.dataset import Dataset
from fedpharma.core.errors import ConfigError
from fedpharma.models.factory import build_private_trainer, build_trainer
from fedpharma.models.plugins.emr_signal import SIGNAL_LENGTH
from fedpharma.models.private_head import PrivateHeadTrainer
from tests.models.plugin_samples import TARGET

N_ROWS, N_TASKS = 48, 3
PLUGINS = ["mlp", "linear", "emr-signal", TARGET, "dmpnn"]
HAS_TRUNK = {"mlp", "emr-signal", TARGET, "dmpnn"}
DP_REFUSED = {"dmpnn"}


def _labels(rng: np.random.Generator, signal: np.ndarray, task: str) -> np.ndarray:
    labels = np.repeat(signal[:, None], N_TASKS, axis=1) + rng.normal(0, 0.1, (N_ROWS, N_TASKS))
    if task == "classification":
        labels = (labels > np.median(labels, axis=0)).astype(np.float32)
    labels[rng.random(labels.shape) < 0.3] = np.nan  # multitask: most labels missing
    labels[np.arange(N_ROWS), rng.integers(0, N_TASKS, N_ROWS)] = 1.0  # ≥ 1 observed per row
    return labels.astype(np.float32)


def dataset(plugin: str, task: str = "regression") -> Dataset:
    rng = np.random.default_rng(3)
    smiles: tuple[str, ...] = ()
    if plugin == "dmpnn":
        from rdkit import Chem

        from fedpharma.data.preprocessing import reference_molecules

        smiles = tuple(Chem.MolToSmiles(m) for m in reference_molecules(N_ROWS))
        features = np.zeros((N_ROWS, 0), np.float32)
        signal = np.array([len(s) / 20 for s in smiles])
    else:
        width = 6 + SIGNAL_LENGTH if plugin == "emr-signal" else 16
        features = rng.normal(size=(N_ROWS, width)).astype(np.float32)
        signal = features[:, :3].sum(axis=1)
    return Dataset(
        features,
        _labels(rng, signal, task),
        task,  # type: ignore[arg-type]
        tuple(f"t{i}" for i in range(N_TASKS)),
        np.arange(N_ROWS),
        name=f"{plugin}-data",
        smiles=smiles,
    )


def recipe(plugin: str, **model: object) -> RunConfig:
    return RunConfig(
        model=ModelConfig(**{"plugin": plugin, "hidden": (24, 12), "dropout": 0.1, **model}),
        training=TrainingConfig(batch_size=16, learning_rate=0.01),
    )


@pytest.fixture(params=PLUGINS)
def plugin(request, acme_plugin) -> str:
    if request.param == "dmpnn":
        pytest.importorskip("chemprop", reason="the fedpharma[chemprop] extra is not installed")
    return str(request.param)


def test_initial_parameters_are_a_function_of_the_seed(plugin):
    data = dataset(plugin)
    first = build_trainer(recipe(plugin), data).initial_parameters(5)
    again = build_trainer(recipe(plugin), data).initial_parameters(5)
    other = build_trainer(recipe(plugin), data).initial_parameters(6)
    assert first.names == again.names
    assert all(np.array_equal(a, b) for a, b in zip(first.arrays, again.arrays, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(first.arrays, other.arrays, strict=True))


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_fit_and_predict_keep_names_and_shapes_and_are_deterministic(plugin, task):
    data = dataset(plugin, task)
    trainer = build_trainer(recipe(plugin), data)
    start = trainer.initial_parameters(0)
    assert start.names and all(n.startswith(("trunk.", "head.")) for n in start.names)
    out = trainer.fit(start, data, epochs=2, seed=1)
    again = build_trainer(recipe(plugin), data).fit(start, data, epochs=2, seed=1)
    assert out.parameters.names == start.names and out.n_examples == N_ROWS
    assert [a.shape for a in out.parameters.arrays] == [a.shape for a in start.arrays]
    pairs = zip(out.parameters.arrays, again.parameters.arrays, strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)
    assert np.isfinite(out.train_loss)  # the NaN (missing) labels were masked
    predictions = trainer.predict(out.parameters, data)
    assert predictions.shape == (N_ROWS, N_TASKS) and np.isfinite(predictions).all()
    if task == "classification":
        assert ((predictions >= 0) & (predictions <= 1)).all()


def test_training_lowers_the_loss(plugin):
    data = dataset(plugin)
    trainer = build_trainer(recipe(plugin, hidden=(32,)), data)
    params = trainer.initial_parameters(0)
    first = trainer.fit(params, data, epochs=1, seed=0)
    later = trainer.fit(first.parameters, data, epochs=15, seed=1)
    assert later.train_loss < first.train_loss


def test_scaffold_gradient_has_the_parameters_names_and_shapes(plugin):
    data = dataset(plugin)
    trainer = build_trainer(recipe(plugin), data)
    params = trainer.initial_parameters(0)
    gradient = trainer.gradient(params, data)  # type: ignore[attr-defined]
    assert gradient.names == params.names
    assert any(np.abs(g).sum() > 0 for g in gradient.arrays)


def test_private_heads_keep_the_head_at_the_site(plugin):
    data = dataset(plugin)
    config = recipe(plugin, private_heads=True)
    if plugin not in HAS_TRUNK:
        with pytest.raises(ConfigError, match="shared trunk"):
            build_trainer(config, data)
        return
    trainer = build_trainer(config, data)
    assert isinstance(trainer, PrivateHeadTrainer)
    trunk = trainer.initial_parameters(0)
    assert trunk.names and not any(n.startswith("head.") for n in trunk.names)
    out = trainer.fit(trunk, data, epochs=1, seed=0)
    assert out.parameters.names == trunk.names  # the update carries no head
    assert trainer.head.names == ("head.weight", "head.bias")
    assert trainer.predict(out.parameters, data).shape == (N_ROWS, N_TASKS)


def test_dp_sgd_trains_the_plugin_or_refuses_it_with_every_reason(plugin):
    data = dataset(plugin)
    config = dataclasses.replace(
        recipe(plugin), privacy=PrivacyConfig(record_level=True, noise_multiplier=1.0)
    )
    if plugin in DP_REFUSED:
        with pytest.raises(ConfigError) as refused:
            build_private_trainer(config, data, reproducible=True)
        assert "bonds" in str(refused.value) and "site_level" in str(refused.value)
        return
    trainer = build_private_trainer(config, data, reproducible=True)
    start = trainer.initial_parameters(0)
    out = trainer.fit(start, data, epochs=1, seed=0)
    assert out.parameters.names == start.names and out.sampling.steps >= 1
    pairs = zip(out.parameters.arrays, start.arrays, strict=True)
    assert all(not np.array_equal(a, b) for a, b in pairs)  # every weight: clipped, noised


@pytest.fixture
def headless_plugin(tmp_path, monkeypatch):
    """The installed third-party plugin with its output layer named ``out``, not ``head``."""
    from tests.models.plugin_samples import HEADLESS_CODE, forget_plugin, install_plugin

    monkeypatch.syspath_prepend(str(install_plugin(tmp_path / "headless", code=HEADLESS_CODE)))
    forget_plugin()
    yield
    forget_plugin()


@pytest.mark.parametrize("calibrate", [True, False])
def test_private_heads_refuse_a_plugin_without_a_head_layer(headless_plugin, calibrate):
    # Calibrated, this was a raw KeyError; uncalibrated, the plugin's output layer was silently
    # federated under a recipe that promised to keep it at the site.
    data = dataset(TARGET)
    config = recipe(TARGET, private_heads=True)
    config = dataclasses.replace(
        config, training=dataclasses.replace(config.training, calibrate_output=calibrate)
    )
    with pytest.raises(ConfigError, match="no layer named `head`"):
        build_trainer(config, data).initial_parameters(0)


def test_a_plugin_without_a_head_layer_trains_as_a_shared_model(headless_plugin):
    data = dataset(TARGET)
    trainer = build_trainer(recipe(TARGET), data)
    start = trainer.initial_parameters(0)
    assert "out.weight" in start.names
    out = trainer.fit(start, data, epochs=1, seed=0)
    assert out.parameters.names == start.names
