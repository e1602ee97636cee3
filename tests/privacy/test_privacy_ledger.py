"""The site's privacy ledger: honest composition, refusal without side effects, restarts."""

import sqlite3

import pytest

from fedpharma.core.errors import ConfigError, PolicyRefused, PrivacyBudgetExceeded
from fedpharma.privacy import (
    Budget,
    ComposedEvent,
    GaussianEvent,
    PldAccountant,
    PrivacyLedger,
    RdpAccountant,
    dp_sgd_event,
)

DELTA = 1e-5
ROUND_EVENT = dp_sgd_event(1.1, 0.02, 50)  # one round of DP-SGD at a site: ε ≈ 1.27 alone


@pytest.fixture
def path(tmp_path):
    return tmp_path / "site" / "privacy.sqlite"


def ledger(path, epsilon=3.0, accountant=None):
    return PrivacyLedger(
        path, {"record": Budget(epsilon, DELTA), "site": Budget(10.0, DELTA)}, accountant
    )


def test_a_fresh_ledger_has_spent_nothing(path):
    spent = ledger(path).spent("record")
    assert spent.epsilon == 0.0 and spent.delta == DELTA and spent.relation == "record"


def test_cumulative_epsilon_composes_every_charge_and_never_decreases(path):
    site = ledger(path, epsilon=10.0)
    events = [ROUND_EVENT, dp_sgd_event(1.5, 0.02, 300), ROUND_EVENT]
    for round_, event in enumerate(events, start=1):
        site.charge(event, "record", run_id="run-a", round=round_)
    entries = site.entries()
    cumulative = [e.cumulative.epsilon for e in entries]
    assert cumulative == sorted(cumulative) and cumulative[0] > 0
    direct = RdpAccountant().epsilon(ComposedEvent(tuple(events)), DELTA)
    assert cumulative[-1] == pytest.approx(direct, rel=1e-12)
    assert site.spent("record").epsilon == pytest.approx(direct, rel=1e-12)
    # Composition is far below the sum of per-round ε (why the ledger composes events).
    per_round = sum(RdpAccountant().epsilon(e, DELTA) for e in events)
    assert direct < 0.8 * per_round


def test_entries_carry_everything_the_privacy_command_shows(path):
    site = ledger(path)
    site.charge(ROUND_EVENT, "record", run_id="run-a", round=3)
    site.charge(GaussianEvent(4.0), "site", run_id="run-a", round=3)
    record, site_entry = site.entries()
    assert (record.run_id, record.round, record.event) == ("run-a", 3, ROUND_EVENT)
    assert record.cumulative.accountant == "rdp" and record.cumulative.conversion == "improved"
    assert record.cumulative.relation == "record" and record.cumulative.delta == DELTA
    assert site_entry.cumulative.relation == "site"
    assert record.sequence < site_entry.sequence and record.charged_at.endswith("+00:00")
    assert site.entries("site") == (site_entry,)


def test_a_task_over_budget_is_refused_and_leaves_the_ledger_unchanged(path):
    site = ledger(path, epsilon=2.0)
    site.charge(ROUND_EVENT, "record", run_id="run-a", round=1)
    before_entries, before_spent = site.entries(), site.spent("record")
    expensive = dp_sgd_event(1.0, 0.05, 300)
    for attempt in (
        lambda: site.check(expensive, "record", run_id="run-b"),
        lambda: site.charge(expensive, "record", run_id="run-b", round=1),
    ):
        with pytest.raises(PrivacyBudgetExceeded) as caught:
            attempt()
        message = str(caught.value)
        for fragment in (
            "run-b",
            "budget ε = 2.000",
            "already spent ε",
            "alone costs",
            "To proceed",
        ):
            assert fragment in message
        assert site.entries() == before_entries
        assert site.spent("record") == before_spent


def test_budgets_compose_across_runs_and_survive_restarts(path):
    first = ledger(path, epsilon=3.0)
    for rounds_charged in range(1000):  # bounded: a budget that never runs out fails
        try:
            first.charge(ROUND_EVENT, "record", run_id="run-a", round=rounds_charged + 1)
        except PrivacyBudgetExceeded:
            break
    else:
        pytest.fail("a budget of ε = 3 was never exhausted in 1000 rounds")
    assert rounds_charged >= 2
    spent = first.spent("record")

    restarted = ledger(path, epsilon=3.0)  # a new process reading the same file
    assert restarted.entries() == first.entries()
    assert restarted.spent("record") == spent
    with pytest.raises(PrivacyBudgetExceeded):
        restarted.check(
            ROUND_EVENT, "record", run_id="run-b"
        )  # a new run starts from what is spent


def test_two_handles_on_one_file_see_each_others_charges(path):
    runtime, inspector = ledger(path), ledger(path)
    runtime.charge(ROUND_EVENT, "record", run_id="run-a", round=1)
    assert [e.event for e in inspector.entries()] == [ROUND_EVENT]


def test_relations_are_budgeted_separately(path):
    site = ledger(path)
    site.charge(GaussianEvent(1.0), "site", run_id="run-a", round=1)
    assert site.spent("record").epsilon == 0.0
    assert site.spent("site").epsilon > 0


def test_a_relation_without_budget_is_refused_by_policy(path):
    record_only = PrivacyLedger(path, {"record": Budget(1.0, DELTA)})
    with pytest.raises(PolicyRefused, match="no site-level privacy budget") as caught:
        record_only.check(GaussianEvent(5.0), "site", run_id="run-a")
    assert not isinstance(caught.value, PrivacyBudgetExceeded)


def test_a_pld_ledger_states_its_accountant(path):
    site = ledger(path, accountant=PldAccountant(value_discretization_interval=1e-3))
    entry = site.charge(GaussianEvent(3.0), "site", run_id="run-a", round=1)
    assert (entry.cumulative.accountant, entry.cumulative.conversion) == ("pld", "pld")


def test_invalid_budgets_and_foreign_files_are_config_errors(path, tmp_path):
    with pytest.raises(ConfigError):
        Budget(0.0, 1e-5)
    with pytest.raises(ConfigError):
        Budget(1.0, 1.0)
    with pytest.raises(ConfigError, match="relation"):
        PrivacyLedger(path, {"patient": Budget(1.0, DELTA)})
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(ConfigError, match="schema 99"):
        ledger(foreign)
