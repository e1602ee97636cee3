"""The coordinator's shared state: who is connected, each site's outstanding task, its answer.

The RPC handlers (:mod:`~fedpharma.transport.grpc.servicer`) and the channel
(:mod:`~fedpharma.transport.grpc.channel`) meet here, under one condition variable: sites join,
leave, pull and push through the handlers while the round loop queues tasks and waits for
answers through the channel.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fedpharma.core.protocol import Failure, Reply, Task
from fedpharma.transport.grpc import fedpharma_v1_pb2 as pb
from fedpharma.transport.grpc.bounds import ReplyBound, reply_bound, summed_values
from fedpharma.transport.grpc.settings import CoordinatorSettings
from fedpharma.transport.grpc.wire import OutgoingPayload, ResultRejected, payload_header


@dataclass
class Outstanding:
    """A task queued for one site and the bookkeeping of its answer."""

    task_id: str
    run_id: str
    round: int
    payload: OutgoingPayload
    header: pb.PayloadHeader
    bound: ReplyBound  # what an answer may be: its most bytes, the model an update must fit
    receiving: bool = False  # a push for it is streaming in right now
    sends: int = 0  # how often it was handed to a pull


@dataclass
class _SiteState:
    last_seen: float
    left: bool = False


AuditHeadSource = Callable[[], tuple[int, str] | None]
"""The coordinator's audit chain head now, as (seq, sha256), or None without an audit log."""
HeadsSent = Callable[[Sequence[tuple[str, int, int, str]]], None]
"""Told, on the round loop's thread, which head went out with which task: (site, round, seq,
hash) rows, e.g. to keep them in the run store."""


class SiteRegistry:
    """Thread-safe state shared by the service handlers and the channel.

    Every queued task's header carries ``audit_head()`` (the chain head when it was queued), so
    each site can witness the coordinator's audit log; ``heads_sent`` is told what went where.
    """

    def __init__(
        self,
        settings: CoordinatorSettings,
        note: Callable[..., None],
        *,
        audit_head: AuditHeadSource | None = None,
        heads_sent: HeadsSent | None = None,
    ) -> None:
        self.settings = settings
        self._note = note
        self._audit_head = audit_head
        self._heads_sent = heads_sent
        self._cond = threading.Condition()
        self._sites: dict[str, _SiteState] = {}
        self._outstanding: dict[str, Outstanding] = {}
        self._answers: dict[str, Reply | Failure] = {}
        self._dismissed: dict[str, str] = {}  # site → why it takes no part (until it rejoins)
        self._joins: dict[str, int] = {}  # site → how often it joined: its connection's number
        self._quarantined: dict[str, str] = {}  # site → why it is shut out for the run
        self._model_values: int | None = None  # values the secure phases sum (bounds.summed_values)
        self.finished: str | None = None
        self.bytes_received = 0
        self._closing = False

    # ----- membership -----------------------------------------------------------------------

    def join(self, site: str) -> None:
        with self._cond:
            rejoined = site in self._sites
            self._sites[site] = _SiteState(time.monotonic())
            self._joins[site] = self._joins.get(site, 0) + 1
            self._dismissed.pop(site, None)
            self._cond.notify_all()
        self._note("join", site, None, "rejoined" if rejoined else "")

    def leave(self, site: str, reason: str) -> None:
        self.expel(site)
        self._note("leave", site, None, reason[:200])

    def expel(self, site: str) -> None:
        """Mark ``site`` gone (left, or its certificate was revoked) until it joins again."""
        with self._cond:
            state = self._sites.get(site)
            if state is not None:
                state.left = True
            self._cond.notify_all()

    def dismiss(self, site: str, reason: str) -> None:
        """Stop listing ``site`` and end its run with ``reason`` at its next pull; a new join
        (e.g. after its operator fixed its configuration) lifts this."""
        with self._cond:
            self._dismissed[site] = reason
            self._cond.notify_all()

    def quarantine(self, site: str, reason: str) -> None:
        """Shut ``site`` out for the rest of the run: it is never available again, and its
        outstanding task fails with ``reason``."""
        with self._cond:
            self._quarantined[site] = reason
            self._cond.notify_all()

    def connection(self, site: str) -> int:
        """How often ``site`` has joined (0: never); a rejoin is a new connection."""
        with self._cond:
            return self._joins.get(site, 0)

    def touch(self, site: str) -> bool:
        """Record a sign of life; False when the site has not joined (or has left)."""
        with self._cond:
            state = self._sites.get(site)
            if state is None or state.left:
                return False
            state.last_seen = time.monotonic()
            return True

    def available(self) -> tuple[str, ...]:
        with self._cond:
            return tuple(sorted(s for s in self._sites if self._alive(s)))

    def wait_for(self, count: int, timeout: float | None) -> tuple[str, ...]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                alive = tuple(sorted(s for s in self._sites if self._alive(s)))
                remaining = None if deadline is None else deadline - time.monotonic()
                if len(alive) >= count or (remaining is not None and remaining <= 0):
                    return alive
                self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))

    def _alive(self, site: str) -> bool:
        state = self._sites.get(site)
        return (
            state is not None
            and not state.left
            and site not in self._dismissed
            and site not in self._quarantined
            and time.monotonic() - state.last_seen <= self.settings.liveness_timeout
        )

    def finish(self, reason: str) -> None:
        with self._cond:
            self.finished = reason
            self._cond.notify_all()

    def close(self) -> None:
        """Release every waiting long-poll (the server is stopping)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def wait_until_all_left(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(self._alive(s) for s in self._sites):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(min(remaining, 0.5))

    # ----- tasks ------------------------------------------------------------------------------

    def next_task(
        self, site: str, wait: float, active: Callable[[], bool]
    ) -> Outstanding | str | None:
        """The site's unanswered task, the finish reason, or None after ``wait`` seconds or
        once ``active()`` turns false (the caller hung up: call :meth:`wake`)."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                task = self._outstanding.get(site)
                if task is not None and not task.receiving:
                    task.sends += 1
                    return task
                if self.finished is not None:
                    return self.finished
                if site in self._dismissed:
                    return self._dismissed[site]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closing or not active():
                    return None
                self._cond.wait(remaining)

    def wake(self) -> None:
        """Let waiting pulls look again (one of them hung up)."""
        with self._cond:
            self._cond.notify_all()

    def claim(self, site: str, header: pb.PayloadHeader) -> Outstanding:
        """Reserve the outstanding task a pushed result names; refuse anything else."""
        with self._cond:
            task = self._outstanding.get(site)
            if task is None or header.task_id != task.task_id:
                raise ResultRejected(
                    f"result for round {header.round} matches no outstanding task of site "
                    f"{site!r} (replayed, stale or unknown)"
                )
            if (header.run_id, header.round) != (task.run_id, task.round):
                raise ResultRejected(
                    f"result header names run {header.run_id!r} round {header.round}, the task "
                    f"was run {task.run_id!r} round {task.round} (stale or replayed)"
                )
            if task.receiving:
                raise ResultRejected(f"a result for this task of {site!r} is already arriving")
            task.receiving = True
            return task

    def release(self, site: str, task: Outstanding) -> None:
        """The push of ``task`` failed without an answer (peer vanished, cut stream, refused
        header): let the site send it again."""
        with self._cond:
            if self._outstanding.get(site) is task:
                task.receiving = False
            self._cond.notify_all()

    def resolve(
        self, site: str, task: Outstanding, answer: Reply | Failure, received_bytes: int = 0
    ) -> None:
        with self._cond:
            self.bytes_received += received_bytes
            if self._outstanding.get(site) is task:
                del self._outstanding[site]
                self._answers[site] = answer
            self._cond.notify_all()

    def run_exchange(
        self, payloads: Mapping[str, tuple[Task, OutgoingPayload]], timeout: float | None
    ) -> dict[str, Reply | Failure]:
        """Queue one task per site, wait for the answers, and fail whoever did not answer."""
        deadline = None if timeout is None else time.monotonic() + timeout
        head = None if self._audit_head is None else self._audit_head()
        if head is not None and self._heads_sent is not None and payloads:
            self._heads_sent([(s, task.round, *head) for s, (task, _) in payloads.items()])
        with self._cond:
            self._answers = {}
            limit = self.settings.limits.max_payload_bytes
            for site, (task, payload) in payloads.items():
                values = summed_values(task)
                if values is not None:
                    self._model_values = values
                task_id = secrets.token_hex(16)
                header = payload_header(
                    payload,
                    run_id=task.run_id,
                    round=task.round,
                    task_id=task_id,
                    site=site,
                    audit_head=head,
                )
                bound = reply_bound(task, self._model_values, limit)
                self._outstanding[site] = Outstanding(
                    task_id, task.run_id, task.round, payload, header, bound
                )
            self._cond.notify_all()
            while self._outstanding:
                for site in [s for s in self._outstanding if not self._alive(s)]:
                    if site in self._quarantined:
                        self._drop(site, f"site is quarantined: {self._quarantined[site]}")
                        continue
                    why = "site left" if self._sites[site].left else "site went silent"
                    self._drop(site, f"{why} before answering")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    for site in list(self._outstanding):
                        self._drop(site, f"no answer within the {timeout:g} s deadline")
                    break
                if self._outstanding:
                    self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))
            answers, self._answers = self._answers, {}
        return answers

    def _drop(self, site: str, reason: str) -> None:
        task = self._outstanding.pop(site)
        self._answers[site] = Failure(site, reason)
        self._note("result_missing", site, task.round, reason)
