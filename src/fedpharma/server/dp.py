"""Site-level differential privacy at the coordinator: DP-FedAvg's noisy clipped mean.

McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models" (Algorithm 1,
fixed denominator) and Geyer et al. 2017: every site's update is clipped to ‖Δ_k‖ ≤ C, the
coordinator sums them with *uniform* weights (weighting by n_k would break the sensitivity
bound), adds N(0, σ²C²) per coordinate (central placement) — or receives sums whose noise the
sites added in shares (distributed placement) — and divides by the planned number of sites K.
Optionally C adapts each round towards a quantile of the update norms from noised, centred "fit
inside C" bits over the expected K sites (Andrew et al. 2021, Algorithm 1); then the update noise
is σ_Δ so that update and bit releases together cost one Gaussian mechanism of multiplier σ. The
coordinator reads each bit off the clipped update it holds in the clear (central noise only):
no site sends it, so it is never released raw beside the update.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedpharma.core.config import PrivacyConfig, RunConfig
from fedpharma.core.errors import ConfigError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol.settings import RecordDP, SiteDP
from fedpharma.privacy import (
    AdaptiveClipping,
    adapt_clip_norm,
    central_noise_std,
    clip_to_norm,
    gaussian_noise,
    make_accountant,
    noise_for_site_rounds,
    noised_unclipped_fraction,
    unclipped_bit,
    update_noise_multiplier_with_adaptive_clipping,
)
from fedpharma.strategy import SiteUpdate

# A site clips to norm C itself; its clipped update's norm lands within rounding of C.
_CLIPPED_NORM = 1 - 1e-9


class SiteLevelDP:
    """An :class:`~fedpharma.server.federation.UpdateAggregator` for site-level DP.

    ``noise_multiplier`` is σ, what every site's ledger is charged per round; ``planned_sites`` is
    K, the fixed denominator and the number of noise shares; ``min_sites`` is the fewest updates
    a round accepts (with distributed noise only their shares are sure to arrive, and sites
    charge accordingly). ``rng``: seeded in simulation, the OS CSPRNG in deployment.
    """

    def __init__(
        self,
        *,
        noise_multiplier: float,
        clip_norm: float,
        planned_sites: int,
        min_sites: int,
        distributed: bool,
        rng: np.random.Generator,
        adaptive: AdaptiveClipping | None = None,
    ) -> None:
        if adaptive is not None and distributed:
            raise ConfigError(
                [
                    "adaptive clipping needs central noise here: its bits are noised by the "
                    'coordinator; use noise_placement = "central" or a fixed clip_norm'
                ],
                source="[privacy]",
            )
        self.noise_multiplier = noise_multiplier
        self.planned_sites = planned_sites
        self.min_sites = min_sites
        self.distributed = distributed
        self.rng = rng
        self.clipping = adaptive or AdaptiveClipping(clip_norm)
        self.adaptive = adaptive is not None
        self.update_noise_multiplier = (
            update_noise_multiplier_with_adaptive_clipping(
                noise_multiplier, adaptive.count_noise_std
            )
            if adaptive is not None
            else noise_multiplier
        )

    @classmethod
    def from_config(
        cls,
        config: PrivacyConfig,
        noise_multiplier: float,
        planned_sites: int,
        min_sites: int,
        rng: np.random.Generator,
    ) -> SiteLevelDP:
        adaptive = (
            AdaptiveClipping(
                config.clip_norm,
                target_quantile=config.target_quantile,
                # σ_b ≥ σ keeps σ_Δ within 16 % of σ (Andrew et al. suggest about K/20).
                count_noise_std=max(noise_multiplier, planned_sites / 20),
            )
            if config.adaptive_clipping
            else None
        )
        return cls(
            noise_multiplier=noise_multiplier,
            clip_norm=config.clip_norm,
            planned_sites=planned_sites,
            min_sites=min_sites,
            distributed=config.noise_placement == "distributed",
            rng=rng,
            adaptive=adaptive,
        )

    @property
    def clip_norm(self) -> float:
        return self.clipping.clip_norm

    def task_settings(self, rnd: int) -> SiteDP:
        return SiteDP(
            noise_multiplier=self.noise_multiplier,
            clip_norm=self.clip_norm,
            planned_sites=self.planned_sites,
            min_sites=self.min_sites,
            placement="distributed" if self.distributed else "central",
        )

    def mean_update(self, rnd: int, results: Sequence[SiteUpdate]) -> Parameters:
        """The noisy mean of the clipped updates, every site weighed alike (the agreed weights
        are not used: weighting by n_k would break the sensitivity bound)."""
        template = results[0].update
        if self.distributed:
            # Shares of the noise are in the updates already; re-clipping would shrink them.
            total = np.sum([r.update.flatten() for r in results], axis=0)
            return template.unflatten(total / self.planned_sites)
        # Enforce the sensitivity bound here too, whatever a site sent.
        clipped = [clip_to_norm(r.update.flatten(), self.clip_norm) for r in results]
        total = np.sum([c.update for c in clipped], axis=0)
        std = central_noise_std(self.update_noise_multiplier, self.clip_norm)
        total = total + gaussian_noise(total.shape, std, self.rng)
        if self.adaptive:
            bits = [unclipped_bit(c.norm, self.clip_norm * _CLIPPED_NORM) for c in clipped]
            fraction = noised_unclipped_fraction(
                bits, self.clipping.count_noise_std, self.rng, self.planned_sites
            )
            self.clipping = adapt_clip_norm(self.clipping, fraction)
        return template.unflatten(total / self.planned_sites)


def record_level_settings(config: RunConfig) -> RecordDP | None:
    """What every train task carries so that sites run (and charge) DP-SGD; None without."""
    dp = config.privacy
    if not dp.record_level:
        return None
    return RecordDP(
        dp.max_grad_norm,
        dp.delta,
        config.rounds,
        noise_multiplier=dp.noise_multiplier,
        target_epsilon=dp.target_epsilon if dp.noise_multiplier is None else None,
    )


def site_level_aggregator(
    config: RunConfig, planned_sites: int, rng: np.random.Generator
) -> SiteLevelDP | None:
    """The coordinator's noisy clipped mean for ``planned_sites`` sites, with σ given or
    calibrated for the planned rounds; None without site-level DP. ``rng``: seeded in
    simulation, :func:`~fedpharma.privacy.production_rng` in deployment."""
    dp = config.privacy
    if not dp.site_level:
        return None
    sigma = dp.site_noise_multiplier
    if sigma is None:
        assert dp.target_epsilon is not None
        accountant = make_accountant(dp.accountant)
        sigma = noise_for_site_rounds(
            dp.target_epsilon, dp.delta, rounds=config.rounds, accountant=accountant
        ).noise_multiplier
    return SiteLevelDP.from_config(
        dp, sigma, planned_sites=planned_sites, min_sites=config.strategy.min_sites, rng=rng
    )
