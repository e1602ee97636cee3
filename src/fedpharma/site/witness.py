"""The coordinator's audit heads a site saw: its witness of the run's audit log.

Every task arrives with the coordinator's audit chain head (seq, sha256) of the moment it was
queued. The site appends each new head to ``audit-heads.jsonl`` in its ``state_dir`` (one JSON
line, fsync'ed), so a coordinator that later rewrites or cuts its log cannot also change what the
sites hold: ``fedpharma audit verify RUN --witness STATE_DIR`` checks the log against it
(Crosby & Wallach 2009: a tamper-evident log is only as good as the heads others keep).
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from fedpharma.core.errors import DataError

HEADS_FILE = "audit-heads.jsonl"
_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class WitnessedHead:
    """One head a site received with a task of ``run_id``'s round ``round``."""

    run_id: str
    round: int
    seq: int
    hash: str


class HeadWitness:
    """Appends each new head the coordinator sends to ``state_dir/audit-heads.jsonl``.

    A head is kept once per run (repeats are skipped); a malformed one (no audit log, or a
    coordinator sending junk) is not kept. Thread-safe.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / HEADS_FILE
        self._lock = threading.Lock()
        self._last: dict[str, tuple[int, str]] = {}

    def __call__(self, run_id: str, round: int, seq: int, digest: str) -> None:
        if seq < 1 or not _HASH.match(digest):
            return
        with self._lock:
            if self._last.get(run_id) == (seq, digest):
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps({"run_id": run_id, "round": round, "seq": seq, "hash": digest})
            with self.path.open("a", encoding="utf-8") as heads:
                heads.write(line + "\n")
                heads.flush()
                os.fsync(heads.fileno())
            self._last[run_id] = (seq, digest)


def read_heads(state_dir: Path, run_id: str) -> list[WitnessedHead]:
    """The heads a site's ``state_dir`` holds for ``run_id``; raises DataError when the folder
    holds no witness file or the file is not one."""
    path = Path(state_dir) / HEADS_FILE
    if not path.exists():
        raise DataError(
            f"{path} does not exist: {state_dir} is not the state_dir of a site that took part "
            "in a run (give the site's [site] state_dir)"
        )
    heads = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                head = WitnessedHead(
                    str(raw["run_id"]), int(raw["round"]), int(raw["seq"]), str(raw["hash"])
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{path} line {number} is not a witnessed head: {exc}") from exc
            if head.run_id == run_id:
                heads.append(head)
    return heads
