"""Fixed L2 clipping, adaptive quantile clipping (Andrew et al. 2021) and its noise split."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedpharma.core.errors import ConfigError
from fedpharma.privacy import (
    AdaptiveClipping,
    ComposedEvent,
    GaussianEvent,
    adapt_clip_norm,
    clip_to_norm,
    make_accountant,
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
    draws = [noised_unclipped_fraction(bits, 2.0, rng, expected_count=4) for _ in range(4_000)]
    assert np.mean(draws) == pytest.approx(0.75, abs=0.03)
    assert np.std(draws) == pytest.approx(2.0 / 4, rel=0.05)
    with pytest.raises(ConfigError):
        noised_unclipped_fraction(np.array([0.5]), 1.0, rng, expected_count=1)


def test_one_site_moves_the_released_fraction_by_at_most_half_over_the_expected_count():
    # Andrew et al. 2021, §3.1: centred bits over the expected count K have sensitivity ½.
    # Dividing by the actual count, or leaving the bits uncentred, moves it by up to 1 / K.
    expected = 5
    for n in range(1, expected):
        for bits in itertools.product((0, 1), repeat=n):
            for added in (0, 1):
                same_noise = [np.random.default_rng(3) for _ in range(2)]
                before = noised_unclipped_fraction(bits, 1.0, same_noise[0], expected)
                after = noised_unclipped_fraction([*bits, added], 1.0, same_noise[1], expected)
                assert abs(after - before) * expected == pytest.approx(0.5)


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
        fraction = noised_unclipped_fraction(bits, state.count_noise_std, rng, expected_count=100)
        state = adapt_clip_norm(state, fraction)
        trajectory.append(state.clip_norm)
    assert np.median(trajectory[-100:]) == pytest.approx(1.0, rel=0.15)


def test_update_and_count_releases_together_cost_the_planned_multiplier():
    # dp-accounting composes the two releases: the count of centred bits (sensitivity ½, noise
    # σ_b, i.e. multiplier 2σ_b) and the update sum at σ_Δ cost what one release at σ costs.
    sigma, sigma_b, delta = 1.0, 5.0, 1e-5
    sigma_update = update_noise_multiplier_with_adaptive_clipping(sigma, sigma_b)
    assert sigma_update > sigma
    accountant = make_accountant("rdp")
    pair = ComposedEvent((GaussianEvent(sigma_update), GaussianEvent(2 * sigma_b)))
    assert accountant.epsilon(pair, delta) == pytest.approx(
        accountant.epsilon(GaussianEvent(sigma), delta), rel=1e-6
    )
    # Charged at the uncentred count's sensitivity 1 (multiplier σ_b), the same pair costs more.
    uncentred = ComposedEvent((GaussianEvent(sigma_update), GaussianEvent(sigma_b)))
    assert accountant.epsilon(uncentred, delta) > accountant.epsilon(GaussianEvent(sigma), delta)
    with pytest.raises(ConfigError, match="σ/2"):
        update_noise_multiplier_with_adaptive_clipping(2.0, 1.0)


def test_adaptive_state_is_validated():
    with pytest.raises(ConfigError) as caught:
        AdaptiveClipping(
            clip_norm=-1.0, target_quantile=1.5, learning_rate=0.0, count_noise_std=0.0
        )
    assert len(caught.value.problems) == 4
