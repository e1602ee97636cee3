"""Accountants: published ε values (golden tests), conversions, PLD, supports(), reports."""

import math

import pytest

from fedpharma.core.errors import ConfigError
from fedpharma.privacy import (
    DP_ACCOUNTING_ORDERS,
    TF_PRIVACY_ORDERS,
    GaussianEvent,
    PldAccountant,
    PoissonSampledEvent,
    RdpAccountant,
    SelfComposedEvent,
    dp_sgd_event,
    make_accountant,
)
from fedpharma.privacy.accountant import classic_delta, classic_epsilon

DELTA = 1e-5
MNIST_RATE = 256 / 60_000
# (sampling rate, noise multiplier, steps, ε): TF Privacy's MNIST DP-SGD tutorial table (60, 15
# and 45 epochs of batch 256 over 60,000 examples) and Abadi et al. 2016's q = 0.01, σ = 4 run,
# all computed with the classic RDP→(ε, δ) conversion over TF Privacy's orders.
# dp-accounting's default PLD discretisation (1e-4) takes seconds per event; 1e-3 stays an upper
# bound on ε (pessimistic by construction) and keeps the suite fast.
FAST_PLD = PldAccountant(value_discretization_interval=1e-3)
GOLDEN = [
    (MNIST_RATE, 1.1, 14_062, 3.01),
    (MNIST_RATE, 1.3, 3_515, 1.19),
    (MNIST_RATE, 0.7, 10_546, 7.10),
    (0.01, 4.0, 10_000, 1.26),
]
golden = pytest.mark.parametrize("rate, sigma, steps, expected", GOLDEN)


@golden
def test_classic_conversion_reproduces_tf_privacy(rate, sigma, steps, expected):
    event = dp_sgd_event(sigma, rate, steps)
    assert RdpAccountant("classic", TF_PRIVACY_ORDERS).epsilon(event, DELTA) == pytest.approx(
        expected, abs=0.01
    )
    # dp-accounting's larger order set does not change these values.
    assert RdpAccountant("classic").epsilon(event, DELTA) == pytest.approx(expected, abs=0.01)


@golden
def test_tighter_accounting_gives_lower_epsilon(rate, sigma, steps, expected):
    event = dp_sgd_event(sigma, rate, steps)
    classic = RdpAccountant("classic").epsilon(event, DELTA)
    improved = RdpAccountant("improved").epsilon(event, DELTA)
    pld = FAST_PLD.epsilon(event, DELTA)
    assert pld < improved < classic
    assert improved > 0.75 * classic and pld > 0.75 * improved  # tighter, not a different claim


def test_our_default_orders_are_dp_accountings():
    from dp_accounting.rdp.rdp_privacy_accountant import DEFAULT_RDP_ORDERS

    assert tuple(map(float, DEFAULT_RDP_ORDERS)) == DP_ACCOUNTING_ORDERS


def test_classic_conversion_of_the_gaussian_mechanism_matches_its_closed_form():
    # RDP of the Gaussian mechanism is α / (2σ²) (Mironov 2017, Prop. 7); minimise in closed form
    # over the continuous α: ε = 1/(2σ²) + √(2 log(1/δ)) / σ.
    sigma = 20.0
    orders = [1 + i / 100 for i in range(1, 100_000)]
    rdp = [a / (2 * sigma**2) for a in orders]
    expected = 1 / (2 * sigma**2) + math.sqrt(2 * math.log(1 / DELTA)) / sigma
    assert classic_epsilon(orders, rdp, DELTA) == pytest.approx(expected, rel=1e-6)
    assert classic_delta(orders, rdp, expected) == pytest.approx(DELTA, rel=1e-3)


@pytest.mark.parametrize(
    "accountant", [RdpAccountant("classic"), RdpAccountant("improved"), FAST_PLD]
)
def test_delta_inverts_epsilon(accountant):
    event = SelfComposedEvent(GaussianEvent(3.0), 20)
    epsilon = accountant.epsilon(event, DELTA)
    assert accountant.delta(event, epsilon) == pytest.approx(DELTA, rel=0.05)
    assert accountant.delta(event, epsilon * 1.2) < DELTA


@pytest.mark.parametrize("accountant", [RdpAccountant(), FAST_PLD])
def test_unsupported_events_are_refused_before_composing(accountant):
    nested = PoissonSampledEvent(0.5, PoissonSampledEvent(0.5, GaussianEvent(1.0)))
    assert not accountant.supports(nested)
    assert accountant.supports(dp_sgd_event(1.0, 0.5, 3))
    with pytest.raises(ConfigError, match="cannot account"):
        accountant.epsilon(nested, DELTA)


def test_every_report_names_accountant_conversion_relation_and_delta():
    event = dp_sgd_event(1.1, MNIST_RATE, 14_062)
    report = RdpAccountant("classic").report(event, DELTA, "record")
    assert (report.accountant, report.conversion, report.relation) == ("rdp", "classic", "record")
    assert report.delta == DELTA and report.epsilon == pytest.approx(3.01, abs=0.01)
    text = str(report)
    for fragment in ("ε = 3.008", "δ = 1.0e-05", "record-level", "RDP accountant", "Mironov 2017"):
        assert fragment in text
    pld = FAST_PLD.report(GaussianEvent(2.0), DELTA, "site")
    assert (pld.accountant, pld.conversion, pld.relation) == ("pld", "pld", "site")
    assert "site-level" in str(pld) and "privacy loss distribution" in str(pld)


def test_make_accountant_reads_policy_strings():
    assert make_accountant("rdp") == RdpAccountant("improved")
    assert make_accountant("rdp", "classic") == RdpAccountant("classic")
    assert make_accountant("pld") == PldAccountant()
    for name, conversion in [("moments", None), ("rdp", "pld"), ("pld", "classic")]:
        with pytest.raises(ConfigError):
            make_accountant(name, conversion)


def test_classic_conversion_fails_closed_on_an_undefined_rdp_curve():
    orders = [2.0, 4.0, 8.0]
    # Undefined at some orders: the others still bound ε.
    assert classic_epsilon(orders, [math.nan, 1.0, math.nan], DELTA) > 1.0
    with pytest.raises(ConfigError, match="undefined at every order"):
        classic_epsilon(orders, [math.nan] * 3, DELTA)
    assert classic_delta(orders, [math.nan] * 3, 1.0) == 1.0  # no bound: δ = 1, not 0


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, float("nan")])
def test_delta_must_be_a_probability_strictly_inside_zero_one(delta):
    with pytest.raises(ConfigError, match="delta"):
        RdpAccountant().epsilon(GaussianEvent(1.0), delta)


def test_invalid_accountant_settings_are_refused():
    with pytest.raises(ConfigError):
        RdpAccountant("tight")
    with pytest.raises(ConfigError):
        RdpAccountant(orders=(0.5, 2.0))
    with pytest.raises(ConfigError):
        PldAccountant(value_discretization_interval=0.0)
