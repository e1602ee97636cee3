"""The Federation a run recipe asks for — the same for a simulation and a deployed coordinator."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from fedpharma.core.config import RunConfig, SecureConfig
from fedpharma.core.errors import ConfigError
from fedpharma.core.params import Parameters
from fedpharma.models.plugin_identity import plugin_identity
from fedpharma.privacy import noised_share_bound
from fedpharma.secure.ckks import PublicContext
from fedpharma.server.dp import SiteLevelDP, record_level_settings, site_level_aggregator
from fedpharma.server.federation import Checkpoints, Federation, FederationSettings
from fedpharma.server.round import Rejected, RoundObserver
from fedpharma.server.secure import CKKSCollector, SecAggCollector
from fedpharma.server.selection import BestRound
from fedpharma.strategy import build_rule, build_strategy


def _quiet(_: str) -> None:
    return None


def build_federation(
    recipe: RunConfig,
    *,
    planned_sites: int,
    noise_rng: np.random.Generator,
    timeout: float | None = None,
    ckks_context: PublicContext | None = None,
    store: Checkpoints | None = None,
    observers: Sequence[RoundObserver] = (),
    prepare: Callable[[Parameters], Parameters] | None = None,
    on_status: Callable[[str], None] = _quiet,
    wait_for_sites: float | None = None,
    retries: int = 0,
    on_rejected: Rejected | None = None,
    selection: BestRound | None = None,
) -> Federation:
    """The recipe's strategy and round settings, its record-level DP task settings, and its
    site-level DP aggregator for ``planned_sites`` sites (noise drawn from ``noise_rng``:
    seeded in a simulation, the OS CSPRNG in a deployment), or else its ``[robust]`` rule.
    With ``[secure] mode`` set, the mean update is collected by secure aggregation: pairwise
    masks (``"secagg"``) or CKKS (``"ckks"``, with the coordinator's keyless ``ckks_context``).
    The other arguments go to :class:`~fedpharma.server.federation.Federation` (``timeout``,
    ``wait_for_sites`` and ``retries`` to its settings, ``selection`` as it is)."""
    settings = FederationSettings(
        local_epochs=recipe.training.local_epochs,
        fraction_fit=recipe.strategy.fraction_fit,
        min_sites=recipe.strategy.min_sites,
        evaluate_every=recipe.strategy.evaluate_every,
        timeout=timeout,
        seed=recipe.seed,
        record_dp=record_level_settings(recipe),
        plugin=plugin_identity(recipe.model.plugin),
        wait_for_sites=wait_for_sites,
        retries=retries,
        max_site_examples=recipe.robust.max_site_examples,
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
            collector = SecAggCollector(
                _with_noise_headroom(recipe.secure, aggregator),
                min_sites=recipe.strategy.min_sites,
                dp_planned_sites=dp_planned_sites,
            )
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
                recipe.secure,
                ckks_context,
                min_sites=recipe.strategy.min_sites,
                dp_planned_sites=dp_planned_sites,
            )
    return Federation(
        build_strategy(recipe.strategy),
        settings,
        aggregator=aggregator or build_rule(recipe.robust),
        collector=collector,
        store=store,
        observers=observers,
        prepare=prepare,
        on_status=on_status,
        on_rejected=on_rejected,
        selection=selection,
    )


def _with_noise_headroom(secure: SecureConfig, aggregator: SiteLevelDP | None) -> SecureConfig:
    """``secure`` with a quantizer range wide enough for a clipped update plus its noise share
    (:func:`~fedpharma.privacy.noised_share_bound`): the sites refuse a narrower one rather than
    truncate their noise."""
    if aggregator is None:
        return secure
    bound = noised_share_bound(
        aggregator.noise_multiplier, aggregator.clip_norm, aggregator.planned_sites
    )
    return dataclasses.replace(secure, clip=max(secure.clip, bound))
