"""A site with a valid certificate attacks the coordinator with calls: holding pulls, flooding,
downloading its task again and again. Each attack has its expected outcome (honest sites keep
their rounds, the coordinator keeps serving, the hostile site is named in the audit) and a
weakened twin: the same attack with its defence switched off fails the check, so the check is
not one that cannot fail. Honest behaviour (a restart mid-pull) is never refused.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from fedpharma.core.errors import FedPharmaError
from fedpharma.transport.grpc import (
    CertificateRefused,
    registry,
)
from fedpharma.transport.grpc.admission import AdmissionSettings
from tests.attacks.arena import (
    HONEST,
    HOSTILE,
    OPEN_DOOR,
    Arena,
    Hostile,
    arena,
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
        assert all(a.server.admission.offences(site) == 0 for site in HONEST)
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
    time.sleep(0.5)  # the coordinator notices the hang-up (the dead pull would wait 2 s)
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
