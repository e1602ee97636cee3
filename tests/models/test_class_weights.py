"""Balanced class weights: the weights, the weighted loss on both label layouts, the effect on
a rare outcome, and their refusal under record-level DP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from fedpharma.core.config import ModelConfig, TrainingConfig, config_from_dict
from fedpharma.core.dataset import Dataset
from fedpharma.core.errors import ConfigError
from fedpharma.evaluation.metrics import compute_metrics
from fedpharma.models.batches import LabelTriples
from fedpharma.models.loss import balanced_class_weights, masked_multitask_loss
from fedpharma.models.trainer import TorchTrainer


def test_each_class_weighs_half_of_the_loss() -> None:
    labels = np.array([[1, 0], [0, 0], [0, 1], [0, np.nan]], dtype=np.float64)
    weights = balanced_class_weights(labels)
    np.testing.assert_allclose(weights[:, 0], [4 / 6, 4 / 2])
    np.testing.assert_allclose(weights[:, 1], [3 / 4, 3 / 2])
    assert (balanced_class_weights(np.zeros((3, 1))) == 1).all()  # one class only: unweighted


def test_the_weighted_loss_is_sklearns_weighted_log_loss_on_both_layouts() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random((40, 1)) < 0.2).astype(np.float32)
    logits = rng.normal(size=(40, 1)).astype(np.float32)
    weights = balanced_class_weights(labels)
    dense = masked_multitask_loss(
        torch.from_numpy(logits),
        torch.from_numpy(labels),
        "classification",
        torch.from_numpy(weights),
    )
    sample_weight = np.where(labels[:, 0] == 1, weights[1, 0], weights[0, 0])
    probabilities = 1 / (1 + np.exp(-logits[:, 0].astype(np.float64)))
    expected = log_loss(labels[:, 0], probabilities, sample_weight=sample_weight)
    # mean over entries (not over weights): the weights average to 1 on the site's labels
    assert float(dense) == pytest.approx(expected * sample_weight.mean(), rel=1e-5)
    triples = LabelTriples(
        torch.arange(40), torch.zeros(40, dtype=torch.long), torch.from_numpy(labels[:, 0])
    )
    sparse = masked_multitask_loss(
        torch.from_numpy(logits), triples, "classification", torch.from_numpy(weights)
    )
    assert float(sparse) == pytest.approx(float(dense), rel=1e-6)


def test_balanced_weights_find_more_of_a_rare_outcome_at_the_threshold() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 4)).astype(np.float32)
    y = (x[:, 0] + 0.8 * rng.normal(size=600) > 1.9).astype(np.float32)[:, None]  # ~5 % positive
    data = Dataset(x, y, "classification", ("y",), np.zeros(600, dtype=np.int64))
    sensitivity = {}
    for weighting in ("none", "balanced"):
        training = TrainingConfig(learning_rate=0.05, class_weight=weighting)
        trainer = TorchTrainer(ModelConfig(kind="linear"), training, "classification", 4, 1)
        fitted = trainer.fit(trainer.initial_parameters(0), data, epochs=20, seed=0)
        predicted = trainer.predict(fitted.parameters, data)
        sensitivity[weighting] = compute_metrics("classification", y, predicted)["sensitivity"]
    assert sensitivity["balanced"] > sensitivity["none"] + 0.2


def test_balanced_weights_are_refused_under_record_level_dp() -> None:
    with pytest.raises(ConfigError, match="class_weight"):
        config_from_dict(
            {
                "training": {"class_weight": "balanced"},
                "privacy": {"record_level": True, "noise_multiplier": 1.0},
            }
        )
