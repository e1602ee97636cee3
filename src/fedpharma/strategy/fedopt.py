"""Adaptive server optimizers: FedAdagrad, FedAdam, FedYogi.

Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR), Algorithm 2: the averaged client
update Δ_t is treated as a pseudo-gradient and fed to an adaptive optimizer on the server. The
maths live in :func:`fedpharma.strategy.aggregate.fedopt_step`. The moments are the strategy's
state, saved with every checkpoint so that a resumed run ends with the same model.
"""

from __future__ import annotations

import numpy as np

from fedpharma.core.errors import DataError
from fedpharma.core.params import Parameters
from fedpharma.strategy.aggregate import MomentState, fedopt_step
from fedpharma.strategy.base import NO_STATE, Strategy

VARIANTS = ("adagrad", "adam", "yogi")
_MOMENTS = ("m", "v")


class FedOpt(Strategy):
    def __init__(
        self,
        *,
        variant: str,
        eta: float = 1e-2,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant, self.eta, self.beta1, self.beta2, self.tau = variant, eta, beta1, beta2, tau
        self.moments: MomentState | None = None

    def aggregate_train(self, rnd: int, parameters: Parameters, mean: Parameters) -> Parameters:
        """One server-optimizer step on Δ̄, averaged in the clear or by secure aggregation."""
        weights = parameters.flatten()
        if self.moments is None:
            self.moments = MomentState.zeros(weights.size, self.tau)
        new, self.moments = fedopt_step(
            weights,
            mean.flatten(),
            self.moments,
            variant=self.variant,
            eta=self.eta,
            beta1=self.beta1,
            beta2=self.beta2,
            tau=self.tau,
        )
        return parameters.unflatten(new)

    def state(self) -> Parameters:
        if self.moments is None:
            return NO_STATE
        return Parameters(_MOMENTS, (self.moments.m, self.moments.v))

    def load_state(self, state: Parameters) -> None:
        if state.names != _MOMENTS:
            raise DataError(
                "the checkpoint holds no server-optimizer moments; a "
                f"Fed{self.variant.capitalize()} run cannot be resumed exactly without them"
            )
        m, v = (np.asarray(a, dtype=np.float64) for a in state.arrays)
        self.moments = MomentState(m, v)
