"""Why Tox21 ranked below chance under record-level DP, and the guard against it.

Under DP the sites release no label statistics, so without a public prior a classification head
starts at p = 0.5 while Tox21's assays are a few percent positive. DP-SGD's few clipped, noisy
steps then reach the low base rate fastest by pushing the head's weights against the trunk's
non-negative (ReLU) activations: the model scores a molecule by −Σh, and in Tox21 the actives
are the molecules with the larger activations (bigger, more lipophilic), so the ranking ends up
*below* chance (mean ROC-AUC 0.435 at ε = 1, NR-AR 0.17 — the per-task AUC of −Σh at
initialisation). Started at a public prior the same DP-SGD ranks above chance.
"""

import numpy as np
import pytest

from fedpharma.core.config import ModelConfig, TrainingConfig
from fedpharma.core.dataset import Dataset
from fedpharma.evaluation.metrics import roc_auc
from fedpharma.models.dpsgd import DPSGDTrainer
from fedpharma.models.output import calibrate_output_layer

POSITIVE_RATE = 0.05


def rare_positives(n: int, seed: int) -> Dataset:
    """5 % positives whose features are shifted up: the actives have the larger activations."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < POSITIVE_RATE).astype(np.float32)
    features = rng.normal(size=(n, 8)) + 0.7 * labels[:, None]
    return Dataset(
        features=features.astype(np.float32),
        labels=labels[:, None],
        task="classification",
        task_names=("assay",),
        groups=np.arange(n, dtype=np.int64),
    )


def dp_sgd_auc(*, prior: bool, seed: int) -> float:
    trainer = DPSGDTrainer(
        ModelConfig(kind="mlp", hidden=(32,), dropout=0.0),
        TrainingConfig(batch_size=64, learning_rate=1e-3),
        "classification",
        8,
        1,
        noise_multiplier=0.5,
        max_grad_norm=1.0,
        secure_mode=False,
    )
    params = trainer.initial_parameters(seed)
    if prior:
        params = calibrate_output_layer(
            params, "classification", np.array([POSITIVE_RATE]), np.array([1.0])
        )
    params = trainer.fit(params, rare_positives(2000, 0), epochs=3, seed=seed).parameters
    test = rare_positives(2000, 1)
    return roc_auc(test.labels[:, 0].astype(np.float64), trainer.predict(params, test)[:, 0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dp_sgd_from_an_uncalibrated_head_ranks_below_chance(seed):
    """The defect's mechanism, reproduced on every seed (the weakened twin of the next test)."""
    assert dp_sgd_auc(prior=False, seed=seed) < 0.5


def test_dp_sgd_from_a_public_prior_ranks_above_chance():
    aucs = [dp_sgd_auc(prior=True, seed=seed) for seed in (0, 1, 2)]
    assert min(aucs) > 0.5
    assert np.mean(aucs) > 0.6
