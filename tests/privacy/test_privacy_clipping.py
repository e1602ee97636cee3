"""Fixed L2 clipping, adaptive quantile clipping (Andrew et al. 2021) and its noise split."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedpharma.errors import ConfigError
from fedpharma.privacy import (
    AdaptiveClipping,
    adapt_clip_norm,
    clip_to_norm,
    noised_unclipped_fraction,
    unclipped_bit,
    update_noise_multiplier_with_adaptive_clipping,
)

finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(arrays(np.float64, st.integers(1, 50), elements=finite), st.floats(1e-3, 1e3))
def test_clipped_updates_lie_in_the_ball_and_keep_their_direction(update, clip):
    result = clip_to_norm(update, clip)
    assert np.linalg.norm(result.update) <= clip * (1 + 1e-9)
    assert result.norm == pytest.approx(np.linalg.norm(update))
    assert result.clipped == (result.norm > clip)
    if result.clipped:
        np.testing.assert_allclose(result.update * result.norm / clip, update, rtol=1e-9, atol=1e-9)
    else:
        np.testing.assert_array_equal(result.update, update)


def test_clipping_refuses_non_finite_updates_and_bad_norms():
    with pytest.raises(ConfigError, match="NaN"):
        clip_to_norm(np.array([1.0, np.nan]), 1.0)
    with pytest.raises(ConfigError, match="clip norm"):
        clip_to_norm(np.ones(3), 0.0)


def test_the_bit_says_whether_the_update_fit_unclipped():
    assert unclipped_bit(0.5, 1.0) == 1 and unclipped_bit(1.0, 1.0) == 1
    assert unclipped_bit(1.5, 1.0) == 0


def test_the_clip_norm_moves_geometrically_towards_the_target_quantile():
    state = AdaptiveClipping(clip_norm=1.0, target_quantile=0.5, learning_rate=0.2)
    assert adapt_clip_norm(state, 1.0).clip_norm == pytest.approx(math.exp(-0.1))  # all fit
    assert adapt_clip_norm(state, 0.0).clip_norm == pytest.approx(math.exp(0.1))  # none fit
    assert adapt_clip_norm(state, 0.5) == state


def test_the_reported_fraction_is_noised_with_the_configured_std():
    rng = np.random.default_rng(0)
    bits = np.array([1, 0, 1, 1])
    draws = [noised_unclipped_fraction(bits, 2.0, rng) for _ in range(4_000)]
    assert np.mean(draws) == pytest.approx(0.75, abs=0.03)
    assert np.std(draws) == pytest.approx(2.0 / 4, rel=0.05)
    with pytest.raises(ConfigError):
        noised_unclipped_fraction(np.array([0.5]), 1.0, rng)


def test_adaptive_clipping_tracks_the_target_quantile_of_update_norms():
    # 100 sites per round, log-normal update norms; γ = 0.5 should find the median norm e^0 = 1,
    # despite the noise on the count (σ_b = 100 / 20, as Andrew et al. suggest).
    rng = np.random.default_rng(7)
    state = AdaptiveClipping(
        clip_norm=0.05, target_quantile=0.5, learning_rate=0.2, count_noise_std=5.0
    )
    trajectory = []
    for _ in range(400):
        norms = rng.lognormal(0.0, 0.5, size=100)
        bits = [unclipped_bit(n, state.clip_norm) for n in norms]
        state = adapt_clip_norm(state, noised_unclipped_fraction(bits, state.count_noise_std, rng))
        trajectory.append(state.clip_norm)
    assert np.median(trajectory[-100:]) == pytest.approx(1.0, rel=0.15)


def test_update_noise_is_raised_so_update_and_count_together_cost_the_planned_multiplier():
    sigma, sigma_b = 1.0, 5.0
    sigma_update = update_noise_multiplier_with_adaptive_clipping(sigma, sigma_b)
    assert sigma_update == pytest.approx((sigma**-2 - (2 * sigma_b) ** -2) ** -0.5)
    assert sigma_update > sigma
    # Two Gaussian releases with multipliers σ_Δ and 2σ_b compose to one with multiplier σ.
    assert (sigma_update**-2 + (2 * sigma_b) ** -2) ** -0.5 == pytest.approx(sigma)
    with pytest.raises(ConfigError, match="σ/2"):
        update_noise_multiplier_with_adaptive_clipping(2.0, 1.0)


def test_adaptive_state_is_validated():
    with pytest.raises(ConfigError) as caught:
        AdaptiveClipping(
            clip_norm=-1.0, target_quantile=1.5, learning_rate=0.0, count_noise_std=0.0
        )
    assert len(caught.value.problems) == 4
