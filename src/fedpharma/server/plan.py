"""The strategy a run recipe asks for — the same for a simulation and a deployed coordinator."""

from __future__ import annotations

import numpy as np

from fedpharma.config import RunConfig
from fedpharma.errors import ConfigError
from fedpharma.server.dp import record_level_settings, site_level_aggregator
from fedpharma.server.secagg import SecAggCollector
from fedpharma.strategy import LoopSettings, Strategy, build_strategy


def strategy_for(
    recipe: RunConfig,
    *,
    planned_sites: int,
    noise_rng: np.random.Generator,
    timeout: float | None = None,
) -> Strategy:
    """The recipe's strategy and loop settings, its record-level DP task settings, and its
    site-level DP aggregator for ``planned_sites`` sites (noise drawn from ``noise_rng``:
    seeded in a simulation, the OS CSPRNG in a deployment). With ``[secure] mode = "secagg"``
    the mean update is collected by secure aggregation (Bonawitz et al. 2017)."""
    settings = LoopSettings(
        local_epochs=recipe.training.local_epochs,
        fraction_fit=recipe.strategy.fraction_fit,
        min_sites=recipe.strategy.min_sites,
        evaluate_every=recipe.strategy.evaluate_every,
        timeout=timeout,
        seed=recipe.seed,
        train_settings=record_level_settings(recipe),
    )
    aggregator = site_level_aggregator(recipe, planned_sites, noise_rng)
    collector = None
    if recipe.secure.enabled:
        if aggregator is not None and not aggregator.distributed:
            raise ConfigError(
                [
                    "secure aggregation hides every update from the coordinator, so it cannot "
                    'add central noise; use [privacy] noise_placement = "distributed"'
                ],
                source="[secure]",
            )
        collector = SecAggCollector(
            recipe.secure, dp_planned_sites=planned_sites if aggregator is not None else None
        )
    return build_strategy(recipe.strategy, settings, aggregator, collector)
