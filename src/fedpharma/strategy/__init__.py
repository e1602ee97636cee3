"""Strategies: the base class owns the round loop; each strategy configures and aggregates."""

from __future__ import annotations

from fedpharma.config import StrategyConfig
from fedpharma.strategy.base import (
    LoopSettings,
    MeanCollector,
    RoundObserver,
    RoundRecord,
    SampleWeightedMean,
    Strategy,
    UpdateAggregator,
)
from fedpharma.strategy.fedavg import FedAvg, FedProx
from fedpharma.strategy.fedopt import FedOpt


def build_strategy(
    config: StrategyConfig,
    settings: LoopSettings,
    aggregator: UpdateAggregator | None = None,
    collector: MeanCollector | None = None,
) -> Strategy:
    """The strategy a run config names; ``aggregator`` replaces the sample-weighted mean, and
    ``collector`` (secure aggregation) computes the mean without revealing any update."""
    if config.name == "fedavg":
        return FedAvg(settings, aggregator, collector)
    if config.name == "fedprox":
        return FedProx(settings, config.proximal_mu, aggregator, collector)
    variant = config.name.removeprefix("fed")
    return FedOpt(
        settings,
        variant=variant,
        eta=1e-2 if config.server_learning_rate is None else config.server_learning_rate,
        beta1=config.beta1,
        beta2=config.beta2,
        tau=config.tau,
        aggregator=aggregator,
        collector=collector,
    )


__all__ = [
    "FedAvg",
    "FedOpt",
    "FedProx",
    "LoopSettings",
    "MeanCollector",
    "RoundObserver",
    "RoundRecord",
    "SampleWeightedMean",
    "Strategy",
    "UpdateAggregator",
    "build_strategy",
]
