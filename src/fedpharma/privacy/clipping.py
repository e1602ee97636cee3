"""Update clipping for site-level DP: fixed L2 clipping, and adaptive quantile clipping.

Site-level DP (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models",
Algorithm 1; Geyer et al. 2017) bounds each site's influence on the aggregate by clipping its
update Δ_k to L2 norm ≤ C before the (noised) sum; C is the sensitivity the Gaussian noise is
scaled to.

A good C is hard to guess and drifts during training, so Andrew et al. 2021 ("Differentially
Private Learning with Adaptive Clipping", Algorithm 1) track a target quantile γ of the update
norms privately: each site's bit b_k = [‖Δ_k‖ ≤ C] is centred, the server adds N(0, σ_b²) to
Σ (b_k − ½), divides by the *expected* number of sites K (not the actual one, which would make the
sensitivity 1) and forms b̄ = ½ + (Σ (b_k − ½) + N(0, σ_b²)) / K, so one site moves the release
by at most ½/K; then C moves geometrically, C ← C · exp(−η_C (b̄ − γ)). The count is a second
Gaussian release; its cost is paid by giving the update sum a little more noise
(:func:`update_noise_multiplier_with_adaptive_clipping`), so the pair costs exactly what one
Gaussian mechanism with the planned noise multiplier costs.

Everything here is pure numpy on flat float vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from fedpharma.core.errors import ConfigError

FlatVector = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ClippedUpdate:
    """An update scaled to norm ≤ C, its norm before clipping, and whether it was scaled."""

    update: FlatVector
    norm: float
    clipped: bool


def clip_to_norm(update: npt.ArrayLike, clip_norm: float) -> ClippedUpdate:
    """Δ · min(1, C / ‖Δ‖₂): the update unchanged if within the ball, else scaled onto it."""
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError([f"clip norm must be a finite number > 0, got {clip_norm!r}"], "clipping")
    vector = np.asarray(update, dtype=np.float64)
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm):
        raise ConfigError(["update holds NaN or infinite values; it cannot be clipped"], "clipping")
    if norm <= clip_norm:
        return ClippedUpdate(vector.copy(), norm, clipped=False)
    return ClippedUpdate(vector * (clip_norm / norm), norm, clipped=True)


@dataclass(frozen=True)
class AdaptiveClipping:
    """The server's adaptive-clipping state (Andrew et al. 2021, Algorithm 1).

    ``clip_norm`` is the current C; ``target_quantile`` is γ, the fraction of sites whose update
    should fit unclipped (0.5 tracks the median norm); ``learning_rate`` is η_C of the geometric
    update (the paper uses 0.2); ``count_noise_std`` is σ_b, the std of the Gaussian noise on the
    count of unclipped sites (the paper suggests about the expected number of sites / 20).
    """

    clip_norm: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_noise_std: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            problems.append(f"clip_norm must be a finite number > 0, got {self.clip_norm!r}")
        if not 0 <= self.target_quantile <= 1:
            problems.append(f"target_quantile must lie in [0, 1], got {self.target_quantile!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            problems.append(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not (math.isfinite(self.count_noise_std) and self.count_noise_std > 0):
            problems.append(f"count_noise_std must be > 0, got {self.count_noise_std!r}")
        if problems:
            raise ConfigError(problems, source="adaptive clipping")


def unclipped_bit(update_norm: float, clip_norm: float) -> int:
    """A site's report b = [‖Δ‖ ≤ C]: 1 if its update fit inside the clipping ball."""
    return int(update_norm <= clip_norm)


def noised_unclipped_fraction(
    bits: npt.ArrayLike, count_noise_std: float, rng: np.random.Generator, expected_count: int
) -> float:
    """b̄ = ½ + (Σ_k (b_k − ½) + N(0, σ_b²)) / K over the sites that reported, K their expected
    number (Andrew et al. 2021, §3.1): adding or removing one site moves b̄ by at most ½/K, the
    sensitivity :func:`update_noise_multiplier_with_adaptive_clipping` charges for."""
    values = np.asarray(bits, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.isin(values, (0.0, 1.0)).all():
        raise ConfigError(["bits must be a non-empty 1-D array of 0s and 1s"], "adaptive clipping")
    if expected_count < 1:
        raise ConfigError(
            [f"expected_count must be ≥ 1, got {expected_count}"], "adaptive clipping"
        )
    noise = rng.normal(0.0, count_noise_std)
    return float(0.5 + ((values - 0.5).sum() + noise) / expected_count)


def adapt_clip_norm(state: AdaptiveClipping, noised_fraction: float) -> AdaptiveClipping:
    """Next state: C ← C · exp(−η_C (b̄ − γ)) (Andrew et al. 2021, Algorithm 1, geometric update).

    If more than γ of the sites fit (b̄ > γ), C shrinks; if fewer, it grows. ``noised_fraction``
    must be the *noised* b̄ from :func:`noised_unclipped_fraction`: the raw fraction is not DP.
    """
    factor = math.exp(-state.learning_rate * (noised_fraction - state.target_quantile))
    return replace(state, clip_norm=state.clip_norm * factor)


def update_noise_multiplier_with_adaptive_clipping(
    noise_multiplier: float, count_noise_std: float
) -> float:
    """σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−1/2): the noise multiplier for the update sum when the clipped-bit
    count is also released with noise σ_b, so that the pair costs one Gaussian mechanism with
    multiplier σ (Andrew et al. 2021, §3.1, Theorem 1).

    The count of centred bits b − ½ has sensitivity ½, so its noise σ_b is a multiplier of 2σ_b;
    two Gaussian releases with multipliers σ_Δ and 2σ_b compose to one with
    (σ_Δ⁻² + (2σ_b)⁻²)^(−1/2). Charge the ledger with σ, not σ_Δ. Needs σ_b > σ/2.
    """
    if not (noise_multiplier > 0 and count_noise_std > 0):
        raise ConfigError(["noise multiplier and count noise std must be > 0"], "adaptive clipping")
    remaining = 1 / noise_multiplier**2 - 1 / (2 * count_noise_std) ** 2
    if remaining <= 0:
        raise ConfigError(
            [
                f"count noise std σ_b = {count_noise_std} leaves no budget for the update at "
                f"noise multiplier {noise_multiplier}; σ_b must exceed σ/2 = "
                f"{noise_multiplier / 2:g} (Andrew et al. suggest σ_b ≈ sites per round / 20)"
            ],
            source="adaptive clipping",
        )
    return 1 / math.sqrt(remaining)
