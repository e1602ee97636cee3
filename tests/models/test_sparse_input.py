"""Sparse inputs and labels compute what the dense ones do; devices and bf16 precision."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fedpharma.core.config import ModelConfig, TrainingConfig
from fedpharma.core.dataset import Dataset, SparseMatrix
from fedpharma.core.errors import ConfigError
from fedpharma.models.batches import TensorData
from fedpharma.models.device import resolve_device
from fedpharma.models.dpsgd import DPSGDTrainer
from fedpharma.models.loss import masked_multitask_loss
from fedpharma.models.networks import build_model
from fedpharma.models.parameters import get_parameters
from fedpharma.models.trainer import TorchTrainer

N_ROWS, N_FEATURES, N_TASKS = 120, 300, 5
TRAINING = TrainingConfig(batch_size=16, learning_rate=0.01)


def _csr(dense: np.ndarray, fill: float = 0.0) -> SparseMatrix:
    present = ~np.isnan(dense) if np.isnan(fill) else dense != 0
    rows, cols = np.nonzero(present)
    indptr = np.zeros(dense.shape[0] + 1, np.int64)
    np.cumsum(present.sum(axis=1), out=indptr[1:])
    return SparseMatrix(indptr, cols.astype(np.int32), dense[rows, cols], dense.shape[1], fill)


def _data(task: str = "regression", seed: int = 0) -> tuple[Dataset, Dataset]:
    """The same problem twice: dense, and as CSR counts / label triples."""
    rng = np.random.default_rng(seed)
    counts = (rng.random((N_ROWS, N_FEATURES)) < 0.05) * rng.integers(1, 4, (N_ROWS, N_FEATURES))
    features = counts.astype(np.float32)
    signal = features @ rng.normal(size=(N_FEATURES, N_TASKS))
    labels = signal if task == "regression" else (signal > 0).astype(np.float64)
    labels[rng.random(labels.shape) < 0.7] = np.nan
    labels = labels.astype(np.float32)
    names = tuple(f"t{i}" for i in range(N_TASKS))
    groups = np.arange(N_ROWS, dtype=np.int64)
    dense = Dataset(features, labels, task, names, groups)  # type: ignore[arg-type]
    sparse_features = _csr(features)
    sparse_features = dataclasses.replace(
        sparse_features, values=sparse_features.values.astype(np.uint16)
    )
    sparse = Dataset(sparse_features, _csr(labels, np.nan), task, names, groups)  # type: ignore[arg-type]
    return dense, sparse


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_the_sparse_first_layer_computes_the_dense_layer(kind: str) -> None:
    dense, sparse = _data()
    network = build_model(ModelConfig(kind=kind, hidden=(32, 8), dropout=0.0), N_FEATURES, 5)
    rows = torch.tensor([3, 0, 7, 7, 119])
    batch = TensorData(sparse.features, sparse.labels, torch.device("cpu")).features(rows)
    with torch.no_grad():
        expected = network(torch.from_numpy(dense.features[rows.numpy()]))
        got = network(batch)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_parameter_names_and_shapes_are_those_of_the_dense_network() -> None:
    params = get_parameters(build_model(ModelConfig(hidden=(16,)), N_FEATURES, N_TASKS))
    names = ("trunk.hidden1.weight", "trunk.hidden1.bias", "head.weight", "head.bias")
    assert params.names == names
    assert [a.shape for a in params.arrays] == [(16, N_FEATURES), (16,), (N_TASKS, 16), (N_TASKS,)]
    assert all(a.flags.c_contiguous for a in params.arrays)


def test_the_loss_from_label_triples_is_the_masked_dense_loss() -> None:
    dense, sparse = _data()
    rows = torch.arange(40)
    outputs = torch.randn(40, N_TASKS)
    triples = TensorData(sparse.features, sparse.labels, torch.device("cpu")).labels(rows)
    dense_labels = torch.from_numpy(dense.labels[:40])
    for task in ("regression", "classification"):
        targets = dense_labels if task == "regression" else (dense_labels > 0).float()
        targets = torch.where(torch.isnan(dense_labels), dense_labels, targets)
        if task == "classification":
            triples = triples._replace(values=(triples.values > 0).float())
        torch.testing.assert_close(
            masked_multitask_loss(outputs, triples, task),  # type: ignore[arg-type]
            masked_multitask_loss(outputs, targets, task),  # type: ignore[arg-type]
        )


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_training_on_sparse_data_gives_the_dense_model(task: str) -> None:
    dense, sparse = _data(task)
    trainer = TorchTrainer(ModelConfig(hidden=(32,)), TRAINING, task, N_FEATURES, N_TASKS)  # type: ignore[arg-type]
    start = trainer.initial_parameters(seed=1)
    from_dense = trainer.fit(start, dense, epochs=2, seed=5)
    from_sparse = trainer.fit(start, sparse, epochs=2, seed=5)
    for a, b in zip(from_dense.parameters.arrays, from_sparse.parameters.arrays, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert from_sparse.train_loss == pytest.approx(from_dense.train_loss, rel=1e-4)
    np.testing.assert_allclose(
        trainer.predict(from_sparse.parameters, sparse),
        trainer.predict(from_sparse.parameters, dense),
        rtol=1e-5,
        atol=1e-6,
    )


def test_dp_sgd_densifies_only_minibatches_and_gives_the_dense_result() -> None:
    dense, sparse = _data()
    dp = DPSGDTrainer(
        ModelConfig(hidden=(16,)),
        TRAINING,
        "regression",
        N_FEATURES,
        N_TASKS,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        secure_mode=False,
    )
    start = dp.initial_parameters(seed=0)
    a = dp.fit(start, dense, epochs=1, seed=3)
    b = dp.fit(start, sparse, epochs=1, seed=3)
    assert a.sampling == b.sampling
    for x, y in zip(a.parameters.arrays, b.parameters.arrays, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_bf16_precision_trains_on_the_cpu_and_keeps_float32_parameters() -> None:
    _, sparse = _data()
    bf16 = dataclasses.replace(TRAINING, precision="bf16")
    trainer = TorchTrainer(ModelConfig(hidden=(32,)), bf16, "regression", N_FEATURES, N_TASKS)
    out = trainer.fit(trainer.initial_parameters(seed=0), sparse, epochs=1, seed=0)
    assert np.isfinite(out.train_loss)
    assert all(a.dtype == np.float32 for a in out.parameters.arrays)
    assert trainer.predict(out.parameters, sparse).dtype == np.float32


def test_a_cuda_device_is_refused_with_advice_where_there_is_no_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the refusal is for machines without one")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match='set device = "auto" or "cpu"'):
        resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
def test_training_on_the_gpu_matches_the_cpu() -> None:
    _, sparse = _data()
    results = []
    for device in ("cpu", "cuda"):
        config = dataclasses.replace(TRAINING, device=device)
        trainer = TorchTrainer(ModelConfig(hidden=(32,), dropout=0.0), config, "regression",
                               N_FEATURES, N_TASKS)  # fmt: skip
        results.append(trainer.fit(trainer.initial_parameters(seed=0), sparse, epochs=1, seed=0))
    for a, b in zip(results[0].parameters.arrays, results[1].parameters.arrays, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
