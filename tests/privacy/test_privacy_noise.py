"""Gaussian noise: configured std, distributed shares summing to the central noise, drop-outs."""

import math

import numpy as np
import pytest

from fedpharma.core.errors import ConfigError
from fedpharma.privacy import (
    central_noise_std,
    distributed_noise_std,
    gaussian_noise,
    noised_share_bound,
    production_rng,
    surviving_noise_multiplier,
)

SIGMA, CLIP = 1.2, 0.5


def test_noise_has_the_configured_std_and_zero_mean():
    noise = gaussian_noise(200_000, 0.7, np.random.default_rng(0))
    assert noise.std() == pytest.approx(0.7, rel=0.01)
    assert abs(noise.mean()) < 0.01
    assert (
        gaussian_noise((3, 4), 0.0, np.random.default_rng(0)).tolist() == np.zeros((3, 4)).tolist()
    )


def test_noise_draws_from_the_given_generator_only():
    np.random.seed(0)
    global_state = np.random.get_state()[1].copy()
    rng = np.random.default_rng(42)
    a, b = gaussian_noise(10, 1.0, rng), gaussian_noise(10, 1.0, rng)
    assert not np.allclose(a, b)  # the generator advanced
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)  # the global did not


def test_a_noised_share_stays_inside_its_headroom_bound():
    # A clipped update's coordinate is at most C; with its share it stays within C + 10 stds.
    n_sites = 4
    bound = noised_share_bound(SIGMA, CLIP, n_sites)
    std = distributed_noise_std(SIGMA, CLIP, n_sites)
    noised = CLIP + gaussian_noise(2_000_000, std, np.random.default_rng(5))
    assert np.abs(noised).max() < bound
    assert (np.abs(noised) > CLIP + 3 * std).any()  # a 3-std range would truncate the noise


def test_central_noise_is_sigma_times_clip():
    assert central_noise_std(SIGMA, CLIP) == pytest.approx(0.6)


def test_distributed_shares_sum_to_the_central_noise():
    n_sites = 10
    rng = np.random.default_rng(1)
    share_std = distributed_noise_std(SIGMA, CLIP, n_sites)
    assert share_std == pytest.approx(SIGMA * CLIP / math.sqrt(n_sites))
    total = sum(gaussian_noise(100_000, share_std, rng) for _ in range(n_sites))
    assert total.std() == pytest.approx(central_noise_std(SIGMA, CLIP), rel=0.01)


def test_dropped_out_shares_leave_less_noise_and_the_charge_must_say_so():
    planned, surviving = 10, 6
    rng = np.random.default_rng(2)
    share_std = distributed_noise_std(SIGMA, CLIP, planned)
    total = sum(gaussian_noise(100_000, share_std, rng) for _ in range(surviving))
    effective = surviving_noise_multiplier(SIGMA, planned, surviving)
    assert effective == pytest.approx(SIGMA * math.sqrt(0.6))
    assert total.std() == pytest.approx(effective * CLIP, rel=0.01)
    assert surviving_noise_multiplier(SIGMA, planned, planned) == SIGMA
    with pytest.raises(ConfigError):
        surviving_noise_multiplier(SIGMA, planned, 0)


def test_production_rng_is_seeded_from_the_os():
    a, b = production_rng(), production_rng()
    assert isinstance(a, np.random.Generator)
    assert a.normal(size=4).tolist() != b.normal(size=4).tolist()


def test_invalid_noise_settings_are_refused_listing_every_problem():
    with pytest.raises(ConfigError) as caught:
        distributed_noise_std(0.0, -1.0, 0)
    assert len(caught.value.problems) == 3
    with pytest.raises(ConfigError):
        gaussian_noise(3, -1.0, np.random.default_rng(0))
