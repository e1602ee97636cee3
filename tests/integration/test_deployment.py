"""The deployment as real processes: coordinator + 3 sites on 127.0.0.1 over mutual TLS.

Sites named ``site-k`` with ``partition_index = k`` hold exactly the data simulated site
``site-k`` holds, so a deployed run must end with the model of the in-process simulation with
the same recipe (up to float summation order).
"""

from __future__ import annotations

import json
import re
import sqlite3
import tomllib
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import (
    SITES,
    Proc,
    point_sites_at,
    recipe_toml,
    serve_on,
    write_deployment,
)
from typer.testing import CliRunner

from fedpharma.cli.main import app
from fedpharma.core.config import config_from_dict
from fedpharma.core.params import Parameters
from fedpharma.server.audit import read_entries, verify
from fedpharma.server.store import RunStore
from fedpharma.sim.engine import simulate

runner = CliRunner()


def simulated_model(recipe: str, out: Path) -> Parameters:
    config = config_from_dict(tomllib.loads(recipe))
    return simulate(config, out).parameters


def final_model(run_dir: Path) -> tuple[int, Parameters]:
    store = RunStore(run_dir / "run.sqlite")
    try:
        checkpoint = store.latest_checkpoint()
    finally:
        store.close()
    assert checkpoint is not None
    return checkpoint


def assert_same_model(got: Parameters, want: Parameters) -> None:
    assert got.names == want.names
    for a, b in zip(got.arrays, want.arrays, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def start_deployment(start, files: dict[str, Path], *extra: str) -> tuple[Proc, list[Proc]]:
    """The coordinator on a port of its choosing, then the sites, pointed at the port it got."""
    server = start("server", "server", "--config", str(files["server"]), *extra)
    address = server.wait_for(r"listening on (127\.0\.0\.1:\d+)").group(1)
    point_sites_at(files, address)
    sites = [start(site, "site", "--config", str(files[site])) for site in SITES]
    return server, sites


def run_dir_of(server: Proc) -> Path:
    return Path(server.wait_for(r"run directory (\S+)").group(1))


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, molecules_csv, pki_root):
    """One uninterrupted deployed run (2 rounds, FedAvg, 3 sites) and its recipe."""
    tmp = tmp_path_factory.mktemp("deployed")
    recipe = recipe_toml(molecules_csv, rounds=2)
    files = write_deployment(tmp / "cfg", pki_root, recipe)
    started: list[Proc] = []

    def start(name: str, *args: str) -> Proc:
        proc = Proc(list(args), tmp / f"{name}.log", tmp)
        started.append(proc)
        return proc

    try:
        server, sites = start_deployment(start, files)
        assert server.wait(180) == 0, server.text()
        for site in sites:
            assert site.wait(30) == 0, site.text()
        yield recipe, run_dir_of(server), server, sites
    finally:
        for proc in started:
            proc.kill9()


def test_three_site_processes_over_mtls_reproduce_the_simulation(deployed, tmp_path):
    recipe, run_dir, server, sites = deployed
    text = server.text()
    for line in ("listening on", "join: site-1", "round 1 of 2", "round 2 of 2 done"):
        assert line in text, text
    for site in sites:
        assert "joined run" in site.text() and "run finished" in site.text()
    rnd, model = final_model(run_dir)
    assert rnd == 2
    assert_same_model(model, simulated_model(recipe, tmp_path / "sim"))
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        assert db.execute("SELECT round, n_updates FROM rounds").fetchall() == [(1, 3), (2, 3)]
    assert json.loads((run_dir / "run.json").read_text())["recipe"]["rounds"] == 2


def test_audit_verify_passes_on_the_run_and_names_an_edited_entry(deployed, tmp_path):
    _, run_dir, _, _ = deployed
    kinds = [e.kind for e in read_entries(run_dir / "audit.jsonl")]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("join") == 3 and kinds.count("round_completed") == 2
    # every site's preprocessing matched the recipe, none was denied; under load a site the
    # coordinator found silent is checked again when it comes back (admitted once more)
    entries = read_entries(run_dir / "audit.jsonl")
    assert {e.site for e in entries if e.kind == "admitted"} == set(SITES)
    assert "denied" not in kinds
    readmitted = kinds.count("admitted") - len(SITES)
    # 3 sites × (preprocessing description + label statistics for the output layer
    # + (train + evaluate) × 2 rounds + label statistics for the parity grid + the final
    # per-task summary), and one more description per re-admission
    assert kinds.count("result_accepted") == 24 + readmitted
    result = runner.invoke(app, ["audit", "verify", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "hash chain intact" in result.output
    # every site kept the heads that came with its tasks, in its own state_dir
    witnesses = [
        arg for s in SITES for arg in ("--witness", str(run_dir.parents[1] / f"state-{s}"))
    ]
    result = runner.invoke(app, ["audit", "verify", str(run_dir), *witnesses])
    assert result.exit_code == 0 and "3 site(s) saw" in result.output, result.output

    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("audit.jsonl", "audit-head.json"):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    lines = (copy / "audit.jsonl").read_text().splitlines()
    entry = json.loads(lines[4])
    entry["site"] = "site-9"
    lines[4] = json.dumps(entry, separators=(",", ":"))
    (copy / "audit.jsonl").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["audit", "verify", str(copy)])
    assert result.exit_code == 1
    assert "TAMPERED at line 5 (seq 5)" in result.output and "edited" in result.output

    (copy / "audit.jsonl").write_text("\n".join(lines[:4] + lines[5:]) + "\n")  # delete it
    result = runner.invoke(app, ["audit", "verify", str(copy)])
    assert result.exit_code == 1 and "line 5" in result.output

    (copy / "audit.jsonl").write_text("\n".join(lines[:4]) + "\n")  # cut the end off
    assert verify(copy / "audit.jsonl").ok  # a bare chain cannot see it ...
    result = runner.invoke(app, ["audit", "verify", str(copy)])  # ... the recorded head does
    assert result.exit_code == 1 and "deleted from its end" in result.output


def test_a_site_killed_mid_round_leaves_the_round_to_the_others(
    procs, tmp_path, molecules_csv, pki_root
):
    recipe = recipe_toml(molecules_csv, rounds=3, min_sites=2, local_epochs=60)
    files = write_deployment(tmp_path / "cfg", pki_root, recipe)
    server, sites = start_deployment(procs, files)
    victim = sites[2]
    victim.wait_for(r"round 2: task received")
    victim.kill9()
    assert server.wait(180) == 0, server.text()
    run_dir = run_dir_of(server)
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        rounds = dict(db.execute("SELECT round, n_updates FROM rounds").fetchall())
        incidents = db.execute("SELECT round, site, kind FROM incidents").fetchall()
    assert rounds[2] == 2 and rounds[3] == 2, server.text()  # round 1 may start with 2 of 3
    assert (2, "site-3", "failed") in incidents
    missing = [e for e in read_entries(run_dir / "audit.jsonl") if e.kind == "result_missing"]
    assert any(e.site == "site-3" and e.round == 2 for e in missing)
    assert "round 2 of 3 done · 2 sites" in server.text()


def test_a_coordinator_killed_with_sigkill_resumes_to_the_same_final_model(
    procs, tmp_path, molecules_csv, pki_root
):
    # FedAdam: the server optimizer's moments must survive the crash too.
    recipe = recipe_toml(molecules_csv, rounds=3, strategy="fedadam")
    files = write_deployment(tmp_path / "cfg", pki_root, recipe)
    server, sites = start_deployment(procs, files)
    address = server.wait_for(r"listening on (127\.0\.0\.1:\d+)").group(1)
    server.wait_for(r"round 1 of 3 done")
    server.kill9()
    # Round 2 may have completed between the poll and the kill: resume after the last done.
    completed = max(int(k) for k in re.findall(r"round (\d) of 3 done", server.text()))
    assert completed < 3, server.text()
    run_dir = run_dir_of(server)
    serve_on(files, address)  # where the sites keep dialling
    resumed = procs("resumed", "server", "--config", str(files["server"]), "--resume", str(run_dir))
    assert resumed.wait(180) == 0, resumed.text()
    assert f"resumed at round {completed + 1}" in resumed.text()
    for site in sites:
        assert site.wait(30) == 0, site.text()
    rnd, model = final_model(run_dir)
    assert rnd == 3
    assert_same_model(model, simulated_model(recipe, tmp_path / "sim"))
    kinds = [e.kind for e in read_entries(run_dir / "audit.jsonl")]
    assert "resume" in kinds and kinds[-1] == "run_finished"
    result = runner.invoke(app, ["audit", "verify", str(run_dir)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("mode", ["secagg", "ckks"])
def test_secure_aggregation_over_mtls_reaches_the_simulated_model(
    procs, tmp_path, molecules_csv, pki_root, mode
):
    """Both secure modes across real processes: the coordinator gets only the mean, and the
    model equals the in-process simulation's (which uses its own fresh CKKS key) within the
    quantization / CKKS error."""
    recipe = recipe_toml(molecules_csv, rounds=1) + f'[secure]\nmode = "{mode}"\n'
    files = write_deployment(tmp_path / "cfg", pki_root, recipe)
    server, sites = start_deployment(procs, files)
    assert server.wait(180) == 0, server.text()
    for site in sites:
        assert site.wait(30) == 0, site.text()
    run_dir = run_dir_of(server)
    rnd, model = final_model(run_dir)
    assert rnd == 1
    want = simulated_model(recipe, tmp_path / "sim")
    np.testing.assert_allclose(model.flatten(), want.flatten(), rtol=0, atol=1e-5)
    assert "round 1 of 1 done · 3 sites" in server.text()
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        assert db.execute("SELECT round, n_updates FROM rounds").fetchall() == [(1, 3)]
