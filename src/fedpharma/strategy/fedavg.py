"""FedAvg and FedProx.

FedAvg: McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from Decentralized
Data", Algorithm 1 — the new global model is the sample-weighted mean of the sites' models, i.e.
w + Σ n_k Δ_k / Σ n_k.

FedProx: Li et al. 2020, "Federated Optimization in Heterogeneous Networks", §3 — the same
aggregation, but each site minimises its loss plus (μ/2)‖w − w_global‖², which keeps local models
near the global one under heterogeneous data. The term is applied at the site; the strategy only
sends μ.
"""

from __future__ import annotations

import dataclasses

from fedpharma.core.params import Parameters
from fedpharma.core.protocol import LocalTraining
from fedpharma.strategy.base import Strategy


class FedAvg(Strategy):
    def aggregate_train(self, rnd: int, parameters: Parameters, mean: Parameters) -> Parameters:
        """w + Δ̄, whether Δ̄ was averaged in the clear or by secure aggregation."""
        return Parameters(
            parameters.names,
            tuple(
                (w + d).astype(w.dtype) for w, d in zip(parameters.arrays, mean.arrays, strict=True)
            ),
        )


class FedProx(FedAvg):
    def __init__(self, proximal_mu: float) -> None:
        self.proximal_mu = proximal_mu

    def configure_train(self, rnd: int, local: LocalTraining) -> LocalTraining:
        return dataclasses.replace(local, proximal_mu=self.proximal_mu)
