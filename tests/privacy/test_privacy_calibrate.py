"""Noise calibration by bisection over the accountant."""

import pytest

from fedpharma.core.errors import ConfigError
from fedpharma.privacy import (
    TF_PRIVACY_ORDERS,
    GaussianEvent,
    PldAccountant,
    RdpAccountant,
    SelfComposedEvent,
    calibrate_noise_multiplier,
    dp_sgd_event,
    noise_for_dp_sgd,
    noise_for_site_rounds,
)

DELTA = 1e-5
MNIST_RATE = 256 / 60_000


@pytest.mark.parametrize("target", [0.5, 3.0, 8.0])
def test_dp_sgd_noise_hits_the_target_epsilon_from_the_private_side(target):
    calibration = noise_for_dp_sgd(target, DELTA, sampling_rate=MNIST_RATE, steps=14_062)
    report = calibration.report
    assert target * 0.99 <= report.epsilon <= target
    assert (report.accountant, report.conversion, report.relation) == ("rdp", "improved", "record")
    # The reverse direction is just the accountant.
    event = dp_sgd_event(calibration.noise_multiplier, MNIST_RATE, 14_062)
    assert RdpAccountant().epsilon(event, DELTA) == report.epsilon


def test_calibrating_to_a_published_epsilon_recovers_its_noise_multiplier():
    accountant = RdpAccountant("classic", TF_PRIVACY_ORDERS)
    calibration = noise_for_dp_sgd(
        3.0083, DELTA, sampling_rate=MNIST_RATE, steps=14_062, accountant=accountant
    )
    assert calibration.noise_multiplier == pytest.approx(1.1, rel=0.01)


def test_site_level_rounds_calibrate_with_pld():
    accountant = PldAccountant(value_discretization_interval=1e-3)
    calibration = noise_for_site_rounds(2.0, DELTA, rounds=50, accountant=accountant)
    assert 1.98 <= calibration.report.epsilon <= 2.0
    assert calibration.report.relation == "site" and calibration.report.accountant == "pld"
    rdp = noise_for_site_rounds(2.0, DELTA, rounds=50)
    assert calibration.noise_multiplier < rdp.noise_multiplier  # tighter accounting, less noise


def test_an_unreachable_target_is_a_config_error_naming_the_ways_out():
    with pytest.raises(ConfigError, match="fewer"):
        noise_for_site_rounds(1e-6, DELTA, rounds=100)


def test_a_generous_target_needs_little_noise_and_is_still_met():
    calibration = calibrate_noise_multiplier(
        1e6, DELTA, lambda s: SelfComposedEvent(GaussianEvent(s), 2), RdpAccountant(), "site"
    )
    assert calibration.noise_multiplier < 0.1
    assert calibration.report.epsilon <= 1e6


@pytest.mark.parametrize("target", [0.0, -1.0, float("inf")])
def test_target_epsilon_must_be_positive_and_finite(target):
    with pytest.raises(ConfigError):
        noise_for_site_rounds(target, DELTA, rounds=1)
