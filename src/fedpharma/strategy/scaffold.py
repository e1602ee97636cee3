"""SCAFFOLD: FedAvg with control variates that correct client drift.

Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning"
(ICML), Algorithm 1. The server keeps a control variate c (an estimate of the global gradient)
and sends it with every train task; site i keeps its own c_i, steps with the corrected gradient
g_i(y) − c_i + c, and returns Δy_i and Δc_i = c_i⁺ − c_i. The server moves
x ← x + η_g Δȳ and c ← c + (|S|/N) Δc̄. Here the means are FedAvg's sample-weighted ones (so c
tracks Σ n_i c_i / Σ n_i), computed in the clear or in the same secure sum as the model delta,
and |S|/N is the run's ``fraction_fit``. c is the strategy's state, checkpointed with the model.
The site's side (c_i, its update with Option I: c_i⁺ = ∇f_i(x)) is :mod:`fedpharma.site.scaffold`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedpharma.core.errors import DataError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import LocalTraining
from fedpharma.core.protocol.control import CONTROL_PREFIX, attach_control, split_control
from fedpharma.strategy.base import NO_STATE, Strategy


class Scaffold(Strategy):
    def __init__(self, *, eta: float = 1.0, participation: float = 1.0) -> None:
        if not eta > 0 or not 0 < participation <= 1:
            raise ValueError("SCAFFOLD needs η_g > 0 and a participation fraction in (0, 1]")
        self.eta, self.participation = eta, participation
        self.control: Parameters | None = None

    def configure_train(self, rnd: int, local: LocalTraining) -> LocalTraining:
        return dataclasses.replace(local, scaffold=True)

    def train_parameters(self, rnd: int, parameters: Parameters) -> Parameters:
        """The model and the server's control variate c (zero before the first round)."""
        if self.control is None or not self.control.same_structure(parameters):
            if self.control is not None:
                raise DataError("the server's control variate does not fit the model")
            zeros = tuple(np.zeros_like(a) for a in parameters.arrays)
            self.control = Parameters(parameters.names, zeros)
        return attach_control(parameters, self.control)

    def aggregate_train(self, rnd: int, parameters: Parameters, mean: Parameters) -> Parameters:
        """x + η_g Δȳ; c + (|S|/N) Δc̄ (both means arrive together, as one update)."""
        model_mean, control_mean = split_control(mean)
        if self.control is None:
            self.train_parameters(rnd, parameters)
        assert self.control is not None
        self.control = _step(self.control, control_mean, self.participation)
        return _step(parameters, model_mean, self.eta)

    def state(self) -> Parameters:
        if self.control is None:
            return NO_STATE
        names = tuple(CONTROL_PREFIX + n for n in self.control.names)
        return Parameters(names, self.control.arrays)

    def load_state(self, state: Parameters) -> None:
        if not state.names or not all(n.startswith(CONTROL_PREFIX) for n in state.names):
            raise DataError(
                "the checkpoint holds no SCAFFOLD control variate; a SCAFFOLD run cannot be "
                "resumed exactly without it"
            )
        names = tuple(n.removeprefix(CONTROL_PREFIX) for n in state.names)
        self.control = Parameters(names, state.arrays)


def _step(base: Parameters, delta: Parameters, rate: float) -> Parameters:
    return Parameters(
        base.names,
        tuple(
            (a + rate * d).astype(a.dtype) for a, d in zip(base.arrays, delta.arrays, strict=True)
        ),
    )
