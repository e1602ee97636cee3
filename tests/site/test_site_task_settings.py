"""The settings a coordinator sends with a train task are the settings the site trains with.

The round loop's tests check that FedProx's μ is *sent*, the trainer's that μ is *honoured*;
these link the two: a site given μ (epochs, seed) in its task produces exactly the update its
trainer produces with that μ, and another one than without it. Otherwise FedProx silently
becomes FedAvg (Li et al. 2020) and no loss curve shows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from fedpharma.cli.main import DEMO_CONFIG
from fedpharma.core.config import (
    ModelConfig,
    PrivacyConfig,
    SitePolicyConfig,
    StrategyConfig,
    TrainingConfig,
)
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import TrainResult, TrainTask
from fedpharma.core.protocol.settings import LocalTraining, TrainSettings
from fedpharma.models.trainer import TorchTrainer
from fedpharma.sim.engine import prepare_sites, simulate
from fedpharma.site.runtime import SiteRuntime

N_FEATURES, N_TASKS = 6, 1


@pytest.fixture(autouse=True)
def single_threaded_torch() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def dataset(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, N_FEATURES))
    labels = features @ rng.normal(size=(N_FEATURES, N_TASKS)) + 0.1 * rng.normal(size=(n, 1))
    return Dataset(
        features=features.astype(np.float32),
        labels=labels.astype(np.float32),
        task="regression",
        task_names=("y",),
        groups=np.arange(n, dtype=np.int64),
    )


@pytest.fixture(scope="module")
def site() -> tuple[SiteRuntime, TorchTrainer, Parameters]:
    model = ModelConfig(kind="mlp", hidden=(8,), dropout=0.0)
    training = TrainingConfig(batch_size=16, learning_rate=0.05, optimizer="sgd")
    trainer = TorchTrainer(model, training, "regression", N_FEATURES, N_TASKS)
    runtime = SiteRuntime("site-a", SiteData(dataset(80, 0), dataset(20, 1)), trainer)
    return runtime, trainer, trainer.initial_parameters(seed=2)


def update_of(runtime: SiteRuntime, params: Parameters, **local: float) -> np.ndarray:
    settings = TrainSettings(local=LocalTraining(**local))  # type: ignore[arg-type]
    reply = runtime.handle(TrainTask("run-1", 1, params, settings))
    assert isinstance(reply, TrainResult), reply
    return reply.update.flatten()


def trainer_update(trainer: TorchTrainer, params: Parameters, **kwargs: float) -> np.ndarray:
    data = dataset(80, 0)
    fitted = trainer.fit(params, data, **kwargs)  # type: ignore[arg-type]
    return fitted.parameters.minus(params).flatten()


@pytest.mark.parametrize("mu", [0.5, 3.0])
def test_a_site_trains_with_the_proximal_mu_its_task_carries(site, mu):
    runtime, trainer, params = site
    sent = update_of(runtime, params, epochs=3, seed=4, proximal_mu=mu)
    want = trainer_update(trainer, params, epochs=3, seed=4, proximal_mu=mu)
    np.testing.assert_array_equal(sent, want)
    without = trainer_update(trainer, params, epochs=3, seed=4, proximal_mu=0.0)
    halved = trainer_update(trainer, params, epochs=3, seed=4, proximal_mu=mu / 2)
    assert np.abs(sent - without).max() > 1e-4 and np.abs(sent - halved).max() > 1e-4


def test_a_site_trains_for_the_epochs_and_with_the_seed_its_task_carries(site):
    runtime, trainer, params = site
    sent = update_of(runtime, params, epochs=2, seed=9)
    np.testing.assert_array_equal(sent, trainer_update(trainer, params, epochs=2, seed=9))
    assert not np.array_equal(sent, trainer_update(trainer, params, epochs=1, seed=9))
    assert not np.array_equal(sent, trainer_update(trainer, params, epochs=2, seed=0))


@pytest.fixture(scope="module")
def small_federation():
    """Two rounds of the demo's sites with a small model (the data are loaded once)."""
    config = dataclasses.replace(
        DEMO_CONFIG,
        rounds=2,
        baselines=False,
        model=ModelConfig(kind="mlp", hidden=(16,), dropout=0.0),
        training=TrainingConfig(local_epochs=2, batch_size=32, learning_rate=0.05, optimizer="sgd"),
    )
    return config, prepare_sites(config)


DP_SGD = {
    "privacy": PrivacyConfig(record_level=True, noise_multiplier=1.0, max_grad_norm=1.0),
    "site_policy": SitePolicyConfig(record_epsilon=1000.0),
    "rounds": 1,  # DP-SGD is the slow part; one round shows it
}


def federated_model(
    small_federation, tmp_path, strategy: StrategyConfig, **changes: object
) -> np.ndarray:
    config, prepared = small_federation
    config = dataclasses.replace(config, strategy=strategy, **changes)  # type: ignore[arg-type]
    return simulate(config, tmp_path, prepared=prepared).parameters.flatten()


@pytest.mark.parametrize("private", [False, True], ids=["plain", "dp-sgd"])
def test_fedprox_reaches_the_sites_through_the_round_loop(small_federation, tmp_path, private):
    """End to end: FedProx with μ = 0 is FedAvg exactly; with μ > 0 it is not, so the μ the
    strategy configures is the μ every site trains with (with DP-SGD too, whose noise is seeded
    in simulation)."""
    changes = DP_SGD if private else {}
    fedavg = federated_model(small_federation, tmp_path / "a", StrategyConfig(), **changes)
    prox_0 = federated_model(
        small_federation,
        tmp_path / "p0",
        StrategyConfig(name="fedprox", proximal_mu=0.0),
        **changes,
    )
    prox = federated_model(
        small_federation,
        tmp_path / "p1",
        StrategyConfig(name="fedprox", proximal_mu=1.0),
        **changes,
    )
    np.testing.assert_array_equal(prox_0, fedavg)
    assert np.abs(prox - fedavg).max() > 1e-4
