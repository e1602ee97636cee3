"""Gaussian noise for site-level DP: central, or split across sites as distributed noise.

Central (McMahan et al. 2018, Algorithm 1; Geyer et al. 2017): the aggregator adds
N(0, (σC)²) per coordinate to the sum of site updates clipped to norm C; the accountant charges a
Gaussian mechanism with noise multiplier σ per round.

Distributed, for secure aggregation, where nobody sees an individual update and so nobody can add
the noise centrally: each of n sites adds N(0, σ²C²/n) to its own clipped update, and the sum of
the n shares carries N(0, σ²C²). The accountant must charge what the released sum *actually*
carries: if only s of the n sites survive the round (drop-outs whose shares never arrive), the sum
carries N(0, sσ²C²/n), i.e. multiplier σ·√(s/n) (:func:`surviving_noise_multiplier`). Plan for it
(e.g. scale shares for the minimum number of sites secure aggregation accepts) and charge with
the surviving count. Each site's own share alone protects it only with multiplier σ/√n, which is
why distributed noise needs secure aggregation to be worth anything against a curious coordinator.

Randomness: simulation passes an explicit, seeded :class:`numpy.random.Generator`; deployment
uses :func:`production_rng`, seeded from the operating system's CSPRNG so that noise cannot be
predicted from a seed in a config file. numpy's continuous Gaussian sampler is not hardened
against floating-point attacks on the noise's low-order bits (Mironov 2012, "On Significance of
the Least Significant Bits for Differential Privacy"); a discrete Gaussian would be.
"""

from __future__ import annotations

import math
import secrets

import numpy as np
import numpy.typing as npt

from fedpharma.core.errors import ConfigError


def production_rng() -> np.random.Generator:
    """A generator seeded with 128 bits from the OS CSPRNG (:mod:`secrets`), for deployment."""
    return np.random.default_rng(secrets.randbits(128))


def gaussian_noise(
    shape: int | tuple[int, ...], std: float, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """N(0, std²) i.i.d. noise of ``shape``, drawn from ``rng`` (never a global generator)."""
    if not (math.isfinite(std) and std >= 0):
        raise ConfigError([f"noise std must be a finite number ≥ 0, got {std!r}"], "noise")
    return rng.normal(0.0, std, size=shape)


def central_noise_std(noise_multiplier: float, clip_norm: float) -> float:
    """σ·C: the std the aggregator adds to the sum of updates clipped to norm C."""
    _check_positive(noise_multiplier=noise_multiplier, clip_norm=clip_norm)
    return noise_multiplier * clip_norm


def distributed_noise_std(noise_multiplier: float, clip_norm: float, n_sites: int) -> float:
    """σC/√n: each of ``n_sites`` sites' share, so that the n shares sum to N(0, σ²C²)."""
    _check_positive(noise_multiplier=noise_multiplier, clip_norm=clip_norm, n_sites=n_sites)
    return noise_multiplier * clip_norm / math.sqrt(n_sites)


NOISE_TAIL_STDS = 10.0
"""How many standard deviations of its noise share a site's quantizer range leaves as headroom:
a Gaussian coordinate exceeds it with probability erfc(10/√2) ≈ 1.5·10⁻²³."""


def noised_share_bound(noise_multiplier: float, clip_norm: float, n_sites: int) -> float:
    """C + 10·σC/√n: the range [−b, b] a secure quantizer must keep per coordinate so that an
    update clipped to ‖Δ‖ ≤ C (each coordinate within ±C) plus its noise share N(0, σ²C²/n)
    is never truncated, except with probability ≤ d · 1.5·10⁻²³ over d coordinates — and then
    the site refuses to send it rather than truncate the noise (``docs/secure-aggregation.md``).
    """
    return clip_norm + NOISE_TAIL_STDS * distributed_noise_std(noise_multiplier, clip_norm, n_sites)


def surviving_noise_multiplier(
    noise_multiplier: float, planned_sites: int, surviving_sites: int
) -> float:
    """σ·√(s/n): the multiplier the sum really carries when s of the n planned shares arrive.

    This, not the planned σ, is what the ledger must charge for the round.
    """
    _check_positive(noise_multiplier=noise_multiplier, planned_sites=planned_sites)
    if not 1 <= surviving_sites <= planned_sites:
        raise ConfigError(
            [f"surviving sites must lie in [1, {planned_sites}], got {surviving_sites}"], "noise"
        )
    return noise_multiplier * math.sqrt(surviving_sites / planned_sites)


def _check_positive(**values: float) -> None:
    problems = [
        f"{name} must be a finite number > 0, got {value!r}"
        for name, value in values.items()
        if not (math.isfinite(value) and value > 0)
    ]
    if problems:
        raise ConfigError(problems, source="noise")
