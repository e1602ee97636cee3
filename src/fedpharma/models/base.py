"""What a site runtime needs from a local trainer, stated without importing torch.

:class:`~fedpharma.models.trainer.TorchTrainer` implements :class:`Trainer`; so can any other
trainer (e.g. DP-SGD) that a site plugs in instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fedpharma.core.params import Parameters

if TYPE_CHECKING:
    from fedpharma.core.dataset import Dataset


@dataclass(frozen=True)
class FitOutput:
    """The result of one call to :meth:`Trainer.fit`.

    ``train_loss`` is the masked data loss (without any proximal term), averaged over the
    observed labels seen in the last epoch; ``seconds`` is wall-clock time of the whole call.
    """

    parameters: Parameters
    n_examples: int
    train_loss: float
    seconds: float


class Trainer(Protocol):
    """Local training and prediction for one model architecture on one site's data."""

    def initial_parameters(self, seed: int) -> Parameters:
        """Freshly initialised parameters, a function of ``seed`` only."""
        ...

    def fit(
        self, params: Parameters, data: Dataset, *, epochs: int, seed: int, proximal_mu: float = 0.0
    ) -> FitOutput:
        """Train from ``params`` on ``data`` for ``epochs`` epochs; deterministic given ``seed``."""
        ...

    def predict(self, params: Parameters, data: Dataset) -> npt.NDArray[np.float32]:
        """n×t predictions: regression values or class-1 probabilities."""
        ...


@runtime_checkable
class ScaffoldTrainer(Trainer, Protocol):
    """A trainer that can run SCAFFOLD's local steps (Karimireddy et al. 2020, Alg. 1)."""

    def fit(
        self,
        params: Parameters,
        data: Dataset,
        *,
        epochs: int,
        seed: int,
        proximal_mu: float = 0.0,
        correction: Parameters | None = None,
    ) -> FitOutput:
        """:meth:`Trainer.fit` with ``correction`` (c − c_i) added to every step's gradient."""
        ...

    def gradient(self, params: Parameters, data: Dataset) -> Parameters:
        """The full gradient of the mean loss on ``data`` at ``params``."""
        ...
