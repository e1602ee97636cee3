"""The strategy a run recipe asks for — the same for a simulation and a deployed coordinator."""

from __future__ import annotations

import numpy as np

from fedpharma.config import RunConfig
from fedpharma.errors import ConfigError
from fedpharma.secure.ckks import PublicContext
from fedpharma.server.dp import record_level_settings, site_level_aggregator
from fedpharma.server.secure import CKKSCollector, SecAggCollector
from fedpharma.strategy import LoopSettings, Strategy, build_strategy


def strategy_for(
    recipe: RunConfig,
    *,
    planned_sites: int,
    noise_rng: np.random.Generator,
    timeout: float | None = None,
    ckks_context: PublicContext | None = None,
) -> Strategy:
    """The recipe's strategy and loop settings, its record-level DP task settings, and its
    site-level DP aggregator for ``planned_sites`` sites (noise drawn from ``noise_rng``:
    seeded in a simulation, the OS CSPRNG in a deployment). With ``[secure] mode`` set, the
    mean update is collected by secure aggregation: pairwise masks (``"secagg"``) or CKKS
    (``"ckks"``, with the coordinator's keyless ``ckks_context``)."""
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
    collector: SecAggCollector | CKKSCollector | None = None
    if recipe.secure.enabled:
        if aggregator is not None and not aggregator.distributed:
            raise ConfigError(
                [
                    "secure aggregation hides every update from the coordinator, so it cannot "
                    'add central noise; use [privacy] noise_placement = "distributed"'
                ],
                source="[secure]",
            )
        dp_planned_sites = planned_sites if aggregator is not None else None
        if recipe.secure.mode == "secagg":
            collector = SecAggCollector(recipe.secure, dp_planned_sites=dp_planned_sites)
        elif ckks_context is None:
            raise ConfigError(
                [
                    '[secure] mode = "ckks" needs the coordinator\'s public CKKS context '
                    "(ckks.public in the coordinator folder made by `fedpharma provision`)"
                ],
                source="[secure]",
            )
        else:
            collector = CKKSCollector(
                recipe.secure, ckks_context, dp_planned_sites=dp_planned_sites
            )
    return build_strategy(recipe.strategy, settings, aggregator, collector)
