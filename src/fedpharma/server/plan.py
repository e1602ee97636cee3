"""The strategy a run recipe asks for — the same for a simulation and a deployed coordinator."""

from __future__ import annotations

import numpy as np

from fedpharma.config import RunConfig
from fedpharma.server.dp import record_level_settings, site_level_aggregator
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
    seeded in a simulation, the OS CSPRNG in a deployment)."""
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
    return build_strategy(recipe.strategy, settings, aggregator)
