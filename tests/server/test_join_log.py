"""JoinLog records each verdict: admissions and refusals as ``admitted`` / ``denied`` entries of
the audit log with the site and the reason, refusals also as run-store incidents of round 0, and
one status line for the admitted sites and one per refused site.

Written against the survivors of `scripts/mutation.py join` (README, Development notes).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fedpharma.server.audit import AuditLog, read_entries
from fedpharma.server.join import REFUSED_KIND, JoinLog, JoinOutcome
from fedpharma.server.store import RunStore


def stored_incidents(path: Path) -> list[tuple[int, str, str, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT round, site, kind, reason FROM incidents").fetchall()


def test_verdicts_are_audited_with_site_and_reason_and_refusals_are_incidents(tmp_path: Path):
    store = RunStore.create(tmp_path / "run.sqlite", "run-1", {})
    lines: list[str] = []
    with AuditLog(tmp_path / "audit.jsonl") as audit:
        JoinLog(store, lines.append, audit)(
            [
                JoinOutcome("a", True, "recipe 0123"),
                JoinOutcome("b", False, "uses radius 3"),
                JoinOutcome("c", True, "recipe 0123"),
            ]
        )
    entries = [(e.kind, e.site, e.reason) for e in read_entries(tmp_path / "audit.jsonl")]
    assert entries == [
        ("admitted", "a", "recipe 0123"),
        ("denied", "b", "uses radius 3"),
        ("admitted", "c", "recipe 0123"),
    ]
    assert lines == [
        "preprocessing checked: a, c admitted (the run's recipe and reference digest)",
        "site b refused at join: uses radius 3",
    ]
    store.close()
    incidents = stored_incidents(tmp_path / "run.sqlite")
    assert incidents == [(0, "b", REFUSED_KIND, "uses radius 3")]


def test_without_an_audit_log_the_verdicts_are_still_said_and_stored(tmp_path: Path):
    store = RunStore.create(tmp_path / "run.sqlite", "run-1", {})
    lines: list[str] = []
    JoinLog(store, lines.append)([JoinOutcome("b", False, "uses radius 3")])
    assert lines == ["site b refused at join: uses radius 3"]
    store.close()
    assert stored_incidents(tmp_path / "run.sqlite") == [(0, "b", REFUSED_KIND, "uses radius 3")]
