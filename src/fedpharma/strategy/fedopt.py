"""Adaptive server optimizers: FedAdagrad, FedAdam, FedYogi.

Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR), Algorithm 2: the averaged client
update Δ_t is treated as a pseudo-gradient and fed to an adaptive optimizer on the server. The
maths live in :func:`fedpharma.strategy.aggregate.fedopt_step`.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedpharma.params import Parameters
from fedpharma.protocol import TrainResult
from fedpharma.strategy.aggregate import MomentState, fedopt_step
from fedpharma.strategy.base import LoopSettings, MeanCollector, Strategy, UpdateAggregator

VARIANTS = ("adagrad", "adam", "yogi")


class FedOpt(Strategy):
    def __init__(
        self,
        settings: LoopSettings,
        *,
        variant: str,
        eta: float = 1e-2,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        aggregator: UpdateAggregator | None = None,
        collector: MeanCollector | None = None,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        super().__init__(settings, aggregator, collector)
        self.variant, self.eta, self.beta1, self.beta2, self.tau = variant, eta, beta1, beta2, tau
        self.state: MomentState | None = None

    def aggregate_train(
        self, rnd: int, parameters: Parameters, results: Sequence[TrainResult]
    ) -> Parameters:
        return self.apply_mean_update(rnd, parameters, self.aggregator.mean_update(rnd, results))

    def apply_mean_update(self, rnd: int, parameters: Parameters, mean: Parameters) -> Parameters:
        """One server-optimizer step on Δ̄, averaged in the clear or by secure aggregation."""
        weights = parameters.flatten()
        if self.state is None:
            self.state = MomentState.zeros(weights.size, self.tau)
        new, self.state = fedopt_step(
            weights,
            mean.flatten(),
            self.state,
            variant=self.variant,
            eta=self.eta,
            beta1=self.beta1,
            beta2=self.beta2,
            tau=self.tau,
        )
        return parameters.unflatten(new)
