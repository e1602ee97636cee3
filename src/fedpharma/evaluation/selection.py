"""Model selection by a validation metric: one rule for every model kind.

A model is checkpointed after every step (a federated round, or the same ``local_epochs``
epochs of a local or centralized model); the selected checkpoint is the one with the best
validation score (the earliest on ties), and training may stop once ``patience`` checkpoints
in a row have not improved on it — early stopping as in Prechelt 1998, "Early Stopping — But
When?" (Neural Networks: Tricks of the Trade, LNCS 1524). The federated, local-only and
centralized models of a run all go through this class with the same metric and patience, so
none of them is favoured by its number of epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

VALIDATION_PREFIX = "validation_"
"""Metrics a site computes on its validation fold carry this prefix beside its test metrics."""


@dataclass(frozen=True)
class Checkpoint(Generic[T]):
    """The selected step, its validation score and the model at that step."""

    step: int
    score: float
    model: T


class BestCheckpoint(Generic[T]):
    """Keeps the checkpoint with the best validation score seen so far.

    ``higher_is_better`` gives the direction; a NaN or infinite score never wins (a diverged
    model is not selected). ``patience`` (0: never) is how many checkpoints in a row without
    improvement make :attr:`exhausted` true.
    """

    def __init__(self, higher_is_better: bool, patience: int = 0) -> None:
        if patience < 0:
            raise ValueError(f"patience must be ≥ 0, got {patience}")
        self.higher_is_better = higher_is_better
        self.patience = patience
        self.best: Checkpoint[T] | None = None
        self._since_best = 0

    def offer(self, step: int, score: float | None, model: T) -> bool:
        """Record step ``step``'s validation ``score``; True if it is the new best."""
        if score is not None and math.isfinite(score) and self._improves(score):
            self.best = Checkpoint(step, score, model)
            self._since_best = 0
            return True
        self._since_best += 1
        return False

    @property
    def exhausted(self) -> bool:
        """True once ``patience`` checkpoints in a row have not improved on the best."""
        return self.patience > 0 and self.best is not None and self._since_best >= self.patience

    def _improves(self, score: float) -> bool:
        if self.best is None:
            return True
        return score > self.best.score if self.higher_is_better else score < self.best.score
