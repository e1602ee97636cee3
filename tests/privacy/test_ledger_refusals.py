"""The privacy ledger: a task exactly at the budget passes, the refusal states the real numbers,
what charge returns is what was stored, and every budget problem is named.

Written against the survivors of `scripts/mutation.py ledger` (README, Development notes).
"""

import re
import sqlite3

import pytest

from fedpharma.core.errors import ConfigError, PolicyRefused, PrivacyBudgetExceeded
from fedpharma.privacy import (
    Budget,
    GaussianEvent,
    PrivacyLedger,
    RdpAccountant,
    compose,
)

DELTA = 1e-5


@pytest.fixture
def path(tmp_path):
    return tmp_path / "nested" / "site" / "privacy.sqlite"


def test_a_task_that_brings_epsilon_exactly_to_the_budget_is_allowed(path):
    event = GaussianEvent(2.0)
    exact = RdpAccountant().epsilon(compose([event]), DELTA)
    site = PrivacyLedger(path, {"site": Budget(exact, DELTA)})
    assert site.charge(event, "site", run_id="run-a", round=1).cumulative.epsilon == exact


def test_a_refusal_states_the_epsilon_after_before_and_alone(path):
    first, second = GaussianEvent(2.0), GaussianEvent(1.0)
    accountant = RdpAccountant()
    before = accountant.epsilon(compose([first]), DELTA)
    after = accountant.epsilon(compose([first, second]), DELTA)
    alone = accountant.epsilon(second, DELTA)
    site = PrivacyLedger(path, {"site": Budget(before + 0.01, DELTA)})
    site.charge(first, "site", run_id="run-a", round=1)
    expected = (
        f"site-level privacy budget exceeded: run 'run-b' asks for a task that would bring this "
        f"site's ε to {after:.3f} at δ = 1.0e-05, over its budget ε = {before + 0.01:.3f} "
        f"(already spent ε = {before:.3f} over 1 charge(s); this task alone costs ε = "
        f"{alone:.3f}; RDP accountant, improved RDP→(ε,δ) conversion (Canonne et al. 2020; "
        "Balle et al. 2020)). To proceed, the coordinator can plan more noise (a larger noise "
        "multiplier), fewer rounds or steps, or a smaller sampling rate; or the data owner can "
        "raise the budget in the site's policy file."
    )
    with pytest.raises(PrivacyBudgetExceeded, match=r"^" + re.escape(expected) + "$"):
        site.check(second, "site", run_id="run-b")


def test_charge_returns_exactly_the_entry_it_stored(path):
    site = PrivacyLedger(path, {"site": Budget(10.0, DELTA), "record": Budget(10.0, DELTA)})
    returned = [
        site.charge(GaussianEvent(3.0), "site", run_id="run-a", round=1),
        site.charge(GaussianEvent(4.0), "record", run_id="run-b", round=7),
    ]
    assert site.entries() == tuple(returned)
    assert [e.sequence for e in returned] == [1, 2]
    assert returned[1].cumulative.relation == "record"


def test_a_new_ledger_file_is_stamped_with_its_schema(path):
    PrivacyLedger(path, {"site": Budget(1.0, DELTA)})
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (1,)
    PrivacyLedger(path, {"site": Budget(1.0, DELTA)})  # and reopens


def test_the_default_accountant_is_rdp_with_the_improved_conversion(path):
    site = PrivacyLedger(path, {"site": Budget(1.0, DELTA)})
    spent = site.spent("site")
    assert (spent.epsilon, spent.delta, spent.accountant, spent.conversion, spent.relation) == (
        0.0,
        DELTA,
        "rdp",
        "improved",
        "site",
    )


@pytest.mark.parametrize(
    ("epsilon", "delta", "problems"),
    [
        (0.0, DELTA, ["budget epsilon must be a finite number > 0, got 0.0"]),
        (float("inf"), DELTA, ["budget epsilon must be a finite number > 0, got inf"]),
        (1.0, 0.0, ["budget delta must lie in (0, 1), got 0.0"]),
        (1.0, 1.0, ["budget delta must lie in (0, 1), got 1.0"]),
        (1.0, float("nan"), ["budget delta must lie in (0, 1), got nan"]),
        (
            -1.0,
            2.0,
            [
                "budget epsilon must be a finite number > 0, got -1.0",
                "budget delta must lie in (0, 1), got 2.0",
            ],
        ),
    ],
)
def test_an_impossible_budget_names_each_problem(epsilon, delta, problems):
    with pytest.raises(ConfigError) as raised:
        Budget(epsilon, delta)
    assert raised.value.problems == tuple(problems)
    assert raised.value.source == "privacy budget"


def test_a_budget_at_its_smallest_valid_values_is_accepted():
    assert Budget(1e-9, 1e-12).delta == 1e-12


def test_unknown_relations_are_named(path):
    with pytest.raises(ConfigError) as raised:
        PrivacyLedger(path, {"patient": Budget(1.0, DELTA), "zoo": Budget(1.0, DELTA)})
    assert raised.value.source == "privacy budget"
    assert raised.value.problems == (
        "unknown neighbouring relation(s) ['patient', 'zoo']; expected ['record', 'site']",
    )
    site = PrivacyLedger(path, {"site": Budget(1.0, DELTA)})
    with pytest.raises(ConfigError) as raised:
        site.spent("patient")
    assert raised.value.source == "privacy ledger"
    assert raised.value.problems == (
        "unknown neighbouring relation 'patient'; expected one of ['record', 'site']",
    )


def test_a_ledger_of_another_schema_is_refused_naming_both_versions(path):
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 2")
    with pytest.raises(ConfigError) as raised:
        PrivacyLedger(path, {"site": Budget(1.0, DELTA)})
    assert raised.value.source == "privacy ledger"
    assert raised.value.problems == (
        f"{path} is a privacy ledger of schema 2; this fedpharma reads schema 1",
    )


def test_a_missing_budget_says_how_the_owner_can_add_one(path):
    site = PrivacyLedger(path, {"site": Budget(1.0, DELTA)})
    with pytest.raises(
        PolicyRefused,
        match=(
            "this site's policy sets no record-level privacy budget, so it accepts no "
            r"record-level DP task; the data owner can add one \(epsilon and delta\) to the "
            "site's policy file$"
        ),
    ):
        site.charge(GaussianEvent(5.0), "record", run_id="run-a", round=1)
