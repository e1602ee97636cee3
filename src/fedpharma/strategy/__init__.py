"""Strategies: pure configure / aggregate / state, no loop (the Federation runs the rounds)."""

from __future__ import annotations

from fedpharma.core.config import StrategyConfig
from fedpharma.strategy.base import (
    NO_STATE,
    SampleWeightedMean,
    SiteUpdate,
    Strategy,
    weighted_mean,
)
from fedpharma.strategy.fedavg import FedAvg, FedProx
from fedpharma.strategy.fedopt import FedOpt
from fedpharma.strategy.robust import RobustRule, build_rule
from fedpharma.strategy.scaffold import Scaffold


def build_strategy(config: StrategyConfig) -> Strategy:
    """The strategy a run config names."""
    if config.name == "fedavg":
        return FedAvg()
    if config.name == "fedprox":
        return FedProx(config.proximal_mu)
    if config.name == "scaffold":
        eta = 1.0 if config.server_learning_rate is None else config.server_learning_rate
        return Scaffold(eta=eta, participation=config.fraction_fit)
    return FedOpt(
        variant=config.name.removeprefix("fed"),
        eta=1e-2 if config.server_learning_rate is None else config.server_learning_rate,
        beta1=config.beta1,
        beta2=config.beta2,
        tau=config.tau,
    )


__all__ = [
    "NO_STATE",
    "FedAvg",
    "FedOpt",
    "FedProx",
    "RobustRule",
    "SampleWeightedMean",
    "Scaffold",
    "SiteUpdate",
    "Strategy",
    "build_rule",
    "build_strategy",
    "weighted_mean",
]
