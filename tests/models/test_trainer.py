"""TorchTrainer: determinism, learning on synthetic linear problems, FedProx, prediction."""

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fedpharma.core.config import ModelConfig, TrainingConfig
from fedpharma.core.dataset import Dataset, Objective
from fedpharma.core.errors import DataError
from fedpharma.models.base import Trainer
from fedpharma.models.trainer import TorchTrainer

N_FEATURES, N_TASKS = 8, 2
MLP = ModelConfig(kind="mlp", hidden=(32, 16), dropout=0.2)
LINEAR = ModelConfig(kind="linear")
TRAINING = TrainingConfig(batch_size=32, learning_rate=0.01, optimizer="adam")


def synthetic(task: Objective, n: int, seed: int, missing: float = 0.3) -> Dataset:
    """A linear problem: y = Xw (+ noise) per task, or Bernoulli(sigmoid(3·Xw)); some labels NaN.

    The weights come from a fixed generator so that train and test sets share them.
    """
    weights = np.random.default_rng(1234).normal(size=(N_FEATURES, N_TASKS))
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, N_FEATURES))
    signal = features @ weights
    if task == "regression":
        labels = signal + 0.1 * rng.normal(size=signal.shape)
    else:
        labels = (rng.random(signal.shape) < 1 / (1 + np.exp(-3 * signal))).astype(np.float64)
    labels[rng.random(labels.shape) < missing] = np.nan
    return Dataset(
        features=features.astype(np.float32),
        labels=labels.astype(np.float32),
        task=task,
        task_names=tuple(f"task{i}" for i in range(N_TASKS)),
        groups=np.arange(n, dtype=np.int64),
    )


@pytest.fixture(autouse=True)
def single_threaded_torch() -> Iterator[None]:
    """One intra-op thread while a test runs: these tiny models only lose from parallelism (and
    on a small shared CI box, spinning OpenMP threads slow each step by an order of magnitude)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trainer(
    task: Objective, model: ModelConfig = MLP, training: TrainingConfig = TRAINING
) -> TorchTrainer:
    return TorchTrainer(model, training, task, N_FEATURES, N_TASKS)


def test_fit_is_deterministic_given_seed_and_leaves_global_rng_alone() -> None:
    t: Trainer = trainer("regression")  # also checks TorchTrainer against the Trainer protocol
    data = synthetic("regression", 200, seed=0)
    start = t.initial_parameters(seed=0)
    rng_state = torch.get_rng_state()
    a = t.fit(start, data, epochs=2, seed=7)
    b = t.fit(start, data, epochs=2, seed=7)
    c = t.fit(start, data, epochs=2, seed=8)
    assert torch.equal(rng_state, torch.get_rng_state())
    np.testing.assert_array_equal(a.parameters.flatten(), b.parameters.flatten())
    assert a.train_loss == b.train_loss
    assert not np.array_equal(a.parameters.flatten(), c.parameters.flatten())
    assert a.parameters.names == start.names
    assert a.n_examples == 200
    assert a.seconds > 0


def test_initial_parameters_depend_on_seed() -> None:
    t = trainer("classification")
    np.testing.assert_array_equal(
        t.initial_parameters(3).flatten(), t.initial_parameters(3).flatten()
    )
    assert not np.array_equal(t.initial_parameters(3).flatten(), t.initial_parameters(4).flatten())


def test_training_loss_drops() -> None:
    t = trainer("classification")
    data = synthetic("classification", 300, seed=0)
    start = t.initial_parameters(seed=0)
    first = t.fit(start, data, epochs=1, seed=0)
    later = t.fit(first.parameters, data, epochs=10, seed=1)
    assert later.train_loss < 0.7 * first.train_loss


@pytest.mark.parametrize(
    ("model", "max_relative_rmse"), [(LINEAR, 0.1), (MLP, 0.3)], ids=["linear", "mlp"]
)
def test_learns_a_linear_regression(model: ModelConfig, max_relative_rmse: float) -> None:
    t = trainer("regression", model, TrainingConfig(batch_size=32, learning_rate=0.02))
    train, test = synthetic("regression", 600, seed=0), synthetic("regression", 300, seed=1)
    fitted = t.fit(t.initial_parameters(seed=0), train, epochs=30, seed=0)
    predicted = t.predict(fitted.parameters, test)
    observed = ~np.isnan(test.labels)
    rmse = np.sqrt(np.mean((predicted[observed] - test.labels[observed]) ** 2))
    assert rmse < max_relative_rmse * np.nanstd(test.labels)


@pytest.mark.parametrize("model", [LINEAR, MLP], ids=["linear", "mlp"])
def test_learns_a_linear_classification(model: ModelConfig) -> None:
    t = trainer("classification", model)
    train, test = synthetic("classification", 600, seed=0), synthetic("classification", 400, seed=1)
    fitted = t.fit(t.initial_parameters(seed=0), train, epochs=15, seed=0)
    probabilities = t.predict(fitted.parameters, test)
    assert probabilities.shape == test.labels.shape
    assert probabilities.dtype == np.float32
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    for column in range(N_TASKS):
        observed = ~np.isnan(test.labels[:, column])
        auc = roc_auc_score(test.labels[observed, column], probabilities[observed, column])
        assert auc > 0.9


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fedprox_with_huge_mu_stays_near_the_global_weights(optimizer: str) -> None:
    t = trainer(
        "regression", MLP, TrainingConfig(batch_size=16, learning_rate=0.01, optimizer=optimizer)
    )
    data = synthetic("regression", 200, seed=0)
    start = t.initial_parameters(seed=0)
    free = t.fit(start, data, epochs=3, seed=0)
    # SGD: lr·μ = 1 pulls w back onto wᵗ every step; Adam: steps stay ~lr but oscillate about wᵗ.
    prox = t.fit(start, data, epochs=3, seed=0, proximal_mu=100.0)
    drift_free = np.linalg.norm(free.parameters.flatten() - start.flatten())
    drift_prox = np.linalg.norm(prox.parameters.flatten() - start.flatten())
    assert drift_prox < 0.1 * drift_free


def test_predict_is_deterministic_and_ignores_dropout() -> None:
    t = trainer("regression", ModelConfig(hidden=(16,), dropout=0.5))
    data = synthetic("regression", 50, seed=0)
    params = t.initial_parameters(seed=0)
    np.testing.assert_array_equal(t.predict(params, data), t.predict(params, data))
    assert t.predict(params, data.subset(np.arange(0))).shape == (0, N_TASKS)


def test_read_only_arrays_train_without_warnings(recwarn: pytest.WarningsRecorder) -> None:
    data = synthetic("regression", 40, seed=0)
    data.features.flags.writeable = False
    data.labels.flags.writeable = False
    t = trainer("regression")
    t.fit(t.initial_parameters(0), data, epochs=1, seed=0)
    assert not [w for w in recwarn if "writable" in str(w.message)]


def test_rejects_mismatched_or_empty_data() -> None:
    t = trainer("regression")
    params = t.initial_parameters(0)
    with pytest.raises(DataError, match="classification dataset"):
        t.fit(params, synthetic("classification", 10, seed=0), epochs=1, seed=0)
    wrong_width = TorchTrainer(MLP, TRAINING, "regression", N_FEATURES + 1, N_TASKS)
    with pytest.raises(DataError, match="expects 9"):
        wrong_width.predict(wrong_width.initial_parameters(0), synthetic("regression", 10, seed=0))
    with pytest.raises(DataError, match="no rows"):
        t.fit(params, synthetic("regression", 10, seed=0).subset(np.arange(0)), epochs=1, seed=0)
    with pytest.raises(ValueError, match="epochs"):
        t.fit(params, synthetic("regression", 10, seed=0), epochs=0, seed=0)
