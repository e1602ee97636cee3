"""The hash-chained audit log: appends, reopens, detects edited, deleted or reordered entries."""

import json

import pytest

from fedpharma.core.errors import DataError
from fedpharma.server.audit import AuditLog, entry_hash, read_entries, verify


@pytest.fixture
def log_path(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, durable=False) as log:
        log.record("run_started", reason="fedavg, 3 rounds")
        log.record("join", site="site-a")
        log.record("task_sent", site="site-a", round=1)
        log.record("result_rejected", site="site-a", round=1, reason="truncated")
        log.record("result_accepted", site="site-a", round=1)
    return path


def _rewrite(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


def test_an_untouched_log_verifies_and_reopening_extends_the_chain(log_path):
    report = verify(log_path)
    assert report.ok and report.entries == 5 and "intact" in report.describe()
    with AuditLog(log_path, durable=False) as log:
        log.record("resume", round=1)
    entries = read_entries(log_path)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[-1].prev == entries[-2].hash
    assert verify(log_path, expected_head=report.head).ok


def test_an_edited_entry_is_named(log_path):
    lines = log_path.read_text().splitlines()
    entry = json.loads(lines[3])
    entry["reason"] = "all fine"
    lines[3] = json.dumps(entry)
    _rewrite(log_path, lines)
    report = verify(log_path)
    assert not report.ok and (report.bad_line, report.bad_seq) == (4, 4)
    assert "line 4 (seq 4)" in report.describe() and "edited" in report.describe()
    with pytest.raises(DataError, match="broken audit log"):
        AuditLog(log_path)


def test_a_deleted_entry_is_detected_at_the_next_one(log_path):
    lines = log_path.read_text().splitlines()
    _rewrite(log_path, lines[:2] + lines[3:])
    report = verify(log_path)
    assert not report.ok and report.bad_seq == 4 and "deleted" in report.problem


def test_reordered_entries_are_detected(log_path):
    lines = log_path.read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    _rewrite(log_path, lines)
    report = verify(log_path)
    assert not report.ok and report.bad_line == 2


def test_a_rehashed_forgery_breaks_the_link_to_the_next_entry(log_path):
    lines = log_path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["site"] = "site-z"
    entry["hash"] = entry_hash(entry)  # the forger recomputes this entry's own hash
    lines[1] = json.dumps(entry)
    _rewrite(log_path, lines)
    report = verify(log_path)
    assert not report.ok and report.bad_seq == 3 and "replaced" in report.problem


def test_entries_deleted_from_the_end_are_caught_against_a_recorded_head(log_path):
    head = verify(log_path).head
    _rewrite(log_path, log_path.read_text().splitlines()[:-2])
    assert verify(log_path).ok  # a shorter chain is still a chain...
    report = verify(log_path, expected_head=head)
    assert not report.ok and "deleted from its end" in report.problem


def test_unknown_kinds_are_refused(tmp_path):
    with AuditLog(tmp_path / "a.jsonl", durable=False) as log, pytest.raises(ValueError):
        log.record("payload_dump")
