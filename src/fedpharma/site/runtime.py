"""A site answers the coordinator's tasks using data that never leaves it.

The runtime decodes a task, checks it, trains or evaluates with its :class:`Trainer`, and
returns only the update Δ_k = w_k − w, the example count n_k and aggregate metrics. No record,
label or prediction leaves the site.
"""

from __future__ import annotations

import math

from fedpharma.data.dataset import SiteData
from fedpharma.errors import FedPharmaError, ProtocolError
from fedpharma.evaluation.metrics import compute_metrics
from fedpharma.models.base import Trainer
from fedpharma.protocol import (
    EvaluateResult,
    EvaluateTask,
    Refusal,
    Reply,
    Task,
    TrainResult,
    TrainTask,
)
from fedpharma.protocol.codec import decode_message, encode_message
from fedpharma.protocol.messages import Scalar


class SiteRuntime:
    def __init__(self, name: str, data: SiteData, trainer: Trainer) -> None:
        self.name = name
        self.data = data
        self.trainer = trainer

    def handle_bytes(self, request: bytes) -> bytes:
        """Answer an encoded task with an encoded reply; a malformed task gets a Refusal."""
        try:
            task = decode_message(request)
        except ProtocolError as exc:
            return encode_message(Refusal("", 0, self.name, "invalid-task", str(exc)))
        if not isinstance(task, TrainTask | EvaluateTask):
            refusal = Refusal("", 0, self.name, "invalid-task", "a site only accepts tasks")
            return encode_message(refusal)
        return encode_message(self.handle(task))

    def handle(self, task: Task) -> Reply:
        try:
            if isinstance(task, TrainTask):
                return self._train(task)
            return self._evaluate(task)
        except FedPharmaError as exc:
            return Refusal(task.run_id, task.round, self.name, "error", str(exc))

    def _train(self, task: TrainTask) -> TrainResult:
        epochs = _int_setting(task.config, "epochs", default=1, minimum=1)
        seed = _int_setting(task.config, "seed", default=0, minimum=0)
        mu = _float_setting(task.config, "proximal_mu", default=0.0)
        outcome = self.trainer.fit(
            task.parameters, self.data.train, epochs=epochs, seed=seed, proximal_mu=mu
        )
        update = task.parameters.unflatten(outcome.parameters.flatten() - task.parameters.flatten())
        metrics = _finite({"train_loss": outcome.train_loss})
        return TrainResult(task.run_id, task.round, self.name, update, outcome.n_examples, metrics)

    def _evaluate(self, task: EvaluateTask) -> EvaluateResult:
        test = self.data.test
        predictions = self.trainer.predict(task.parameters, test)
        metrics = _finite(compute_metrics(test.task, test.labels, predictions))
        return EvaluateResult(task.run_id, task.round, self.name, len(test), metrics)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics that exist (an AUC is undefined on one class); the wire carries finite numbers."""
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


def _int_setting(config: dict[str, Scalar], key: str, *, default: int, minimum: int) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ProtocolError(f"task setting {key!r} must be an integer ≥ {minimum}, got {value!r}")
    return value


def _float_setting(config: dict[str, Scalar], key: str, *, default: float) -> float:
    value = config.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise ProtocolError(f"task setting {key!r} must be a number ≥ 0, got {value!r}")
    return float(value)
