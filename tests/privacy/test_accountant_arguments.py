"""Accountants refuse impossible arguments naming them, the classic conversion's edges hold, and
dp-accounting's dropped-order warnings are silenced once and only those.

Written against the survivors of `scripts/mutation.py accountant` (README, Development notes).
"""

import logging
import math

import pytest

from fedpharma.core.errors import ConfigError
from fedpharma.privacy import GaussianEvent, PldAccountant, RdpAccountant, make_accountant
from fedpharma.privacy.accountant import (
    _DroppedOrderFilter,
    _quiet_order_warnings,
    classic_delta,
    classic_epsilon,
)

DELTA = 1e-5
FAST_PLD = PldAccountant(value_discretization_interval=1e-3)


def _problems(call):
    with pytest.raises(ConfigError) as raised:
        call()
    return raised.value.source, raised.value.problems


@pytest.mark.parametrize("epsilon", [-0.1, float("inf"), float("nan")])
def test_delta_needs_a_finite_non_negative_epsilon(epsilon):
    assert _problems(lambda: RdpAccountant().delta(GaussianEvent(1.0), epsilon)) == (
        "accountant",
        (f"epsilon must be ≥ 0, got {epsilon!r}",),
    )


@pytest.mark.parametrize("accountant", [RdpAccountant("classic"), RdpAccountant(), FAST_PLD])
def test_delta_at_epsilon_zero_is_a_probability(accountant):
    assert 0.0 < accountant.delta(GaussianEvent(1.0), 0.0) <= 1.0


def test_epsilon_names_an_impossible_delta():
    assert _problems(lambda: RdpAccountant().epsilon(GaussianEvent(1.0), 1.5)) == (
        "accountant",
        ("delta must lie in (0, 1), got 1.5",),
    )


def test_the_classic_conversion_never_claims_a_negative_epsilon():
    # RDP 0 at every order: ε is the smallest log(1/δ)/(α − 1), at the largest order
    assert classic_epsilon([2.0, 3.0], [0.0, 0.0], 0.999) == pytest.approx(math.log(1 / 0.999) / 2)
    assert classic_epsilon([2.0], [-5.0], 0.5) == 0.0


def test_the_classic_conversion_skips_orders_where_the_curve_is_undefined():
    assert classic_epsilon([2.0, 3.0], [float("nan"), 1.0], 0.5) == pytest.approx(
        1.0 + math.log(2) / 2
    )


def test_the_classic_delta_is_capped_at_one_and_takes_the_best_order():
    assert classic_delta([2.0, 3.0], [5.0, 5.0], 0.0) == 1.0
    # exp((α − 1)(RDP − ε)): order 2 gives e^-1, order 3 gives e^-4
    assert classic_delta([2.0, 3.0], [1.0, 0.0], 2.0) == pytest.approx(math.exp(-4.0))


@pytest.mark.parametrize("conversion", ["classic", "improved"])
def test_an_rdp_accountant_states_its_conversion(conversion):
    accountant = RdpAccountant(conversion)
    assert (accountant.name, accountant.conversion) == ("rdp", conversion)
    report = accountant.report(GaussianEvent(2.0), DELTA, "site")
    assert (report.accountant, report.conversion) == ("rdp", conversion)


def test_the_improved_conversion_is_tighter_than_the_classic_one():
    event = GaussianEvent(2.0)
    classic = RdpAccountant("classic")
    improved = RdpAccountant("improved")
    assert improved.epsilon(event, DELTA) < classic.epsilon(event, DELTA)
    assert improved.delta(event, 1.0) < classic.delta(event, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "problems"),
    [
        ({"conversion": "tight"}, ("conversion must be 'classic' or 'improved', got 'tight'",)),
        ({"orders": ()}, ("orders must be a non-empty tuple of finite numbers > 1",)),
        ({"orders": (1.0, 2.0)}, ("orders must be a non-empty tuple of finite numbers > 1",)),
        ({"orders": (2.0, math.inf)}, ("orders must be a non-empty tuple of finite numbers > 1",)),
        (
            {"conversion": "pld", "orders": (0.5,)},
            (
                "conversion must be 'classic' or 'improved', got 'pld'",
                "orders must be a non-empty tuple of finite numbers > 1",
            ),
        ),
    ],
)
def test_an_impossible_rdp_accountant_names_every_problem(kwargs, problems):
    assert _problems(lambda: RdpAccountant(**kwargs)) == ("RDP accountant", problems)


def test_orders_just_above_one_are_accepted():
    assert RdpAccountant(orders=(1.01,)).orders == (1.01,)


@pytest.mark.parametrize("interval", [0.0, 1.0, -1e-3])
def test_the_pld_discretisation_lies_strictly_between_zero_and_one(interval):
    assert _problems(lambda: PldAccountant(value_discretization_interval=interval)) == (
        "PLD accountant",
        (f"value_discretization_interval must lie in (0, 1), got {interval!r}",),
    )


def test_a_coarse_pld_discretisation_still_bounds_epsilon_from_above():
    event = GaussianEvent(2.0)
    assert PldAccountant(0.5).epsilon(event, DELTA) >= FAST_PLD.epsilon(event, DELTA)


@pytest.mark.parametrize(
    ("name", "conversion", "problem"),
    [
        ("moments", None, "accountant must be 'rdp' or 'pld', got 'moments'"),
        ("rdp", "pld", "RDP conversion must be 'classic' or 'improved', got 'pld'"),
        ("pld", "classic", "the PLD accountant needs no conversion, got 'classic'"),
    ],
)
def test_make_accountant_names_what_it_cannot_make(name, conversion, problem):
    assert _problems(lambda: make_accountant(name, conversion)) == ("accountant", (problem,))


def test_make_accountant_accepts_the_explicit_default_conversions():
    assert make_accountant("rdp", "improved") == RdpAccountant("improved")
    assert make_accountant("pld", "pld") == PldAccountant()


def test_dropped_order_warnings_are_silenced_once_and_only_those(monkeypatch):
    absl = logging.getLogger("absl")
    monkeypatch.setattr(absl, "filters", [])  # as in a fresh process
    _quiet_order_warnings()
    _quiet_order_warnings()
    assert len(absl.filters) == 1 and isinstance(absl.filters[0], _DroppedOrderFilter)
    dropped = logging.LogRecord("absl", logging.WARNING, "", 0, "Excluding this order", None, None)
    other = logging.LogRecord("absl", logging.WARNING, "", 0, "something else", None, None)
    assert not absl.filter(dropped) and absl.filter(other)


def test_an_unsupported_event_is_refused_naming_the_accountant_and_event():
    from fedpharma.privacy import PoissonSampledEvent

    nested = PoissonSampledEvent(0.5, PoissonSampledEvent(0.5, GaussianEvent(1.0)))
    source, problems = _problems(lambda: RdpAccountant().epsilon(nested, DELTA))
    assert source == "accountant"
    assert problems == (f"the RDP accountant cannot account for {nested.to_dict()}",)
