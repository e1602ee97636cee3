"""A site with a valid certificate attacks the coordinator with its results: a gigabyte
declared, crafted shapes, a float64 update, replays, two answers to one task. Each attack has its
expected outcome (honest sites keep their rounds, the task is answered with the failure at once,
the hostile site is named in the audit) and a weakened twin in which the same check fails.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from fedpharma.core.protocol import Failure, TrainResult
from fedpharma.core.protocol.codec import decode_message
from fedpharma.transport.grpc import (
    CertificateRefused,
    PayloadTooLarge,
    ResultRejected,
    registry,
    servicer,
)
from fedpharma.transport.grpc.bounds import ReplyBound
from tests.attacks.arena import (
    HOSTILE,
    Arena,
    answer,
    arena,
    crafted_result,
    encoded,
    honest_kept_their_rounds,
)

# ----- pushes: declared size, crafted shapes, wrong dtype ---------------------------------------


@dataclass(frozen=True)
class Push:
    error: object  # what the hostile's push got back
    hostile_reply: object  # what the round recorded for the hostile site
    seconds: float  # how long the round took
    rounds: tuple[dict, ...]
    offences: list


def push_attack(arena_: Arena, forge, deadline: float = 4.0) -> Push:
    """The hostile site answers round 1 with ``forge(arena, pulled, task)``'s push."""
    start = time.monotonic()
    pending = arena_.start_round(1, hostile=True, timeout=deadline)
    pulled = arena_.hostile.task()
    task = decode_message(pulled.payload)
    error = arena_.hostile.attempt(lambda: forge(arena_, pulled, task))
    first = pending.result()
    seconds = time.monotonic() - start
    return Push(error, first[HOSTILE], seconds, (first, arena_.round(2)), arena_.offences())


def check_refused(outcome: Push, error_type: type, says: str) -> None:
    assert isinstance(outcome.error, error_type), outcome.error
    assert says in str(outcome.error)
    assert isinstance(outcome.hostile_reply, Failure)
    assert outcome.seconds < 2.5  # the task was answered with the failure, not left locked
    honest_kept_their_rounds(*outcome.rounds)
    assert any(e.kind == "result_rejected" and says in e.reason for e in outcome.offences)


def declare_a_gigabyte(arena_, pulled, task):
    arena_.hostile.push(pulled, encoded(answer(task, HOSTILE)), total_bytes=1 << 30)


def test_a_push_may_declare_only_what_its_task_can_return(consortium, tmp_path):
    with arena(consortium, tmp_path) as a:
        outcome = push_attack(a, declare_a_gigabyte)
    check_refused(outcome, PayloadTooLarge, "legitimately")


def test_weakened_twin_under_the_global_limit_a_gigabyte_is_reserved(
    consortium, tmp_path, monkeypatch
):
    monkeypatch.setattr(registry, "reply_bound", lambda task, values, limit: ReplyBound(limit))
    with arena(consortium, tmp_path) as a:
        outcome = push_attack(a, declare_a_gigabyte)
    with pytest.raises(AssertionError):
        check_refused(outcome, PayloadTooLarge, "legitimately")


SHAPES = {
    "2^32 x 2^32": [2**32, 2**32],
    "2^70": [2**70],
    "negative": [-1000],
    "empty with a huge axis": [0, 2**70],
    "100 dimensions": [1] * 100,
}


def crafted_shape(shape):
    def forge(arena_, pulled, task):
        arena_.hostile.push(pulled, crafted_result(task, HOSTILE, shape, 4 * 1003))

    return forge


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_a_crafted_shape_is_rejected_audited_and_releases_the_task(consortium, tmp_path, shape):
    with arena(consortium, tmp_path) as a:
        outcome = push_attack(a, crafted_shape(shape))
    check_refused(outcome, ResultRejected, "parameter payload")


def test_weakened_twin_a_decoder_without_its_shape_check_leaves_the_round_waiting(
    consortium, tmp_path, monkeypatch
):
    from fedpharma.core import params

    monkeypatch.setattr(params, "_check_extent", lambda *_: None)
    with arena(consortium, tmp_path) as a:
        outcome = push_attack(a, crafted_shape(SHAPES["empty with a huge axis"]))
    with pytest.raises(AssertionError):
        check_refused(outcome, ResultRejected, "parameter payload")
    # the guard still audits and releases: the round is not locked, it waits for a retry
    assert any("could not read" in e.reason for e in outcome.offences)


def float64_update(arena_, pulled, task):
    arena_.hostile.push(pulled, encoded(answer(task, HOSTILE, dtype="float64")))


def test_a_float64_update_for_a_float32_model_is_rejected(consortium, tmp_path):
    with arena(consortium, tmp_path) as a:
        outcome = push_attack(a, float64_update)
    check_refused(outcome, ResultRejected, "float64")


def test_weakened_twin_without_the_dtype_check_float64_is_accepted(
    consortium, tmp_path, monkeypatch
):
    monkeypatch.setattr(servicer, "check_update", lambda *_: None)
    with arena(consortium, tmp_path) as a:
        outcome = push_attack(a, float64_update)
    with pytest.raises(AssertionError):
        check_refused(outcome, ResultRejected, "float64")
    assert isinstance(outcome.hostile_reply, TrainResult)


# ----- replay and equivocation ------------------------------------------------------------------


@dataclass(frozen=True)
class Replay:
    errors: tuple[object, ...]
    second: object  # the hostile's answer in round 2
    offences: list


def replay(arena_: Arena) -> Replay:
    """Round 1 answered honestly; in round 2 the round-1 push is sent again verbatim, then the
    round-1 answer under round 2's header (a site re-using a stale update)."""
    pending = arena_.start_round(1, hostile=True)
    first = arena_.hostile.task()
    old = encoded(answer(decode_message(first.payload), HOSTILE))
    arena_.hostile.push(first, old)
    honest_kept_their_rounds(pending.result())
    pending = arena_.start_round(2, hostile=True)
    current = arena_.hostile.task()
    verbatim = arena_.hostile.attempt(lambda: arena_.hostile.push(first, old))
    stale = arena_.hostile.attempt(lambda: arena_.hostile.push(current, old))
    second = pending.result()
    honest_kept_their_rounds(second)
    return Replay((verbatim, stale), second[HOSTILE], arena_.offences())


def check_replay(outcome: Replay) -> None:
    assert all(isinstance(e, ResultRejected) for e in outcome.errors), outcome.errors
    assert not isinstance(outcome.second, TrainResult)
    assert sum(e.kind == "result_rejected" for e in outcome.offences) == 2


def test_replayed_results_are_rejected_and_named(consortium, tmp_path):
    with arena(consortium, tmp_path) as a:
        outcome = replay(a)
    check_replay(outcome)


def test_weakened_twin_without_the_round_check_a_stale_update_counts(
    consortium, tmp_path, monkeypatch
):
    monkeypatch.setattr(
        servicer, "_decode_reply", lambda payload, site, task: decode_message(payload)
    )
    with arena(consortium, tmp_path) as a:
        outcome = replay(a)
    with pytest.raises(AssertionError):
        check_replay(outcome)
    assert isinstance(outcome.second, TrainResult) and outcome.second.round == 1


@dataclass(frozen=True)
class Equivocation:
    second: object
    recorded: object
    offences: list


def equivocate(arena_: Arena) -> Equivocation:
    """The hostile site answers one task twice with different updates."""
    pending = arena_.start_round(1, hostile=True, timeout=2.0)
    pulled = arena_.hostile.task()
    task = decode_message(pulled.payload)
    arena_.hostile.push(pulled, encoded(answer(task, HOSTILE, offset=1.0)))
    second = arena_.hostile.attempt(
        lambda: arena_.hostile.push(pulled, encoded(answer(task, HOSTILE, offset=-50.0)))
    )
    replies = pending.result()
    honest_kept_their_rounds(replies)
    return Equivocation(second, replies[HOSTILE], arena_.offences())


def check_equivocation(outcome: Equivocation) -> None:
    assert isinstance(outcome.second, ResultRejected)
    assert isinstance(outcome.recorded, TrainResult)
    assert outcome.recorded.update.arrays[1][0] == 2.0  # ones + the first answer's offset 1
    assert any(e.kind == "result_rejected" for e in outcome.offences)


def test_a_second_answer_to_one_task_is_rejected(consortium, tmp_path):
    with arena(consortium, tmp_path) as a:
        outcome = equivocate(a)
    check_equivocation(outcome)


def test_weakened_twin_a_registry_that_keeps_answered_tasks_lets_the_site_change_its_mind(
    consortium, tmp_path, monkeypatch
):
    resolve = registry.SiteRegistry.resolve

    def forgetful_resolve(self, site, task, answer_, received_bytes=0):
        if site != HOSTILE:
            return resolve(self, site, task, answer_, received_bytes)
        with self._cond:  # records the answer but keeps the task open for another
            self._answers[site] = answer_
            task.receiving = False
            self._cond.notify_all()
        return None

    monkeypatch.setattr(registry.SiteRegistry, "resolve", forgetful_resolve)
    with arena(consortium, tmp_path) as a:
        outcome = equivocate(a)
    with pytest.raises(AssertionError):
        check_equivocation(outcome)
    assert not isinstance(outcome.second, ResultRejected)


# ----- a result in another site's name ---------------------------------------------------------


def impersonate(arena_: Arena) -> tuple[object, dict, list]:
    """The hostile site pushes its answer in site-a's name (header and message)."""
    pending = arena_.start_round(1, hostile=True, timeout=2.0)
    pulled = arena_.hostile.task()
    forged = answer(decode_message(pulled.payload), "site-a", offset=-50.0)
    error = arena_.hostile.attempt(
        lambda: arena_.hostile.push(pulled, encoded(forged), site="site-a")
    )
    return error, pending.result(), arena_.offences()


def check_impersonation(error: object, replies: dict, offences: list) -> None:
    assert isinstance(error, CertificateRefused) and "belongs to site 'site-m'" in str(error)
    honest_kept_their_rounds(replies)
    assert replies["site-a"].update.arrays[1][0] == 2.0  # site-a's own answer stands
    assert any(e.kind == "denied" and "site-a" in e.reason for e in offences)


def test_a_result_in_another_sites_name_is_denied_and_the_impostor_named(consortium, tmp_path):
    with arena(consortium, tmp_path) as a:
        check_impersonation(*impersonate(a))


def test_weakened_twin_trusting_the_claimed_name_names_the_victim(
    consortium, tmp_path, monkeypatch
):
    monkeypatch.setattr(
        servicer.CoordinatorServicer, "_identify", lambda self, ctx, claimed: claimed
    )
    with arena(consortium, tmp_path) as a:
        outcome = impersonate(a)
    with pytest.raises(AssertionError):
        check_impersonation(*outcome)
