"""FedProx's local step, checked against the formula rather than against "stays closer".

Li et al. 2020 (§3, Eq. 2) minimise F_k(w) + (μ/2)‖w − wᵗ‖²: with SGD each step is
w ← w − η(∇F_k(w) + μ(w − wᵗ)). The trainers are compared, step for step, with that update
computed here independently, so a proximal term of another size (μ/2, 2μ), sign or anchor fails.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from fedpharma.core.config import ModelConfig, TrainingConfig
from fedpharma.core.dataset import Dataset
from fedpharma.core.params import Parameters
from fedpharma.models.dpsgd import DPSGDTrainer
from fedpharma.models.trainer import TorchTrainer

N, N_FEATURES, N_TASKS = 40, 5, 2
LINEAR = ModelConfig(kind="linear")
LEARNING_RATE = 0.1
# One minibatch holds every row, so an epoch is one full-batch step whatever the row order.
FULL_BATCH_SGD = TrainingConfig(batch_size=N, learning_rate=LEARNING_RATE, optimizer="sgd")


@pytest.fixture(autouse=True)
def single_threaded_torch() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def regression(labelled: bool = True) -> Dataset:
    rng = np.random.default_rng(5)
    features = rng.normal(size=(N, N_FEATURES))
    labels = features @ rng.normal(size=(N_FEATURES, N_TASKS)) + 0.3
    labels[rng.random(labels.shape) < 0.2] = np.nan
    if not labelled:
        labels[:] = np.nan
    return Dataset(
        features=features.astype(np.float32),
        labels=labels.astype(np.float32),
        task="regression",
        task_names=("a", "b"),
        groups=np.arange(N, dtype=np.int64),
    )


def start() -> Parameters:
    rng = np.random.default_rng(9)
    return Parameters.from_dict(
        {
            "head.weight": rng.normal(size=(N_TASKS, N_FEATURES)),
            "head.bias": rng.normal(size=N_TASKS),
        }
    )


def fedprox_sgd(data: Dataset, w0: Parameters, mu: float, steps: int) -> np.ndarray:
    """Full-batch SGD on the masked mean squared error plus (μ/2)‖w − w0‖², in float64."""
    x, y = data.features.astype(np.float64), data.labels.astype(np.float64)
    observed = ~np.isnan(y)
    weight = w0.to_dict()["head.weight"].astype(np.float64)
    bias = w0.to_dict()["head.bias"].astype(np.float64)
    anchor_w, anchor_b = weight.copy(), bias.copy()
    for _ in range(steps):
        residual = np.where(observed, x @ weight.T + bias - np.nan_to_num(y), 0.0)
        scale = 2.0 / observed.sum()
        grad_w = scale * residual.T @ x + mu * (weight - anchor_w)
        grad_b = scale * residual.sum(axis=0) + mu * (bias - anchor_b)
        weight, bias = weight - LEARNING_RATE * grad_w, bias - LEARNING_RATE * grad_b
    return np.concatenate([weight.ravel(), bias])


@pytest.mark.parametrize("mu", [0.0, 0.5, 2.0])
def test_each_local_step_adds_mu_times_the_distance_to_the_global_weights(mu):
    trainer = TorchTrainer(LINEAR, FULL_BATCH_SGD, "regression", N_FEATURES, N_TASKS)
    data, w0 = regression(), start()
    got = trainer.fit(w0, data, epochs=4, seed=3, proximal_mu=mu).parameters.flatten()
    np.testing.assert_allclose(got, fedprox_sgd(data, w0, mu, steps=4), rtol=1e-5, atol=1e-6)
    if mu > 0:  # the term is large enough here that μ/2 or 2μ would be far outside tolerance
        for wrong in (mu / 2, 2 * mu):
            assert np.abs(got - fedprox_sgd(data, w0, wrong, steps=4)).max() > 1e-3


def test_dp_sgd_adds_the_same_proximal_term_after_its_noise():
    """With no observed label the data gradient is 0, so each DP-SGD step is w ← w − η(ξ_t +
    μ(w − wᵗ)) with ξ_t the Gaussian noise, which depends on the seed only (not on w). Runs of
    one and two steps at μ = 0 reveal ξ₁ and ξ₂; the two-step run at μ must then equal
    w₂ = w₀ − η(ξ₁ + ξ₂) + η²μξ₁."""
    trainer = DPSGDTrainer(
        LINEAR,
        FULL_BATCH_SGD,
        "regression",
        N_FEATURES,
        N_TASKS,
        noise_multiplier=1.0,
        max_grad_norm=float(N),  # noise std σC/(expected batch) = 1 per coordinate
        secure_mode=False,  # the noise must be a function of the seed to be read back
    )
    data, w0 = regression(labelled=False), start()

    def after(epochs: int, mu: float) -> np.ndarray:
        out = trainer.fit(w0, data, epochs=epochs, seed=11, proximal_mu=mu)
        assert out.sampling.steps == epochs  # sampling rate 1: one step per epoch
        return out.parameters.flatten().astype(np.float64)

    origin = w0.flatten()
    noise_1 = (origin - after(1, 0.0)) / LEARNING_RATE
    noise_2 = (origin - after(2, 0.0)) / LEARNING_RATE - noise_1
    assert np.abs(noise_1).max() > 0.5  # there is noise to be pulled back from
    mu = 2.0
    want = origin - LEARNING_RATE * (noise_1 + noise_2) + LEARNING_RATE**2 * mu * noise_1
    np.testing.assert_allclose(after(2, mu), want, rtol=1e-4, atol=1e-5)
    halved = origin - LEARNING_RATE * (noise_1 + noise_2) + LEARNING_RATE**2 * mu / 2 * noise_1
    assert np.abs(after(2, mu) - halved).max() > 1e-2
