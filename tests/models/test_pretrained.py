"""Public-data warm start (``[model] init``) and a frozen trunk (``[model] freeze_trunk``)."""

import hashlib

import numpy as np
import pytest

from fedpharma.core.config import ModelConfig, TrainingConfig, config_from_dict
from fedpharma.core.dataset import Dataset
from fedpharma.core.errors import ConfigError
from fedpharma.models.dpsgd import DPSGDTrainer
from fedpharma.models.pretrained import load_weights, save_weights
from fedpharma.models.trainer import TorchTrainer

N_FEATURES, N_TASKS = 6, 2
MLP = ModelConfig(kind="mlp", hidden=(8, 4), dropout=0.0)
TRAINING = TrainingConfig(batch_size=16, learning_rate=0.05)


def data(n: int = 64) -> Dataset:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    labels = (features[:, :N_TASKS] > 0).astype(np.float32)
    return Dataset(
        features=features,
        labels=labels,
        task="classification",
        task_names=("a", "b"),
        groups=np.arange(n, dtype=np.int64),
    )


def trunk_file(tmp_path, seed: int = 7):
    trunk = {
        n: a
        for n, a in TorchTrainer(MLP, TRAINING, "classification", N_FEATURES, N_TASKS)
        .initial_parameters(seed)
        .to_dict()
        .items()
        if n.startswith("trunk.")
    }
    path = tmp_path / "trunk.npz"
    return path, save_weights(path, trunk), trunk


def test_the_run_starts_from_the_pretrained_trunk_and_its_own_head(tmp_path):
    path, digest, trunk = trunk_file(tmp_path)
    model = ModelConfig(kind="mlp", hidden=(8, 4), init=f"pretrained:{path}", init_sha256=digest)
    params = TorchTrainer(model, TRAINING, "classification", N_FEATURES, N_TASKS)
    start = params.initial_parameters(0).to_dict()
    fresh = TorchTrainer(MLP, TRAINING, "classification", N_FEATURES, N_TASKS)
    for name, array in trunk.items():
        np.testing.assert_array_equal(start[name], array)
    np.testing.assert_array_equal(
        start["head.weight"], fresh.initial_parameters(0).to_dict()["head.weight"]
    )
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_other_than_the_pinned_one_is_refused(tmp_path):
    path, digest, _ = trunk_file(tmp_path)
    with pytest.raises(ConfigError, match="SHA-256"):
        load_weights(f"pretrained:{path}", "0" * 64)
    assert load_weights(f"pretrained:{path}", digest.upper())  # hex case does not matter
    with pytest.raises(ConfigError, match="cannot read"):
        load_weights(f"pretrained:{tmp_path / 'absent.npz'}", digest)
    with pytest.raises(ConfigError, match="pretrained:PATH"):
        load_weights(str(path), digest)


def test_pickled_objects_in_the_weights_file_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, **{"trunk.hidden1.weight": np.array([{"x": 1}], dtype=object)})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ConfigError, match=r"not a valid \.npz"):
        load_weights(f"pretrained:{path}", digest)


def test_weights_of_another_shape_are_refused_saying_how_to_fix(tmp_path):
    path, digest, _ = trunk_file(tmp_path)
    model = ModelConfig(kind="mlp", hidden=(9, 4), init=f"pretrained:{path}", init_sha256=digest)
    with pytest.raises(ConfigError, match="same features and"):
        TorchTrainer(model, TRAINING, "classification", N_FEATURES, N_TASKS).initial_parameters(0)


@pytest.mark.parametrize("private", [False, True])
def test_a_frozen_trunk_is_neither_trained_nor_noised_and_the_head_is(private):
    frozen = ModelConfig(kind="mlp", hidden=(8, 4), dropout=0.0, freeze_trunk=True)
    results = {}
    for name, model in (("frozen", frozen), ("twin", MLP)):
        trainer = (
            DPSGDTrainer(
                model,
                TRAINING,
                "classification",
                N_FEATURES,
                N_TASKS,
                noise_multiplier=1.0,
                max_grad_norm=1.0,
                secure_mode=False,
            )
            if private
            else TorchTrainer(model, TRAINING, "classification", N_FEATURES, N_TASKS)
        )
        start = trainer.initial_parameters(0)
        end = trainer.fit(start, data(), epochs=2, seed=0).parameters
        assert end.names == start.names  # every parameter still travels
        results[name] = {
            n: not np.array_equal(start.to_dict()[n], end.to_dict()[n]) for n in start.names
        }
    assert results["frozen"] == {n: n.startswith("head.") for n in results["frozen"]}
    assert all(results["twin"].values())  # the unfrozen twin moves (and noises) every weight


def test_recipe_keys_for_dp_practice_are_checked_and_the_preset_is_applied():
    base = {"dataset": {"name": "breast-cancer"}}
    with pytest.raises(ConfigError, match="init_sha256"):
        config_from_dict(base | {"model": {"init": "pretrained:x.npz"}})
    with pytest.raises(ConfigError, match="freeze_trunk"):
        config_from_dict(base | {"model": {"kind": "linear", "freeze_trunk": True}})
    with pytest.raises(ConfigError, match="record_level"):
        config_from_dict(base | {"privacy": {"preset": "dp-sgd"}})
    dp = {"record_level": True, "target_epsilon": 3.0, "preset": "dp-sgd"}
    cfg = config_from_dict(base | {"privacy": dp, "training": {"batch_size": 8}})
    assert (cfg.training.batch_size, cfg.training.local_epochs) == (512, 1)
    assert cfg.training.learning_rate == 1e-2
    assert cfg.privacy.preset == "dp-sgd"
