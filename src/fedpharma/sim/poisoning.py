"""A poisoning site for robustness experiments: a real site runtime whose training is subverted.

The site decodes its task, trains on its data and answers through the real codec like any
other; only what it trains on, or what it sends, is poisoned:

- ``"scale"``: its honest update multiplied by ``factor`` (model replacement, Bagdasaryan et al.
  2020, §3.3: boosting lets one update outweigh the others in the mean);
- ``"sign_flip"``: its honest update multiplied by −``factor`` (the sign-flipping attack of
  Damaskinos et al. 2018 and Li et al. 2019, RSA);
- ``"label_flip"``: trains on flipped labels, 1 − y for classification, −y for regression
  (Fang et al. 2020, §5), and sends the update as trained.

It is a simulation tool (``benchmarks/robustness.py``, ``tests/attacks``): nothing in a
deployment builds one.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedpharma.core.dataset import Dataset, SparseMatrix
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import SecureReply, TrainResult, TrainTask
from fedpharma.site.runtime import SiteRuntime

ATTACKS = ("scale", "sign_flip", "label_flip")


def flipped_labels(data: Dataset) -> Dataset:
    """``data`` with every observed label flipped (missing labels stay missing)."""
    labels = data.labels
    values = np.asarray(labels.values if isinstance(labels, SparseMatrix) else labels, np.float32)
    flipped = 1.0 - values if data.task == "classification" else -values
    if isinstance(labels, SparseMatrix):
        return dataclasses.replace(data, labels=dataclasses.replace(labels, values=flipped))
    return dataclasses.replace(data, labels=flipped)


class PoisoningSite(SiteRuntime):
    """A :class:`~fedpharma.site.runtime.SiteRuntime` that runs ``attack`` (one of
    :data:`ATTACKS`) on every train task."""

    def __init__(self, runtime: SiteRuntime, attack: str, factor: float = 10.0) -> None:
        if attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}")
        data = runtime.data
        if attack == "label_flip":
            data = dataclasses.replace(data, train=flipped_labels(data.train))
        super().__init__(
            runtime.name,
            data,
            runtime.trainer,
            policy=runtime.policy,
            private_trainer=runtime.private_trainer,
            noise_source=runtime.dp.noise_source,
            secure=runtime.secure,
            preprocessing=runtime.preprocessing,
        )
        self.attack = attack
        self.factor = factor

    def _train(self, task: TrainTask) -> TrainResult | SecureReply:
        reply = super()._train(task)
        if self.attack == "label_flip" or not isinstance(reply, TrainResult):
            return reply
        scale = self.factor if self.attack == "scale" else -self.factor
        update = reply.update
        poisoned = Parameters(
            update.names, tuple((a * scale).astype(a.dtype) for a in update.arrays)
        )
        return dataclasses.replace(reply, update=poisoned)


def poison(
    runtimes: dict[str, SiteRuntime], site: str, attack: str, factor: float = 10.0
) -> dict[str, SiteRuntime]:
    """``runtimes`` with ``site`` replaced by a :class:`PoisoningSite` running ``attack``."""
    return runtimes | {site: PoisoningSite(runtimes[site], attack, factor)}
