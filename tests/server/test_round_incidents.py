"""What the round loop rejects reaches the audit log, and a round keeps every failure reason.

The transport accepts a result whose frame is sound and audits ``result_accepted``; the round
loop then validates it against its task. A rejection there (an update that does not fit the
model, say) must reach the log too, or the log says the site's result was taken when it was
not. And a site that failed both to train and to evaluate in one round keeps both reasons in the
run store.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from fedpharma.core.errors import RoundFailed
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import EvaluateResult, EvaluateTask, Failure, TrainResult, TrainTask
from fedpharma.server import federation as federation_module
from fedpharma.server.audit import AuditLog, read_entries
from fedpharma.server.federation import Federation, FederationSettings
from fedpharma.server.run_observers import AuditRejections
from fedpharma.server.store import RunStore
from fedpharma.strategy import FedAvg

MODEL = Parameters(("w",), (np.zeros(4, dtype=np.float32),))
WRONG = Parameters(("w",), (np.zeros(5, dtype=np.float32),))


class Sites:
    """Sites "a" and "c" answer well; "b" sends ``b_train`` and fails evaluation if asked."""

    def __init__(self, b_train: object, b_evaluate: object = None) -> None:
        self.b_train, self.b_evaluate = b_train, b_evaluate

    def available_sites(self):
        return ("a", "b", "c")

    def exchange(self, tasks, timeout=None):
        replies = {}
        for site, task in tasks.items():
            if isinstance(task, TrainTask):
                update = Parameters(("w",), (np.ones(4, dtype=np.float32),))
                good = TrainResult(task.run_id, task.round, site, update, 10, {})
                replies[site] = self.b_train if site == "b" else good
            elif isinstance(task, EvaluateTask):
                good = EvaluateResult(task.run_id, task.round, site, 5, {"rmse": 1.0})
                replies[site] = self.b_evaluate if site == "b" and self.b_evaluate else good
        return replies


def run_round(tmp_path, sites, *, audited: bool) -> list:
    audit = AuditLog(tmp_path / "audit.jsonl", durable=False)
    store = RunStore.create(tmp_path / "run.sqlite", "r", {}, durable=False)
    hook = AuditRejections(audit) if audited else None
    federation = Federation(
        FedAvg(), FederationSettings(min_sites=2), store=store, on_rejected=hook
    )
    federation.round(sites, MODEL, 1, 1, "r")
    store.close()
    audit.close()
    return read_entries(tmp_path / "audit.jsonl")


def test_an_update_the_round_loop_rejects_is_audited_as_rejected(tmp_path):
    wrong = TrainResult("r", 1, "b", WRONG, 10, {})
    entries = run_round(tmp_path, Sites(wrong), audited=True)
    rejected = [e for e in entries if e.kind == "result_rejected"]
    assert [(e.site, e.round) for e in rejected] == [("b", 1)]
    assert rejected[0].reason.startswith("round loop:") and "shape" in rejected[0].reason


def test_weakened_twin_without_the_hook_the_rejection_never_reaches_the_log(tmp_path):
    wrong = TrainResult("r", 1, "b", WRONG, 10, {})
    entries = run_round(tmp_path, Sites(wrong), audited=False)
    assert not [e for e in entries if e.kind == "result_rejected"]


def incidents(tmp_path) -> list[tuple[int, str, str, str]]:
    with sqlite3.connect(tmp_path / "run.sqlite") as db:
        return db.execute("SELECT round, site, kind, reason FROM incidents").fetchall()


def test_a_site_that_failed_to_train_and_to_evaluate_keeps_both_reasons(tmp_path):
    sites = Sites(Failure("b", "train crashed"), Failure("b", "evaluate timed out"))
    run_round(tmp_path, sites, audited=True)
    ((rnd, site, kind, reason),) = incidents(tmp_path)
    assert (rnd, site, kind) == (1, "b", "failed")
    assert "train crashed" in reason and "evaluate timed out" in reason


def test_weakened_twin_a_plain_dict_union_loses_one_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(federation_module, "merge_failures", lambda train, ev: ev | train)
    sites = Sites(Failure("b", "train crashed"), Failure("b", "evaluate timed out"))
    run_round(tmp_path, sites, audited=True)
    ((_, _, _, reason),) = incidents(tmp_path)
    assert "evaluate timed out" not in reason


@pytest.mark.parametrize("failed", ["train", "evaluate"])
def test_a_failure_in_one_phase_only_keeps_its_reason_unchanged(tmp_path, failed):
    train = Failure("b", "train crashed") if failed == "train" else None
    if train is None:
        sites = Sites(TrainResult("r", 1, "b", MODEL, 10, {}), Failure("b", "evaluate timed out"))
    else:
        sites = Sites(train)
    run_round(tmp_path, sites, audited=True)
    ((_, _, _, reason),) = incidents(tmp_path)
    assert reason == ("train crashed" if failed == "train" else "evaluate timed out")


class FlakySites(Sites):
    """ "b" and "c" fail their first train task, each for its own reason, then answer well."""

    def __init__(self) -> None:
        super().__init__(
            TrainResult("r", 1, "b", Parameters(("w",), (np.ones(4, np.float32),)), 10, {})
        )
        self.trained = 0

    def exchange(self, tasks, timeout=None):
        replies = super().exchange(tasks, timeout)
        if any(isinstance(t, TrainTask) for t in tasks.values()):
            self.trained += 1
            if self.trained == 1:
                replies |= {"b": Failure("b", "train crashed"), "c": Failure("c", "no reply")}
        return replies


def run_retried(tmp_path, retries: int) -> None:
    store = RunStore.create(tmp_path / "run.sqlite", "r", {}, durable=False)
    settings = FederationSettings(min_sites=3, retries=retries, evaluate_every=0)
    try:
        Federation(FedAvg(), settings, store=store).run(FlakySites(), MODEL, 1, run_id="r")
    finally:
        store.close()


def test_a_failed_and_retried_round_keeps_every_reason_of_the_failed_attempt(tmp_path):
    run_retried(tmp_path, retries=1)
    kept = [i for i in incidents(tmp_path) if i[2] == "attempt_failed"]
    assert sorted(kept) == [
        (1, "b", "attempt_failed", "attempt 1: train crashed"),
        (1, "c", "attempt_failed", "attempt 1: no reply"),
    ]
    with sqlite3.connect(tmp_path / "run.sqlite") as db:
        assert db.execute("SELECT round FROM rounds").fetchall() == [(1,)]  # the retry completed


def test_a_run_that_gives_up_keeps_the_reasons_of_every_attempt(tmp_path):
    with pytest.raises(RoundFailed):
        run_retried(tmp_path, retries=0)
    assert {i[3] for i in incidents(tmp_path)} == {
        "attempt 1: train crashed",
        "attempt 1: no reply",
    }


def test_weakened_twin_without_recording_attempts_the_reasons_are_lost(tmp_path, monkeypatch):
    monkeypatch.setattr(RunStore, "record_attempt", lambda self, rnd, attempt, reasons: None)
    run_retried(tmp_path, retries=1)
    assert not [i for i in incidents(tmp_path) if "train crashed" in i[3]]
