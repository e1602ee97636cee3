"""An append-only, hash-chained audit log of what happened in a run (JSON lines).

Each line is one entry::

    {"seq": 7, "time": "...", "kind": "result_rejected", "site": "hospital-a", "round": 3,
     "reason": "...", "prev": "<sha256 of entry 6>", "hash": "<sha256 of this entry>"}

``hash`` is the sha256 of the entry's canonical JSON *without* ``hash`` (so it covers ``prev``),
and ``prev`` of the first entry is 64 zeros. Editing any entry breaks its own hash; deleting,
inserting or reordering entries breaks the next entry's ``prev`` link and the ``seq`` sequence.
:func:`verify` walks the chain and names the first bad entry. Dropping entries from the *end*
leaves a valid shorter chain, and whoever holds the file can recompute the whole chain, so keep
:class:`AuditHead` s somewhere else: the run directory's ``audit-head.json`` (``expected_head``),
and the heads every site received with its tasks (``witnessed``; ``fedpharma.site.witness``),
which the coordinator cannot reach.

Entries say who and what, never payloads: no parameters, updates, molecules or record ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedpharma.core.errors import DataError

GENESIS = "0" * 64
KINDS = frozenset(
    {
        "run_started",
        "resume",
        "join",
        "admitted",  # a site's preprocessing matched the run's recipe at join
        "leave",
        "denied",  # the coordinator refused a peer: revoked cert, impersonation, bad version,
        # or preprocessing that differs from the run's recipe
        "task_sent",
        "result_accepted",
        "result_rejected",  # a result was malformed, oversized, truncated, stale or replayed
        "result_missing",  # a site did not answer before the deadline, left or went silent
        "refusal",  # a site's policy refused a task
        "refused",  # admission control refused a site's calls (too many, too fast), or a summary
        "quarantined",  # a site with too many refused calls or rejected results is shut out
        "round_completed",
        "run_finished",
    }
)
FIELDS = ("seq", "time", "kind", "site", "round", "reason", "prev", "hash")
MAX_REASON_CHARS = 1000


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: str
    kind: str
    site: str
    round: int | None
    reason: str
    prev: str
    hash: str


@dataclass(frozen=True)
class AuditHead:
    """The last entry's sequence number and hash: anchors the log against truncation."""

    seq: int
    hash: str


@dataclass(frozen=True)
class VerifyReport:
    """Result of :func:`verify`: ``ok``, or the first bad entry (1-based line, seq) and why."""

    path: Path
    entries: int
    ok: bool
    head: AuditHead
    bad_line: int | None = None
    bad_seq: int | None = None
    problem: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"{self.path}: {self.entries} entries, hash chain intact (head {self.head.hash})"
        where = f"line {self.bad_line}" + (f" (seq {self.bad_seq})" if self.bad_seq else "")
        return f"{self.path}: TAMPERED at {where}: {self.problem}"


def entry_hash(body: dict[str, Any]) -> str:
    """sha256 of an entry's canonical JSON (sorted keys, no spaces), ``hash`` excluded."""
    canonical = {k: v for k, v in body.items() if k != "hash"}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class AuditLog:
    """Appends entries to a JSON-lines file, extending the chain found there.

    Opening an existing log verifies it first and refuses to extend a broken chain. Each append
    is flushed and fsync'ed, so a ``kill -9`` loses no entry that :meth:`record` returned.
    Thread-safe: the gRPC handlers of several sites record concurrently.
    """

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = Path(path)
        self._durable = durable
        self._lock = threading.Lock()
        if self.path.exists():
            report = verify(self.path)
            if not report.ok:
                raise DataError(f"refusing to extend a broken audit log: {report.describe()}")
            self._head = report.head
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._head = AuditHead(0, GENESIS)
        self._file = self.path.open("a", encoding="utf-8")

    @property
    def head(self) -> AuditHead:
        with self._lock:
            return self._head

    def record(
        self, kind: str, *, site: str = "", round: int | None = None, reason: str = ""
    ) -> AuditEntry:
        """Append one entry and return it. ``reason`` is clipped to 1000 characters."""
        if kind not in KINDS:
            raise ValueError(f"unknown audit entry kind {kind!r}; one of {sorted(KINDS)}")
        with self._lock:
            body: dict[str, Any] = {
                "seq": self._head.seq + 1,
                "time": datetime.now(UTC).isoformat(timespec="microseconds"),
                "kind": kind,
                "site": site,
                "round": round,
                "reason": reason[:MAX_REASON_CHARS],
                "prev": self._head.hash,
            }
            body["hash"] = entry_hash(body)
            self._file.write(json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n")
            self._file.flush()
            if self._durable:
                os.fsync(self._file.fileno())
            self._head = AuditHead(body["seq"], body["hash"])
            return AuditEntry(**body)

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_entries(path: Path) -> list[AuditEntry]:
    """Every entry of a log that :func:`verify` passes; raises DataError otherwise."""
    report = verify(path)
    if not report.ok:
        raise DataError(report.describe())
    return [AuditEntry(**json.loads(line)) for _, line in _lines(Path(path))]


def verify(
    path: Path,
    *,
    expected_head: AuditHead | None = None,
    witnessed: Mapping[str, Sequence[AuditHead]] | None = None,
) -> VerifyReport:
    """Check every entry's hash, ``prev`` link and ``seq``; name the first bad entry.

    ``expected_head``, if given, must be an entry of the chain (the log may have grown since it
    was taken); a log shorter than it has lost entries at its end. So must every head in
    ``witnessed`` (witness name → the heads it saw): a chain recomputed after deleting or editing
    entries differs from what the witnesses saw, however consistent its own hashes are.
    """
    path = Path(path)
    try:
        lines = _lines(path)
    except OSError as exc:
        raise DataError(f"cannot read audit log {path}: {exc}") from exc
    head = AuditHead(0, GENESIS)
    anchored = expected_head is None
    count = 0
    seen: dict[int, tuple[int, str]] = {}  # seq → (line, hash)

    def bad(number: int, seq: int | None, problem: str) -> VerifyReport:
        return VerifyReport(path, count, False, head, number, seq, problem)

    for number, line in lines:
        try:
            body = json.loads(line)
        except json.JSONDecodeError:
            return bad(number, None, "not valid JSON (edited or torn)")
        if not isinstance(body, dict) or sorted(body) != sorted(FIELDS):
            return bad(number, None, f"fields must be exactly {', '.join(FIELDS)}")
        seq = body["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            return bad(number, None, "seq is not an integer")
        if body["hash"] != entry_hash(body):
            return bad(number, seq, "its hash does not match its content (entry edited)")
        if seq != head.seq + 1:
            problem = f"seq {seq} follows seq {head.seq}: entries deleted, inserted or reordered"
            return bad(number, seq, problem)
        if body["prev"] != head.hash:
            problem = "prev is not the previous entry's hash: an entry before it was replaced"
            return bad(number, seq, problem)
        if body["kind"] not in KINDS:
            return bad(number, seq, f"unknown kind {body['kind']!r}")
        head, count = AuditHead(seq, body["hash"]), count + 1
        seen[seq] = (number, body["hash"])
        if expected_head is not None and seq == expected_head.seq:
            if head != expected_head:
                return bad(number, seq, "differs from the recorded head: the log was rewritten")
            anchored = True
    if not anchored:
        problem = (
            f"the log ends at seq {head.seq}, before the recorded head seq "
            f"{expected_head.seq if expected_head else 0}: entries were deleted from its end"
        )
        return VerifyReport(path, count, False, head, count + 1, None, problem)
    for witness, heads in sorted((witnessed or {}).items()):
        for got in sorted(heads, key=lambda h: h.seq):
            if got.seq not in seen:
                problem = (
                    f"{witness} saw seq {got.seq}, the log ends at seq {head.seq}: entries "
                    "were deleted from its end"
                )
                return VerifyReport(path, count, False, head, count + 1, None, problem)
            number, digest = seen[got.seq]
            if digest != got.hash:
                problem = f"differs from the head {witness} saw: the log was rewritten"
                return bad(number, got.seq, problem)
    return VerifyReport(path, count, True, head)


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, text) of every non-blank line."""
    with path.open(encoding="utf-8") as log_file:
        numbered = enumerate((line.rstrip("\n") for line in log_file), start=1)
        return [(number, line) for number, line in numbered if line.strip()]
