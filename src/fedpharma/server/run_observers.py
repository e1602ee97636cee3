"""What the coordinator process records and shows as a run goes: each completed round and each
result the round loop rejected in the audit log, one progress line per round, and "round k of
n" as each round's tasks go out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedpharma.core.params import Parameters
from fedpharma.core.protocol import EvaluateTask, Failure, Reply, Task, TrainTask
from fedpharma.server.audit import AuditHead, AuditLog
from fedpharma.server.round import RoundRecord

Status = Callable[[str], None]
HeadWriter = Callable[[Path, AuditHead], None]


class AuditRounds:
    """Records each completed round in the audit log and anchors the log's head next to it."""

    def __init__(self, audit: AuditLog, head_file: Path, write_head: HeadWriter) -> None:
        self.audit, self.head_file, self.write_head = audit, head_file, write_head

    def on_round(self, record: RoundRecord) -> None:
        reason = f"{len(record.contributors)} update(s) aggregated"
        if record.failures or record.refusals:
            reason += f"; {len(record.failures)} failed, {len(record.refusals)} refused"
        self.audit.record("round_completed", round=record.round, reason=reason)
        self.write_head(self.head_file, self.audit.head)


class AuditRejections:
    """Audits a result the round loop rejected after the transport accepted (and audited) it,
    so the log says what became of it, not only ``result_accepted``."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def __call__(self, site: str, rnd: int, reason: str) -> None:
        self.audit.record("result_rejected", site=site, round=rnd, reason=f"round loop: {reason}")


class Progress:
    """Keeps the last completed round and its model; prints one line per round."""

    def __init__(self, parameters: Parameters, completed: int, rounds: int, say: Status) -> None:
        self.parameters, self.completed, self.rounds, self.say = (
            parameters,
            completed,
            rounds,
            say,
        )

    def on_round(self, record: RoundRecord) -> None:
        self.parameters, self.completed = record.parameters, record.round
        parts = [
            f"round {record.round} of {self.rounds} done",
            f"{len(record.contributors)} sites",
        ]
        loss = record.train_metrics.get("train_loss")
        if loss is not None:
            parts.append(f"train loss {loss:.4f}")
        for name, value in sorted(record.evaluate_metrics.items()):
            parts.append(f"test {name} {value:.4f}")
        if record.failures or record.refusals:
            parts.append(f"{len(record.failures)} failed, {len(record.refusals)} refused")
        parts.append(f"{record.seconds:.1f} s")
        self.say(" · ".join(parts))


class AnnouncingChannel:
    """The server's channel, printing "round k of n" as each round's tasks go out."""

    def __init__(self, channel: Any, rounds: int, say: Status) -> None:
        self._channel, self._rounds, self._say = channel, rounds, say

    def available_sites(self) -> tuple[str, ...]:
        return tuple(self._channel.available_sites())

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        first = next(iter(tasks.values()), None)
        names = ", ".join(sorted(tasks))
        if isinstance(first, TrainTask):
            self._say(f"round {first.round} of {self._rounds}: training at {names}")
        elif isinstance(first, EvaluateTask):
            self._say(f"round {first.round} of {self._rounds}: evaluating at {names}")
        replies: dict[str, Reply | Failure] = self._channel.exchange(tasks, timeout)
        return replies
