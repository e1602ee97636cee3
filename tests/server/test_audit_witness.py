"""The sites as witnesses of the coordinator's audit log.

Whoever holds the run directory can delete entries, recompute every hash and link, and write a
new ``audit-head.json``: the chain and the recorded head then agree, and only a record kept
elsewhere can tell. Each site keeps the heads that came with its tasks
(``fedpharma.site.witness``); ``audit verify --witness`` checks the log against them. Each
attack is run twice: without the witness (the weakened twin, which passes the forged log) and
with it (which fails it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedpharma.cli.main import app
from fedpharma.core.errors import DataError
from fedpharma.server.audit import GENESIS, AuditLog, entry_hash, verify
from fedpharma.server.coordinator import AUDIT_FILE, HEAD_FILE, MANIFEST_FILE, write_head
from fedpharma.site.witness import HEADS_FILE, HeadWitness, read_heads

runner = CliRunner()
RUN_ID = "20261204-000000-abcdef"


@pytest.fixture
def deployment(tmp_path: Path) -> tuple[Path, Path]:
    """A run directory of 8 entries whose tasks carried heads to one site's state_dir."""
    run_dir, state_dir = tmp_path / "run", tmp_path / "site-state"
    run_dir.mkdir()
    (run_dir / MANIFEST_FILE).write_text(json.dumps({"run_id": RUN_ID}))
    witness = HeadWitness(state_dir)
    with AuditLog(run_dir / AUDIT_FILE, durable=False) as log:
        log.record("run_started", reason="fedavg, 2 rounds")
        log.record("join", site="site-a")
        log.record("join", site="site-b")
        witness(RUN_ID, 1, log.head.seq, log.head.hash)  # round 1's task went out here
        log.record("result_rejected", site="site-b", round=1, reason="a wrong shape")
        log.record("result_accepted", site="site-a", round=1)
        log.record("round_completed", round=1)
        witness(RUN_ID, 2, log.head.seq, log.head.hash)
        witness(RUN_ID, 2, log.head.seq, log.head.hash)  # a resent task: kept once
        log.record("result_accepted", site="site-a", round=2)
        log.record("round_completed", round=2)
        write_head(run_dir / HEAD_FILE, log.head)
    return run_dir, state_dir


def rewrite(run_dir: Path, keep: int | None = None, drop: int | None = None) -> None:
    """Delete entry ``drop`` (0-based) and/or everything from ``keep`` on, renumber, recompute
    every hash and link, and write the forged chain's head as the recorded one."""
    log = run_dir / AUDIT_FILE
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    if drop is not None:
        del entries[drop]
    entries = entries[:keep]
    prev = GENESIS
    for seq, entry in enumerate(entries, start=1):
        entry["seq"], entry["prev"] = seq, prev
        entry["hash"] = prev = entry_hash(entry)
    log.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))
    write_head(run_dir / HEAD_FILE, verify(log).head)


def audit_verify(*args: Path | str) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", "verify", *map(str, args)])
    return result.exit_code, result.output


def test_the_untouched_log_verifies_against_its_witness(deployment):
    run_dir, state_dir = deployment
    assert [h.seq for h in read_heads(state_dir, RUN_ID)] == [3, 6]
    code, output = audit_verify(run_dir, "--witness", state_dir)
    assert code == 0, output
    assert "matches the recorded head and the 2 head(s) 1 site(s) saw" in output


@pytest.mark.parametrize(
    "forgery",
    [
        {"drop": 3},  # hide the rejection of site-b's result
        {"keep": 5},  # cut the log after round 1's acceptance
        {"drop": 0},  # an entry before every witnessed head
    ],
    ids=["deleted", "truncated", "deleted-first"],
)
def test_a_recomputed_chain_passes_without_a_witness_and_fails_with_one(deployment, forgery):
    run_dir, state_dir = deployment
    rewrite(run_dir, **forgery)
    code, output = audit_verify(run_dir)  # weakened twin: chain and recorded head agree
    assert code == 0 and "OK" in output, output
    code, output = audit_verify(run_dir, "--witness", state_dir)
    assert code == 1, output
    assert "FAILED" in output and str(state_dir) in output
    assert "rewritten" in output or "deleted from its end" in output


def test_the_witness_catches_what_the_file_path_alone_does_not(deployment):
    run_dir, state_dir = deployment
    rewrite(run_dir, keep=4)
    assert audit_verify(run_dir / AUDIT_FILE)[0] == 0  # weakened twin: the file path, no witness
    code, output = audit_verify(run_dir / AUDIT_FILE, "--witness", state_dir)
    assert code == 1 and "site-state saw seq 6, the log ends at seq 4" in output, output


@pytest.mark.parametrize("target", ["run directory", "log file"])
def test_a_missing_recorded_head_is_an_error_not_silence(deployment, target):
    run_dir, _ = deployment
    (run_dir / HEAD_FILE).unlink()
    code, output = audit_verify(run_dir if target == "run directory" else run_dir / AUDIT_FILE)
    assert code != 0 and "OK" not in output
    assert f"no recorded head {run_dir / HEAD_FILE}" in output, output


def test_a_cut_log_fails_against_the_recorded_head_on_the_file_path_too(deployment):
    run_dir, _ = deployment
    log = run_dir / AUDIT_FILE
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:5]))  # head file kept
    code, output = audit_verify(log)
    assert code == 1 and "deleted from its end" in output, output


def test_a_witness_folder_without_heads_of_the_run_is_an_error(deployment, tmp_path):
    run_dir, _ = deployment
    code, output = audit_verify(run_dir, "--witness", tmp_path / "elsewhere")
    assert code != 0 and f"{HEADS_FILE} does not exist" in output
    other = tmp_path / "other-site"
    HeadWitness(other)("another-run", 1, 3, "a" * 64)
    code, output = audit_verify(run_dir, "--witness", other)
    assert code != 0 and f"holds no audit head of run {RUN_ID}" in output


def test_the_witness_keeps_only_well_formed_heads(tmp_path):
    witness = HeadWitness(tmp_path)
    witness(RUN_ID, 1, 0, "")  # a coordinator without an audit log sends none
    witness(RUN_ID, 1, 4, "not a hash")
    assert not (tmp_path / HEADS_FILE).exists()
    (tmp_path / HEADS_FILE).write_text("{not json\n")
    with pytest.raises(DataError, match="line 1 is not a witnessed head"):
        read_heads(tmp_path, RUN_ID)
