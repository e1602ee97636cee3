"""The run store: one SQLite database per run directory.

It records the run's config, per-round timings and per-site metrics, refusals and failures
(those of a failed and retried attempt too), the latest model checkpoint with its sha256, the
audit heads sent to each site with its tasks, the final model's per-task counts the sites sent
(:mod:`fedpharma.server.task_summary`), the chemical-space overlap's counts
(:mod:`fedpharma.server.chemical_overlap`), and the final comparison of models. It is a
:class:`~fedpharma.server.round.RoundObserver`, so the round loop writes to it as rounds complete
and a crash loses at most the round in flight. Only aggregate metrics are stored, never records.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedpharma.core import params as params_codec
from fedpharma.core import serde
from fedpharma.core.errors import DataError
from fedpharma.core.params import Parameters
from fedpharma.report.summary import ConsortiumOverlap
from fedpharma.server.round import RoundRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    run_id TEXT PRIMARY KEY, created TEXT NOT NULL, config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, seconds REAL NOT NULL, n_updates INTEGER NOT NULL,
    finished TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS site_metrics (
    round INTEGER NOT NULL, site TEXT NOT NULL, phase TEXT NOT NULL, name TEXT NOT NULL,
    value REAL NOT NULL, n_examples INTEGER NOT NULL,
    PRIMARY KEY (round, site, phase, name)
);
CREATE TABLE IF NOT EXISTS incidents (
    round INTEGER NOT NULL, site TEXT NOT NULL, kind TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    round INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, parameters BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_heads_sent (
    site TEXT NOT NULL, round INTEGER NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL,
    sent TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS task_summaries (
    round INTEGER PRIMARY KEY, summary TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chemical_overlap (
    round INTEGER PRIMARY KEY, overlap TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS comparison (
    model TEXT NOT NULL, site TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (model, site, name)
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunStore:
    def __init__(self, path: Path, *, durable: bool = True) -> None:
        """Open (or create) the store at ``path``.

        ``durable``: WAL with synchronous=NORMAL keeps every committed round across a process
        crash (kill -9) without a disk sync per round; only a power loss may drop the last one,
        and every round's model is checkpointed for resume. A simulation, which its seed
        reproduces and which is never resumed, passes ``durable=False``: no syncing, and the
        model is checkpointed once, the last round's, when the store is closed.
        """
        self._durable = durable
        self._pending_checkpoint: RoundRecord | None = None
        self.path = path
        try:
            self._db = sqlite3.connect(path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'NORMAL' if durable else 'OFF'}")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise DataError(f"cannot open run store {path}: {exc}") from exc

    @classmethod
    def create(
        cls, path: Path, run_id: str, config: dict[str, Any], *, durable: bool = True
    ) -> RunStore:
        if path.exists():
            raise DataError(
                f"{path} already holds a run; choose a new run directory (or resume that run)"
            )
        store = cls(path, durable=durable)
        with store._db:
            store._db.execute(
                "INSERT INTO run VALUES (?, ?, ?)", (run_id, _now(), json.dumps(config))
            )
        return store

    def close(self) -> None:
        if self._pending_checkpoint is not None:
            with self._db:
                self._checkpoint(self._pending_checkpoint)
        self._db.close()

    def on_round(self, record: RoundRecord) -> None:
        rows = [
            (record.round, site, "train", name, value, r.n_examples)
            for site, r in record.train_results.items()
            for name, value in r.metrics.items()
        ] + [
            (record.round, site, "evaluate", name, value, r.n_examples)
            for site, r in record.evaluate_results.items()
            for name, value in r.metrics.items()
        ]
        incidents = [
            (record.round, site, f"refused:{r.kind}", r.reason)
            for site, r in record.refusals.items()
        ] + [(record.round, site, "failed", why) for site, why in record.failures.items()]
        with self._db:  # one transaction per round: all of it or none of it
            self._db.executemany("INSERT INTO site_metrics VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.executemany("INSERT INTO incidents VALUES (?, ?, ?, ?)", incidents)
            self._db.execute(
                "INSERT INTO rounds VALUES (?, ?, ?, ?)",
                (record.round, record.seconds, len(record.contributors), _now()),
            )
            if self._durable:
                self._checkpoint(record)
            else:
                self._pending_checkpoint = record

    def _checkpoint(self, record: RoundRecord) -> None:
        """Replace the stored model by ``record``'s (inside the caller's transaction)."""
        blob = params_codec.encode(record.parameters)
        self._db.execute("DELETE FROM checkpoints WHERE round < ?", (record.round,))
        self._db.execute(
            "INSERT INTO checkpoints VALUES (?, ?, ?)",
            (record.round, hashlib.sha256(blob).hexdigest(), blob),
        )

    def record_incident(self, rnd: int, site: str, kind: str, reason: str) -> None:
        """An incident outside a round's record, e.g. a site refused at join (round 0)."""
        with self._db:
            self._db.execute("INSERT INTO incidents VALUES (?, ?, ?, ?)", (rnd, site, kind, reason))

    def record_attempt(self, rnd: int, attempt: int, reasons: Mapping[str, str]) -> None:
        """Why attempt ``attempt`` of round ``rnd`` failed, per site (``""``: the round as a
        whole), as ``attempt_failed`` incidents: a retried round keeps every reason."""
        with self._db:
            self._db.executemany(
                "INSERT INTO incidents VALUES (?, ?, ?, ?)",
                [
                    (rnd, site, "attempt_failed", f"attempt {attempt}: {why}")
                    for site, why in sorted(reasons.items())
                ],
            )

    def record_heads_sent(self, rows: Sequence[tuple[str, int, int, str]]) -> None:
        """The audit heads that went out with tasks: (site, round, seq, hash) rows."""
        with self._db:
            self._db.executemany(
                "INSERT INTO audit_heads_sent VALUES (?, ?, ?, ?, ?)",
                [(*row, _now()) for row in rows],
            )

    def heads_sent(self) -> list[tuple[str, int, int, str]]:
        """Every (site, round, seq, hash) :meth:`record_heads_sent` kept, in the order sent."""
        return self._db.execute(
            "SELECT site, round, seq, hash FROM audit_heads_sent ORDER BY rowid"
        ).fetchall()

    def record_task_summaries(self, rnd: int, summary: str) -> None:
        """The final model's per-task counts as the sites sent them (JSON text of
        :func:`fedpharma.server.task_summary.summaries_to_json`): counts and sums, no row."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO task_summaries VALUES (?, ?)", (rnd, summary))

    def record_chemical_overlap(self, rnd: int, overlap: ConsortiumOverlap) -> None:
        """A deployed run's chemical-space overlap: set sizes and multiplicity counts (JSON of
        :class:`~fedpharma.report.summary.ConsortiumOverlap`), never a site's set."""
        text = json.dumps(serde.to_dict(overlap))
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO chemical_overlap VALUES (?, ?)", (rnd, text))

    def record_comparison(self, model: str, site: str, metrics: dict[str, float]) -> None:
        """Keep a model's final metrics on a site's test set; an undefined one (NaN: e.g. R² of
        a single test molecule) is left out, as it is on the wire."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO comparison VALUES (?, ?, ?, ?)",
                [(model, site, n, v) for n, v in metrics.items() if math.isfinite(v)],
            )

    def latest_checkpoint(self) -> tuple[int, Parameters] | None:
        """The last completed round's model, after checking its sha256."""
        row = self._db.execute(
            "SELECT round, sha256, parameters FROM checkpoints ORDER BY round DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        rnd, digest, blob = row
        if hashlib.sha256(blob).hexdigest() != digest:
            raise DataError(f"checkpoint of round {rnd} in {self.path} fails its sha256 check")
        return int(rnd), params_codec.decode(blob)

    def metric_history(self, phase: str) -> list[tuple[int, str, str, float, int]]:
        """(round, site, metric, value, n_examples) rows of one phase, in round order."""
        return self._db.execute(
            "SELECT round, site, name, value, n_examples FROM site_metrics "
            "WHERE phase = ? ORDER BY round, site, name",
            (phase,),
        ).fetchall()

    # ----- server-optimizer state, for an exact resume ---------------------------------------

    def save_server_state(self, rnd: int, state: bytes) -> None:
        """Keep the strategy's state after round ``rnd`` (e.g. FedAdam's moments), with its sha256.

        Written just *before* the round's checkpoint, and the previous round's state is kept, so
        whichever checkpoint survives a crash, the state of the same round is there.
        """
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS server_state ("
                "round INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, state BLOB NOT NULL)"
            )
            self._db.execute("DELETE FROM server_state WHERE round < ?", (rnd - 1,))
            self._db.execute(
                "INSERT OR REPLACE INTO server_state VALUES (?, ?, ?)",
                (rnd, hashlib.sha256(state).hexdigest(), state),
            )

    def server_state(self, rnd: int) -> bytes | None:
        """The state :meth:`save_server_state` kept for round ``rnd``, after its sha256 check."""
        try:
            row = self._db.execute(
                "SELECT sha256, state FROM server_state WHERE round = ?", (rnd,)
            ).fetchone()
        except sqlite3.OperationalError:  # no state was ever saved (a stateless strategy)
            return None
        if row is None:
            return None
        digest, blob = row
        if hashlib.sha256(blob).hexdigest() != digest:
            raise DataError(f"server state of round {rnd} in {self.path} fails its sha256 check")
        return bytes(blob)
