"""DPSGDTrainer: it learns, it clips, it reports its sampling facts, it rejects BatchNorm."""

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from fedpharma.core.config import ModelConfig, TrainingConfig
from fedpharma.core.dataset import Dataset
from fedpharma.core.errors import ConfigError
from fedpharma.models.dpsgd import (
    DPFitOutput,
    DPSGDSampling,
    DPSGDTrainer,
    check_dp_compatible,
    poisson_schedule,
)
from fedpharma.models.trainer import TorchTrainer

N_FEATURES, N_TASKS = 8, 2
MLP = ModelConfig(kind="mlp", hidden=(16,), dropout=0.1)
TRAINING = TrainingConfig(batch_size=32, learning_rate=0.02, optimizer="adam")


def regression(n: int, seed: int = 0) -> Dataset:
    """y = Xw + noise per task, 30 % of labels missing (NaN)."""
    weights = np.random.default_rng(1234).normal(size=(N_FEATURES, N_TASKS))
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, N_FEATURES))
    labels = features @ weights + 0.1 * rng.normal(size=(n, N_TASKS))
    labels[rng.random(labels.shape) < 0.3] = np.nan
    return Dataset(
        features=features.astype(np.float32),
        labels=labels.astype(np.float32),
        task="regression",
        task_names=("a", "b"),
        groups=np.arange(n, dtype=np.int64),
    )


def trainer(
    noise_multiplier: float = 0.5,
    max_grad_norm: float = 1.0,
    training: TrainingConfig = TRAINING,
    *,
    secure_mode: bool = False,
) -> DPSGDTrainer:
    """Seeded (simulation) randomness unless ``secure_mode``, so these tests are reproducible."""
    return DPSGDTrainer(
        MLP,
        training,
        "regression",
        N_FEATURES,
        N_TASKS,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        secure_mode=secure_mode,
    )


def masked_mse(predictions: np.ndarray, labels: np.ndarray) -> float:
    observed = ~np.isnan(labels)
    return float(np.mean((predictions[observed] - labels[observed]) ** 2))


@pytest.fixture(autouse=True)
def single_threaded_torch() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_dp_sgd_learns_and_reports_what_it_released():
    data = regression(256)
    dp = trainer()
    start = dp.initial_parameters(seed=0)
    out = dp.fit(start, data, epochs=8, seed=1)
    assert isinstance(out, DPFitOutput)
    assert out.parameters.same_structure(start)
    assert not np.allclose(out.parameters.flatten(), start.flatten())
    before = masked_mse(dp.predict(start, data), data.labels)
    after = masked_mse(dp.predict(out.parameters, data), data.labels)
    assert after < 0.7 * before
    assert out.n_examples == 256 and math.isfinite(out.train_loss)
    # 256 rows in batches of 32: q = 1/8, 8 steps per epoch.
    assert out.sampling == DPSGDSampling(
        noise_multiplier=0.5, sampling_rate=1 / 8, steps=64, max_grad_norm=1.0
    )
    assert out.sampling == dp.plan(256, epochs=8)


def test_per_fit_settings_override_the_defaults_and_match_the_plan():
    dp = trainer()
    out = dp.fit(
        dp.initial_parameters(0),
        regression(100),
        epochs=2,
        seed=0,
        noise_multiplier=2.0,
        max_grad_norm=0.5,
    )
    # ⌈100 / 32⌉ = 4 Poisson batches per epoch, Opacus' q = 1/4 (not 32/100).
    assert out.sampling == DPSGDSampling(2.0, 0.25, 8, 0.5)
    assert out.sampling == dp.plan(100, epochs=2, noise_multiplier=2.0, max_grad_norm=0.5)


def test_poisson_schedule_follows_opacus():
    assert poisson_schedule(1000, 64, 3) == (1 / 16, 48)
    assert poisson_schedule(10, 64, 1) == (1.0, 1)
    with pytest.raises(ValueError):
        poisson_schedule(0, 64, 1)


def test_simulation_mode_replays_a_fit_from_its_seed_and_secure_mode_does_not():
    data = regression(128)
    seeded, secure = trainer(), trainer(secure_mode=True)
    start = seeded.initial_parameters(0)

    def fit(dp: DPSGDTrainer, seed: int) -> np.ndarray:
        return dp.fit(start, data, epochs=2, seed=seed).parameters.flatten()

    first = fit(seeded, 5)
    np.testing.assert_array_equal(first, fit(seeded, 5))
    assert not np.allclose(first, fit(seeded, 6))
    # Secure mode, the default: the same seed, yet the sample and noise are new on every fit.
    default = DPSGDTrainer(
        MLP, TRAINING, "regression", N_FEATURES, N_TASKS, noise_multiplier=0.5, max_grad_norm=1.0
    )
    assert default.secure_mode
    again = fit(secure, 5)
    assert not np.allclose(again, fit(secure, 5)) and not np.allclose(again, first)


def test_per_record_clipping_bounds_each_step():
    # One step over all 32 rows (q = 1), plain SGD with lr 1 and almost no noise: the update is
    # the mean of clipped per-record gradients, so its norm is at most C.
    sgd = TrainingConfig(batch_size=32, learning_rate=1.0, optimizer="sgd")
    data, clip = regression(32), 0.01
    dp = trainer(noise_multiplier=1e-9, max_grad_norm=clip, training=sgd)
    start = dp.initial_parameters(0)
    private_step = dp.fit(start, data, epochs=1, seed=0).parameters.flatten() - start.flatten()
    plain = TorchTrainer(MLP, sgd, "regression", N_FEATURES, N_TASKS)
    plain_step = plain.fit(start, data, epochs=1, seed=0).parameters.flatten() - start.flatten()
    assert np.linalg.norm(private_step) <= clip * (1 + 1e-4)
    assert np.linalg.norm(plain_step) > 10 * clip


def test_fedprox_term_pulls_towards_the_global_weights():
    dp, data = trainer(), regression(128)
    start = dp.initial_parameters(0)
    free = dp.fit(start, data, epochs=3, seed=0).parameters.flatten() - start.flatten()
    held = dp.fit(start, data, epochs=3, seed=0, proximal_mu=50.0)
    assert np.linalg.norm(held.parameters.flatten() - start.flatten()) < np.linalg.norm(free)


def test_tiny_data_with_empty_poisson_batches_still_takes_every_noisy_step():
    data = regression(3)
    dp = trainer(training=TrainingConfig(batch_size=1, learning_rate=0.01))
    out = dp.fit(dp.initial_parameters(0), data, epochs=4, seed=0)
    assert out.sampling.steps == 12 and out.sampling.sampling_rate == pytest.approx(1 / 3)
    assert np.isfinite(out.parameters.flatten()).all()


def test_batchnorm_is_rejected_naming_the_layer_and_the_fix():
    model = nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8), nn.BatchNorm1d(8)
    )
    with pytest.raises(ConfigError) as caught:
        check_dp_compatible(model)
    message = str(caught.value)
    assert message.count("BatchNorm cannot support training with differential privacy") == 2
    assert "1, 4" in message and "GroupNorm" in message and "ModuleValidator.fix" in message
    check_dp_compatible(nn.Sequential(nn.Linear(8, 16), nn.GroupNorm(4, 16)))  # the fix passes


@pytest.mark.parametrize("noise, clip", [(0.0, 1.0), (1.0, 0.0), (float("nan"), 1.0)])
def test_dp_settings_without_privacy_are_refused(noise, clip):
    with pytest.raises(ConfigError):
        trainer(noise_multiplier=noise, max_grad_norm=clip)


def test_the_recipe_builds_secure_mode_dp_sgd_unless_a_simulation_asks_for_seeded_noise():
    import dataclasses

    from fedpharma.core.config import PrivacyConfig, RunConfig
    from fedpharma.models.factory import build_private_trainer

    privacy = PrivacyConfig(record_level=True, noise_multiplier=1.0)
    config = dataclasses.replace(RunConfig(), model=MLP, training=TRAINING, privacy=privacy)
    data = regression(16)
    assert build_private_trainer(config, data).secure_mode  # what site/deploy.py builds
    assert not build_private_trainer(config, data, reproducible=True).secure_mode  # sim/engine.py
