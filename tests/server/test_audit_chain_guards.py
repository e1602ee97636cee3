"""The audit chain: its hash and line format pinned, each kind of damage reported exactly, entries
durable when recorded.

Written against the survivors of `scripts/mutation.py audit` (README, Development notes).
"""

import hashlib
import json

import pytest

from fedpharma.core.errors import DataError
from fedpharma.server import audit
from fedpharma.server.audit import (
    GENESIS,
    AuditHead,
    AuditLog,
    VerifyReport,
    entry_hash,
    read_entries,
    verify,
)


@pytest.fixture
def log_path(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, durable=False) as log:
        log.record("run_started", reason="fedavg, 3 rounds")
        log.record("join", site="hôpital-a")
        log.record("task_sent", site="hôpital-a", round=1)
        log.record("result_rejected", site="hôpital-a", round=1, reason="truncated")
        log.record("result_accepted", site="hôpital-a", round=1)
    return path


def _entries(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _head(entry):
    return AuditHead(entry["seq"], entry["hash"])


def test_the_entry_hash_is_sha256_of_sorted_compact_utf8_json_without_the_hash():
    body = {"seq": 1, "kind": "join", "site": "hôpital", "hash": "ignored", "prev": GENESIS}
    canonical = f'{{"kind":"join","prev":"{GENESIS}","seq":1,"site":"hôpital"}}'
    assert entry_hash(body) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_each_line_is_the_entrys_compact_json_in_readable_utf8(log_path):
    lines = log_path.read_text(encoding="utf-8").splitlines()
    assert "hôpital-a" in lines[1]
    for line in lines:
        assert line == json.dumps(json.loads(line), ensure_ascii=False, separators=(",", ":"))


def test_an_entry_records_utc_time_and_empty_site_and_reason_by_default(tmp_path):
    with AuditLog(tmp_path / "a.jsonl", durable=False) as log:
        entry = log.record("run_started")
    assert entry.site == "" and entry.reason == "" and entry.round is None
    assert entry.time.endswith("+00:00")


def test_a_long_reason_is_clipped_to_1000_characters(tmp_path):
    with AuditLog(tmp_path / "a.jsonl", durable=False) as log:
        assert len(log.record("refusal", reason="x" * 1001).reason) == 1000


def test_the_log_is_fsynced_on_every_record_unless_durability_is_waived(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(audit.os, "fsync", synced.append)
    with AuditLog(tmp_path / "durable.jsonl") as log:
        log.record("run_started")
        log.record("join", site="a")
    assert len(synced) == 2 and all(isinstance(fd, int) for fd in synced)
    with AuditLog(tmp_path / "fast.jsonl", durable=False) as log:
        log.record("run_started")
    assert len(synced) == 2


def test_a_recorded_entry_is_in_the_file_before_the_log_is_closed(tmp_path):
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, durable=False)
    entry = log.record("run_started")
    assert verify(path).head == AuditHead(1, entry.hash)
    log.close()


def test_a_log_in_a_new_directory_creates_its_parents(tmp_path):
    path = tmp_path / "runs" / "r1" / "audit.jsonl"
    with AuditLog(path, durable=False) as log:
        log.record("run_started")
    assert verify(path).ok


def test_an_unknown_kind_is_refused_naming_the_known_ones(tmp_path):
    with (
        AuditLog(tmp_path / "a.jsonl", durable=False) as log,
        pytest.raises(ValueError, match="unknown audit entry kind 'payload_dump'; one of"),
    ):
        log.record("payload_dump")


def test_an_intact_log_reports_its_path_count_and_head(log_path):
    last = _entries(log_path)[-1]
    assert verify(log_path) == VerifyReport(log_path, 5, True, _head(last))


def _damage(lines, how):
    """Damage line 3 (seq 3) of a 5-line log in one way; return the new lines."""
    entry = json.loads(lines[2])
    if how == "torn":
        lines[2] = lines[2][:40]
    elif how == "extra field":
        lines[2] = json.dumps(entry | {"payload": "x"})
    elif how == "array":
        lines[2] = json.dumps(sorted(entry))
    elif how == "seq text":
        lines[2] = json.dumps(entry | {"seq": "3"})
    elif how == "seq bool":
        lines[2] = json.dumps(entry | {"seq": True})
    elif how == "edited":
        lines[2] = json.dumps(entry | {"round": 2})
    elif how == "relinked":
        forged = entry | {"prev": "f" * 64}
        lines[2] = json.dumps(forged | {"hash": entry_hash(forged)})
    return lines


FIELDS_PROBLEM = "fields must be exactly seq, time, kind, site, round, reason, prev, hash"


@pytest.mark.parametrize(
    ("how", "bad_seq", "problem"),
    [
        ("torn", None, "not valid JSON (edited or torn)"),
        (
            "extra field",
            None,
            "fields must be exactly seq, time, kind, site, round, reason, prev, hash",
        ),
        ("array", None, "fields must be exactly seq, time, kind, site, round, reason, prev, hash"),
        ("seq text", None, "seq is not an integer"),
        ("seq bool", None, "seq is not an integer"),
        ("edited", 3, "its hash does not match its content (entry edited)"),
        ("relinked", 3, "prev is not the previous entry's hash: an entry before it was replaced"),
    ],
)
def test_damage_is_reported_at_its_line_with_the_chain_before_it(log_path, how, bad_seq, problem):
    entries = _entries(log_path)
    _write(log_path, _damage(log_path.read_text(encoding="utf-8").splitlines(), how))
    report = verify(log_path)
    assert report == VerifyReport(log_path, 2, False, _head(entries[1]), 3, bad_seq, problem)
    where = "line 3" + (f" (seq {bad_seq})" if bad_seq else "")
    assert report.describe() == f"{log_path}: TAMPERED at {where}: {problem}"
    with pytest.raises(DataError, match="TAMPERED at line 3"):
        read_entries(log_path)


def test_a_rehashed_entry_of_an_unknown_kind_is_reported(log_path):
    lines = log_path.read_text(encoding="utf-8").splitlines()
    entries = _entries(log_path)
    forged = entries[4] | {"kind": "payload_dump"}
    lines[4] = json.dumps(forged | {"hash": entry_hash(forged)})
    _write(log_path, lines)
    assert verify(log_path) == VerifyReport(
        log_path, 4, False, _head(entries[3]), 5, 5, "unknown kind 'payload_dump'"
    )


def test_a_consistently_rewritten_log_differs_from_the_recorded_head(log_path):
    recorded = verify(log_path).head
    entries, prev = _entries(log_path), GENESIS
    entries[1]["site"] = "hôpital-z"
    for entry in entries:  # the forger rebuilds the whole chain
        entry["prev"] = prev
        entry["hash"] = prev = entry_hash(entry)
    _write(log_path, [json.dumps(e) for e in entries])
    assert verify(log_path).ok
    assert verify(log_path, expected_head=recorded) == VerifyReport(
        log_path,
        5,
        False,
        _head(entries[4]),
        5,
        5,
        "differs from the recorded head: the log was rewritten",
    )


def test_a_log_cut_before_the_recorded_head_names_both_ends(log_path):
    recorded = verify(log_path).head
    entries = _entries(log_path)
    _write(log_path, log_path.read_text(encoding="utf-8").splitlines()[:3])
    problem = (
        "the log ends at seq 3, before the recorded head seq 5: entries were deleted from its end"
    )
    assert verify(log_path, expected_head=recorded) == VerifyReport(
        log_path, 3, False, _head(entries[2]), 4, None, problem
    )


def test_an_unreadable_log_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=f"cannot read audit log {tmp_path}"):
        verify(tmp_path)
