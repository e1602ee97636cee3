"""A malicious coordinator for the DP attack tests.

It reaches real :class:`~fedpharma.site.runtime.SiteRuntime` objects only as a deployed
coordinator does: tasks encoded by the wire codec, the site's bytes decoded back. It knows
everything a coordinator knows (every seed and setting it sent, every model) and, as DP's
adversary may, every record of the site but the one it attacks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedpharma.core.config import ModelConfig, SitePolicyConfig, TrainingConfig
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import EvaluateResult, Reply, Task, TrainResult, TrainTask
from fedpharma.core.protocol.codec import decode_message, encode_message
from fedpharma.models.dpsgd import DPSGDTrainer
from fedpharma.models.trainer import TorchTrainer
from fedpharma.site.policy import SitePolicy
from fedpharma.site.runtime import SiteRuntime

N_FEATURES = 4
MODEL = ModelConfig(kind="mlp", hidden=(16,), dropout=0.0)
TRAINING = TrainingConfig(batch_size=16, learning_rate=0.05, optimizer="sgd")


def records(n: int, seed: int = 0) -> Dataset:
    """n regression records; the last one an outlier (the attack's target record)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, N_FEATURES))
    labels = features @ np.array([[1.0], [-2.0], [0.5], [0.0]]) + 0.1 * rng.normal(size=(n, 1))
    features[-1], labels[-1] = 4.0, -30.0
    return Dataset(
        features=features.astype(np.float32),
        labels=labels.astype(np.float32),
        task="regression",
        task_names=("y",),
        groups=np.arange(n),
    )


def private_trainer(*, secure_mode: bool) -> DPSGDTrainer:
    return DPSGDTrainer(
        MODEL,
        TRAINING,
        "regression",
        N_FEATURES,
        1,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        secure_mode=secure_mode,
    )


def plain_trainer() -> TorchTrainer:
    return TorchTrainer(MODEL, TRAINING, "regression", N_FEATURES, 1)


def hospital(
    folder: Path,
    data: Dataset,
    *,
    secure_mode: bool = True,
    policy: SitePolicyConfig | None = None,
) -> SiteRuntime:
    """A site as deployment builds it (OS-CSPRNG noise), or with ``secure_mode=False`` the
    weakened build whose DP-SGD noise is a function of the task's seed."""
    config = policy or SitePolicyConfig(record_epsilon=1e6, site_epsilon=1e6)
    return SiteRuntime(
        "hospital",
        SiteData(data, data),
        plain_trainer(),
        policy=SitePolicy(config, folder / "privacy.sqlite"),
        private_trainer=private_trainer(secure_mode=secure_mode),
    )


class MaliciousCoordinator:
    """Sends tasks through the real codec and keeps what it sent."""

    def __init__(self) -> None:
        self.sent: list[Task] = []

    def send(self, site: SiteRuntime, task: Task) -> Reply:
        self.sent.append(task)
        answer = b"".join(bytes(part) for part in site.handle_encoded(encode_message(task)))
        reply = decode_message(answer)
        assert not isinstance(reply, Task)
        return reply

    def membership_by_seed_replay(
        self, reply: TrainResult, task: TrainTask, known: Dataset, with_target: Dataset
    ) -> bool | None:
        """Replay DP-SGD with the seed it sent on both candidate datasets; the one whose update
        matches the reply exactly is the site's. None when neither does (it cannot tell)."""
        assert task.settings.record_dp is not None
        replica = private_trainer(secure_mode=False)  # the recipe, run with the sent seed
        for member, data in ((True, with_target), (False, known)):
            replayed = replica.fit(
                task.parameters,
                data,
                epochs=task.settings.local.epochs,
                seed=task.settings.local.seed,
                noise_multiplier=task.settings.record_dp.noise_multiplier,
                max_grad_norm=task.settings.record_dp.max_grad_norm,
            )
            update = replayed.parameters.minus(task.parameters).flatten()
            if np.allclose(update, reply.update.flatten(), rtol=0, atol=1e-6):
                return member
        return None


def constant_model(value: float) -> Parameters:
    """A "model" that predicts ``value`` for every record: zero weights, output bias = value."""
    zeros = plain_trainer().initial_parameters(0)
    arrays = [np.zeros_like(a) for a in zeros.arrays]
    arrays[zeros.names.index("head.bias")] += value
    return Parameters(zeros.names, tuple(arrays))


def label_mean_and_std(at_zero: EvaluateResult, at_one: EvaluateResult) -> tuple[float, float]:
    """From the RMSEs of constant predictions 0 and 1: RMSE(c)² = var + (mean − c)²."""
    zero, one = at_zero.metrics["rmse"] ** 2, at_one.metrics["rmse"] ** 2
    mean = (zero - one + 1) / 2
    return mean, float(np.sqrt(zero - mean**2))
