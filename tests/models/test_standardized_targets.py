"""A trainer with standardized regression targets learns (y − center) / scale and answers in label
units; folding the mapping into the output layer gives the same answers without it."""

from __future__ import annotations

import dataclasses

import numpy as np

from fedpharma.core.config import ModelConfig, TrainingConfig
from fedpharma.core.dataset import Dataset, TargetScaling
from fedpharma.models.output import fold_target_scaling
from fedpharma.models.trainer import TorchTrainer

TARGETS = TargetScaling((150.0, -3.0), (75.0, 0.5))


def _data() -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = np.column_stack([150 + 75 * x[:, 0], -3 + 0.5 * x[:, 1]]).astype(np.float32)
    y[::7, 1] = np.nan  # a missing label stays missing
    return Dataset(x, y, "regression", ("a", "b"), np.zeros(120, dtype=np.int64))


def _trainer(targets: TargetScaling | None) -> TorchTrainer:
    model = ModelConfig(kind="mlp", hidden=(8,), dropout=0.0)
    return TorchTrainer(
        model, TrainingConfig(learning_rate=0.01), "regression", 4, 2, None, targets
    )


def test_training_sees_standardized_labels_and_predictions_come_back_in_label_units() -> None:
    data = _data()
    scaled, plain = _trainer(TARGETS), _trainer(None)
    start = plain.initial_parameters(1)
    standardized = dataclasses.replace(data, labels=TARGETS.standardize(data.labels))
    assert np.isnan(standardized.labels[0, 1])
    fitted = scaled.fit(start, data, epochs=2, seed=5)
    twin = plain.fit(start, standardized, epochs=2, seed=5)
    for mine, theirs in zip(fitted.parameters.arrays, twin.parameters.arrays, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert fitted.train_loss == twin.train_loss  # in standardized units
    raw = plain.predict(fitted.parameters, data)
    expected = np.array([150.0, -3.0]) + np.array([75.0, 0.5]) * raw
    np.testing.assert_allclose(scaled.predict(fitted.parameters, data), expected, rtol=1e-5)


def test_the_mapping_folded_into_the_output_layer_gives_the_same_predictions() -> None:
    data = _data()
    scaled, plain = _trainer(TARGETS), _trainer(None)
    params = scaled.fit(plain.initial_parameters(2), data, epochs=3, seed=1).parameters
    np.testing.assert_allclose(
        plain.predict(fold_target_scaling(params, TARGETS), data),
        scaled.predict(params, data),
        rtol=1e-5,
        atol=1e-3,
    )


def test_a_classification_trainer_ignores_target_scaling() -> None:
    model = ModelConfig(kind="linear")
    trainer = TorchTrainer(model, TrainingConfig(), "classification", 4, 2, None, TARGETS)
    assert trainer.targets is None
