"""Noise calibration: the smallest noise multiplier whose ε meets a target (ε, δ).

ε is decreasing in the noise multiplier σ for every event built here, so σ is found by bisection
over the accountant itself — whatever the accountant proves is what gets planned, with no separate
closed form to drift out of sync. The answer errs on the private side: the returned σ has
ε(σ) ≤ target, within ``relative_tolerance`` of it. The reverse question ("what ε does this σ
cost?") is just :meth:`Accountant.epsilon <fedpharma.privacy.accountant.Accountant.epsilon>`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

from fedpharma.core.errors import ConfigError
from fedpharma.privacy.accountant import Accountant, EpsilonReport, RdpAccountant
from fedpharma.privacy.events import (
    GaussianEvent,
    PrivacyEvent,
    Relation,
    SelfComposedEvent,
    dp_sgd_event,
)

# Beyond this σ the target is treated as unreachable (ε would need more noise than any useful
# training tolerates); below the minimum, any smaller σ is as good as no noise for the plan.
MAX_NOISE_MULTIPLIER = 1e4
MIN_NOISE_MULTIPLIER = 1 / 64


@dataclass(frozen=True)
class NoiseCalibration:
    """The calibrated noise multiplier and the ε it actually costs (≤ the target)."""

    noise_multiplier: float
    report: EpsilonReport


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    event_for: Callable[[float], PrivacyEvent],
    accountant: Accountant,
    relation: Relation,
    *,
    relative_tolerance: float = 0.005,
) -> NoiseCalibration:
    """Smallest σ (up to ``relative_tolerance`` in ε) with ε(``event_for(σ)``, δ) ≤ target.

    Brackets σ by doubling / halving from 1, then bisects, keeping the upper end (the private
    side) as the answer. Raises :class:`ConfigError` if even σ = 10⁴ misses the target.
    """
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ConfigError(
            [f"target epsilon must be a finite number > 0, got {target_epsilon!r}"],
            source="noise calibration",
        )

    @functools.cache
    def epsilon_of(noise_multiplier: float) -> float:
        return accountant.epsilon(event_for(noise_multiplier), delta)

    high = 1.0
    while epsilon_of(high) > target_epsilon:
        if high >= MAX_NOISE_MULTIPLIER:
            raise ConfigError(
                [
                    f"no noise multiplier up to {MAX_NOISE_MULTIPLIER:g} reaches ε = "
                    f"{target_epsilon} at δ = {delta}; allow a larger ε or δ, or plan fewer "
                    "rounds / steps or a smaller sampling rate"
                ],
                source="noise calibration",
            )
        high *= 2
    low = high / 2
    while epsilon_of(low) <= target_epsilon:
        if low <= MIN_NOISE_MULTIPLIER:
            return NoiseCalibration(low, accountant.report(event_for(low), delta, relation))
        high, low = low, low / 2
    epsilon_high = epsilon_of(high)
    while epsilon_high < target_epsilon * (1 - relative_tolerance) and high - low > 1e-9 * high:
        middle = (low + high) / 2
        epsilon_middle = epsilon_of(middle)
        if epsilon_middle > target_epsilon:
            low = middle
        else:
            high, epsilon_high = middle, epsilon_middle
    report = EpsilonReport(epsilon_high, delta, accountant.name, accountant.conversion, relation)
    return NoiseCalibration(high, report)


def noise_for_dp_sgd(
    target_epsilon: float,
    delta: float,
    *,
    sampling_rate: float,
    steps: int,
    accountant: Accountant | None = None,
) -> NoiseCalibration:
    """Record-level: σ for ``steps`` DP-SGD steps at Poisson ``sampling_rate`` (Abadi et al. 2016).

    For a federated run, ``steps`` is the total over every round this site trains in: the site's
    ε composes across rounds, it is not reset each round.
    """
    return calibrate_noise_multiplier(
        target_epsilon,
        delta,
        lambda sigma: dp_sgd_event(sigma, sampling_rate, steps),
        accountant or RdpAccountant(),
        "record",
    )


def noise_for_site_rounds(
    target_epsilon: float, delta: float, *, rounds: int, accountant: Accountant | None = None
) -> NoiseCalibration:
    """Site-level: σ for ``rounds`` releases of the clipped sum plus N(0, σ²C²) (McMahan et al.
    2018, Algorithm 1; Geyer et al. 2017).

    No amplification by site sampling is claimed: the coordinator, which our threat model treats
    as curious, knows which sites it selected, so each round a site takes part in costs a full
    Gaussian mechanism.
    """
    return calibrate_noise_multiplier(
        target_epsilon,
        delta,
        lambda sigma: SelfComposedEvent(GaussianEvent(sigma), rounds),
        accountant or RdpAccountant(),
        "site",
    )
