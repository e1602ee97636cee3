"""What a forger who recomputes every hash can and cannot do to the audit log.

A hash chain alone only proves the log is *a* chain: whoever holds the file can rewrite an entry
and recompute every later ``prev`` and ``hash``. The recorded head (kept apart, after each round)
pins the chain: a rewritten log has another hash at the recorded sequence number. Unknown entry
kinds are refused even when their hashes are consistent, so a forged log cannot smuggle in
entries no coordinator writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedpharma.cli.main import app
from fedpharma.core.errors import DataError
from fedpharma.server.audit import GENESIS, AuditHead, AuditLog, entry_hash, verify
from fedpharma.server.coordinator import AUDIT_FILE, HEAD_FILE, write_head

runner = CliRunner()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory: a 6-entry log and its recorded head, as the coordinator leaves them."""
    folder = tmp_path / "run"
    with AuditLog(folder / AUDIT_FILE, durable=False) as log:
        log.record("run_started", reason="fedavg, 2 rounds")
        log.record("join", site="site-a")
        log.record("admitted", site="site-a", reason="recipe 00ff")
        log.record("task_sent", site="site-a", round=1)
        log.record("result_rejected", site="site-a", round=1, reason="claims 0 examples")
        log.record("round_completed", round=1)
        write_head(folder / HEAD_FILE, log.head)
    return folder


def forge(path: Path, index: int, **changes: object) -> None:
    """Change entry ``index`` (0-based) and recompute every hash and link after it."""
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    entries[index].update(changes)
    prev = entries[index - 1]["hash"] if index else GENESIS
    for entry in entries[index:]:
        entry["prev"] = prev
        entry["hash"] = prev = entry_hash(entry)
    path.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))


def recorded_head(run_dir: Path) -> AuditHead:
    raw = json.loads((run_dir / HEAD_FILE).read_text())
    return AuditHead(raw["seq"], raw["hash"])


def test_a_consistently_rewritten_log_fails_against_the_recorded_head(run_dir):
    log = run_dir / AUDIT_FILE
    forge(log, 4, kind="result_accepted", reason="")  # hide the rejection
    assert verify(log).ok  # the bare chain cannot tell ...
    report = verify(log, expected_head=recorded_head(run_dir))  # ... the recorded head can
    assert not report.ok and report.bad_seq == 6
    assert "differs from the recorded head: the log was rewritten" in report.problem


def test_a_rewritten_log_that_grew_past_the_recorded_head_still_fails(run_dir):
    log = run_dir / AUDIT_FILE
    forge(log, 1, site="site-z")
    with AuditLog(log, durable=False) as extended:  # the forger's chain is valid: it extends
        extended.record("run_finished", round=1)
    report = verify(log, expected_head=recorded_head(run_dir))
    assert not report.ok and report.bad_seq == 6 and "rewritten" in report.problem


def test_an_untouched_log_that_grew_after_its_head_was_recorded_verifies(run_dir):
    with AuditLog(run_dir / AUDIT_FILE, durable=False) as log:
        log.record("run_finished", round=1)
    assert verify(run_dir / AUDIT_FILE, expected_head=recorded_head(run_dir)).ok


@pytest.mark.parametrize("target", ["run directory", "log file"])
def test_audit_verify_fails_on_a_consistently_rewritten_log(run_dir, target):
    forge(run_dir / AUDIT_FILE, 2, reason="recipe 1234")
    where = run_dir if target == "run directory" else run_dir / AUDIT_FILE
    result = runner.invoke(app, ["audit", "verify", str(where)])
    assert result.exit_code == 1, result.output
    assert "TAMPERED at line 6 (seq 6)" in result.output and "rewritten" in result.output


def test_audit_verify_refuses_a_log_no_recorded_head_anchors(run_dir):
    (run_dir / HEAD_FILE).unlink()
    result = runner.invoke(app, ["audit", "verify", str(run_dir / AUDIT_FILE)])
    assert result.exit_code != 0, result.output  # an error, not an OK with a caveat
    assert "OK" not in result.output and "no recorded head" in result.output
    write_head(run_dir / HEAD_FILE, verify(run_dir / AUDIT_FILE).head)
    result = runner.invoke(app, ["audit", "verify", str(run_dir)])
    assert result.exit_code == 0 and "matches the recorded head" in result.output


@pytest.mark.parametrize("kind", ["payload_dump", "", "ROUND_COMPLETED", "round_completed "])
def test_an_entry_of_an_unknown_kind_fails_even_with_consistent_hashes(run_dir, kind):
    log = run_dir / AUDIT_FILE
    forge(log, 3, kind=kind)
    report = verify(log)
    assert not report.ok and (report.bad_line, report.bad_seq) == (4, 4)
    assert f"unknown kind {kind!r}" in report.problem
    with pytest.raises(DataError, match="refusing to extend a broken audit log"):
        AuditLog(log)


def test_the_log_writes_only_the_kinds_it_can_verify(tmp_path):
    with AuditLog(tmp_path / AUDIT_FILE, durable=False) as log:
        with pytest.raises(ValueError, match="unknown audit entry kind 'payload_dump'"):
            log.record("payload_dump")
        log.record("run_started")
    assert verify(tmp_path / AUDIT_FILE).entries == 1  # nothing was written for the refused one
