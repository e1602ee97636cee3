"""A site with a valid certificate attacks the coordinator; each attack has its expected outcome
(honest sites keep their rounds, the coordinator keeps serving, the hostile site is named in the
audit) and a weakened twin: the same attack with its defence switched off fails the check, so
the check is not one that cannot fail.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from fedpharma.errors import FedPharmaError
from fedpharma.protocol import Failure, TrainResult
from fedpharma.protocol.codec import decode_message
from fedpharma.transport.grpc import (
    CertificateRefused,
    PayloadTooLarge,
    ResultRejected,
    registry,
    servicer,
)
from fedpharma.transport.grpc.admission import AdmissionSettings
from fedpharma.transport.grpc.bounds import ReplyBound
from tests.attacks.arena import (
    HONEST,
    HOSTILE,
    OPEN_DOOR,
    Arena,
    Hostile,
    answer,
    arena,
    crafted_result,
    encoded,
    honest_kept_their_rounds,
)

# ----- holding many long-poll pulls -------------------------------------------------------------


@dataclass(frozen=True)
class Hoard:
    held: int  # pulls the coordinator kept waiting (each one holds a worker thread)
    refused: int
    rounds: tuple[dict, ...]
    offences: int


def hoard_pulls(arena_: Arena, pulls: int = 40, wait: float = 2.0) -> Hoard:
    """The hostile site opens ``pulls`` long-polls at once while the honest sites train."""
    outcomes: list[object] = []
    lock = threading.Lock()

    def pull() -> None:
        start = time.monotonic()
        result = arena_.hostile.attempt(lambda: arena_.hostile.connection.pull(wait))
        with lock:
            outcomes.append(time.monotonic() - start if result is None else result)

    threads = [threading.Thread(target=pull) for _ in range(pulls)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    rounds = (arena_.round(1), arena_.round(2))
    for thread in threads:
        thread.join(10)
    held = sum(1 for o in outcomes if isinstance(o, float) and o >= wait / 2)
    refused = sum(1 for o in outcomes if isinstance(o, FedPharmaError))
    return Hoard(held, refused, rounds, len(arena_.offences()))


def check_hoard(outcome: Hoard, most_held: int) -> None:
    assert outcome.held <= most_held
    honest_kept_their_rounds(*outcome.rounds)
    assert outcome.offences >= 1


def test_a_site_holds_one_pull_at_a_time(consortium, tmp_path):
    with arena(consortium, tmp_path, max_pull_wait=2.0) as a:
        outcome = hoard_pulls(a)
    check_hoard(outcome, most_held=1)
    assert outcome.refused >= 35


def test_weakened_twin_without_admission_the_pulls_are_hoarded(consortium, tmp_path):
    with arena(consortium, tmp_path, max_pull_wait=2.0, admission=OPEN_DOOR) as a:
        outcome = hoard_pulls(a)
    with pytest.raises(AssertionError):
        check_hoard(outcome, most_held=1)
    assert outcome.held > 5


# ----- flooding with calls ----------------------------------------------------------------------


@dataclass(frozen=True)
class Flood:
    quarantined: bool
    entries: int  # audit entries naming the hostile site
    rounds: tuple[dict, ...]
    after: dict  # a round after the flood


def flood(arena_: Arena, threads: int = 8, calls: int = 50) -> Flood:
    """``threads`` × ``calls`` heartbeats as fast as they go, while the honest sites train."""

    def beat() -> None:
        for _ in range(calls):
            arena_.hostile.attempt(arena_.hostile.connection.heartbeat)

    workers = [threading.Thread(target=beat) for _ in range(threads)]
    for worker in workers:
        worker.start()
    rounds = (arena_.round(1), arena_.round(2))
    for worker in workers:
        worker.join(20)
    quarantined = HOSTILE in arena_.server.admission.quarantined()
    return Flood(quarantined, len(arena_.entries()), rounds, arena_.round(3))


def check_flood(outcome: Flood) -> None:
    honest_kept_their_rounds(*outcome.rounds, outcome.after)
    assert outcome.quarantined
    assert outcome.entries <= 12  # summarised: not one fsync'ed entry per refused call


def test_a_flooding_site_is_throttled_then_quarantined_with_a_bounded_audit(consortium, tmp_path):
    with arena(consortium, tmp_path) as a:
        outcome = flood(a)
        kinds = [e.kind for e in a.entries()]
        refused_join = a.hostile.attempt(a.hostile.join)
    check_flood(outcome)
    assert "quarantined" in kinds and "refused" in kinds
    assert isinstance(refused_join, CertificateRefused) and "quarantined" in str(refused_join)


def test_weakened_twin_without_admission_the_flood_goes_unnamed(consortium, tmp_path):
    with arena(consortium, tmp_path, admission=OPEN_DOOR) as a:
        outcome = flood(a)
    with pytest.raises(AssertionError):
        check_flood(outcome)
    assert not outcome.quarantined


def test_weakened_twin_without_summaries_every_refusal_is_an_audit_entry(consortium, tmp_path):
    unsummarised = AdmissionSettings(audit_burst=10**6)
    with arena(consortium, tmp_path, admission=unsummarised) as a:
        outcome = flood(a)
    with pytest.raises(AssertionError):
        check_flood(outcome)
    assert outcome.quarantined and outcome.entries > 50


# ----- pushes: declared size, crafted shapes, wrong dtype ---------------------------------------


@dataclass(frozen=True)
class Push:
    error: object  # what the hostile's push got back
    hostile_reply: object  # what the round recorded for the hostile site
    seconds: float  # how long the round took
    rounds: tuple[dict, ...]
    offences: list


def push_attack(arena_: Arena, forge, deadline: float = 3.0) -> Push:
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
    assert outcome.seconds < 2.0  # the task was answered with the failure, not left locked
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
    from fedpharma import params

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


# ----- downloading one task again and again ------------------------------------------------------


def redownload(arena_: Arena, times: int = 20) -> tuple[int, int]:
    """The hostile pulls its one task ``times`` times; (downloads served, task_sent entries)."""
    pending = arena_.start_round(1, hostile=True, timeout=3.0)
    served = 0
    for _ in range(times):
        if not isinstance(
            arena_.hostile.attempt(lambda: arena_.hostile.connection.pull(0.5)), Exception
        ):
            served += 1
    pending.result()
    sent = sum(e.kind == "task_sent" for e in arena_.entries())
    return served, sent


def test_a_task_is_streamed_a_bounded_number_of_times_and_audited_once(consortium, tmp_path):
    with arena(consortium, tmp_path) as a:
        served, sent = redownload(a)
        named = [e.kind for e in a.offences()]
    assert served == 8 and sent == 1
    assert "refused" in named


def test_weakened_twin_without_the_send_limit_the_model_streams_every_time(consortium, tmp_path):
    with arena(consortium, tmp_path, admission=OPEN_DOOR) as a:
        served, _ = redownload(a)
    assert served == 20


# ----- honest behaviour is never refused ----------------------------------------------------------


def restart_mid_pull(arena_: Arena) -> object:
    """The hostile site's process dies while its pull waits, and a new process pulls at once
    (what an honest site restarted by its operator does); the new pull's outcome."""
    stale = Hostile(arena_.server.address, arena_.consortium / "sites" / HOSTILE)
    waiting = threading.Thread(target=stale.attempt, args=(lambda: stale.connection.pull(2.0),))
    waiting.start()
    time.sleep(0.3)
    stale.connection.close()  # the dead process's connection goes away
    waiting.join(5)
    time.sleep(0.1)
    return arena_.hostile.attempt(lambda: arena_.hostile.connection.pull(0.2))


def test_a_restarted_site_is_not_refused_for_its_dead_pull(consortium, tmp_path):
    with arena(consortium, tmp_path, max_pull_wait=2.0) as a:
        assert restart_mid_pull(a) is None  # no task, and no refusal
        honest_kept_their_rounds(a.round(1))
        assert not a.offences()
        assert all(a.server.admission.offences(site) == 0 for site in HONEST)


def test_weakened_twin_a_pull_that_ignores_its_hang_up_blocks_the_restarted_site(
    consortium, tmp_path, monkeypatch
):
    next_task = registry.SiteRegistry.next_task
    monkeypatch.setattr(
        registry.SiteRegistry,
        "next_task",
        lambda self, site, wait, active: next_task(self, site, wait, lambda: True),
    )
    with arena(consortium, tmp_path, max_pull_wait=2.0) as a:
        assert isinstance(restart_mid_pull(a), FedPharmaError)
