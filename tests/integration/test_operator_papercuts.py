"""An operator's bad day: SIGTERM, a port already taken, a deployed site's ledger and its CSV."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest
from deploy_helpers import Proc, recipe_toml, write_deployment

from fedpharma.core.config import load_config
from fedpharma.core.deploy_config import load_server_config
from fedpharma.core.errors import TransportError
from fedpharma.server.coordinator import run_coordinator


def test_sigterm_stops_the_coordinator_with_a_resume_hint_and_exit_code_143(
    procs, tmp_path, molecules_csv, pki_root
):
    files = write_deployment(tmp_path / "cfg", pki_root, recipe_toml(molecules_csv))
    server: Proc = procs("server", "server", "--config", str(files["server"]))
    run_dir = server.wait_for(r"run directory (\S+)").group(1)
    server.wait_for("waiting up to 60 s for the 3 planned site")
    server.popen.send_signal(signal.SIGTERM)
    assert server.wait(60) == 143, server.text()
    text = server.text()
    assert "stopped by SIGTERM" in text and "Traceback" not in text
    assert f"fedpharma server --config {files['server']} --resume {run_dir}" in text
    assert Path(run_dir, "audit.jsonl").exists()  # the run is kept for the resume


def test_sigterm_stops_a_site_with_a_restart_hint_and_exit_code_143(
    procs, tmp_path, molecules_csv, pki_root
):
    files = write_deployment(tmp_path / "cfg", pki_root, recipe_toml(molecules_csv), port=1)
    site: Proc = procs("site-1", "site", "--config", str(files["site-1"]))
    site.wait_for("connection problem")  # nobody listens on port 1: it keeps dialling
    site.popen.send_signal(signal.SIGTERM)
    assert site.wait(60) == 143, site.text()
    text = site.text()
    assert "stopped by SIGTERM" in text and "Traceback" not in text
    assert f"fedpharma site --config {files['site-1']}" in text and "--resume" in text


def test_a_server_that_cannot_listen_leaves_no_run_directory(tmp_path, molecules_csv, pki_root):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        files = write_deployment(tmp_path, pki_root, recipe_toml(molecules_csv), port=port)
        config = load_server_config(files["server"])
        seen: list[Path] = []
        with pytest.raises(TransportError, match="cannot listen"):
            run_coordinator(config, load_config(config.run_config), on_run_dir=seen.append)
    runs = Path(config.runs_dir)
    assert not runs.exists() or list(runs.iterdir()) == []
    assert seen == []


def test_fedpharma_privacy_reads_a_deployed_sites_state_dir(tmp_path):
    import dataclasses

    from typer.testing import CliRunner

    from fedpharma.cli.main import app
    from fedpharma.core.deploy_config import load_site_config
    from fedpharma.site.deploy import build_site

    examples = Path(__file__).resolve().parents[2] / "examples" / "deploy"
    config = load_site_config(examples / "site-a.toml")
    assert config.policy is not None and Path(config.policy).parent != tmp_path / "state"
    config = dataclasses.replace(config, state_dir=str(tmp_path / "state"))
    build_site("hospital-a", config, load_config(config.run_config))
    result = CliRunner().invoke(app, ["privacy", str(tmp_path / "state")])
    assert result.exit_code == 0, result.output
    assert "budgets: record-level ε = 8" in result.output  # site-a's policy


def test_a_deployed_site_reports_its_unusable_molecules_by_reason_never_the_smiles(
    tmp_path, molecules_csv
):
    import tomllib

    from fedpharma.core.config import config_from_dict
    from fedpharma.core.deploy_config import SiteDataConfig
    from fedpharma.site.deploy import load_site_data

    rows = molecules_csv.read_text().splitlines()
    bad = ["C1CC(", "Xx[zz]"]  # an unclosed ring, an unknown element
    csv = tmp_path / "site.csv"
    csv.write_text("\n".join([rows[0], *rows[1:41], f"{bad[0]},5.0", f"{bad[1]},6.0"]) + "\n")
    recipe = config_from_dict(tomllib.loads(recipe_toml(csv)))
    lines: list[str] = []
    data = SiteDataConfig(path=str(csv), label_columns=("pIC50",), task="regression")
    loaded = load_site_data(data, recipe, on_status=lines.append)
    assert len(loaded.train) + len(loaded.test) == 40
    (line,) = lines
    assert "42 rows read" in line and "40 rows used" in line and "2 invalid" in line
    assert "rows 41, 42" in line  # 1-based data rows
    assert not any(smiles in line for smiles in bad)


@pytest.mark.parametrize("join_deadline", [60.0, 0.0], ids=["join-deadline", "weakened-none"])
def test_a_late_third_site_is_in_round_1_so_the_run_matches_the_simulation(
    tmp_path, molecules_csv, pki_root, join_deadline
):
    import sqlite3
    import threading
    import time
    import tomllib

    import numpy as np

    from fedpharma.core.config import config_from_dict
    from fedpharma.core.deploy_config import load_site_config
    from fedpharma.sim.engine import simulate
    from fedpharma.site.deploy import serve

    # no dropout: the sites train in threads of one process here, sharing torch's generator
    recipe_text = recipe_toml(molecules_csv, rounds=2, min_sites=2).replace(
        "dropout = 0.1", "dropout = 0.0"
    )
    files = write_deployment(tmp_path, pki_root, recipe_text, join_deadline=join_deadline)
    config = load_server_config(files["server"])
    recipe = load_config(config.run_config)
    lines: list[str] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def serve_site(site: str, address: str) -> None:
        site_file = files[site]
        site_file.write_text(site_file.read_text().replace("127.0.0.1:0", address))
        site_config = load_site_config(site_file)
        thread = threading.Thread(target=serve, args=(site_config, recipe), daemon=True)
        thread.start()
        threads.append(thread)

    def late_site(address: str) -> None:
        # site-3 comes once round 1 has started without it, or after 10 s at the latest
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("training at" in x for x in lines):
            time.sleep(0.05)
        serve_site("site-3", address)

    def start(address: str) -> None:
        serve_site("site-1", address)
        serve_site("site-2", address)
        threading.Thread(target=late_site, args=(address,), daemon=True).start()

    try:
        result = run_coordinator(config, recipe, on_status=lines.append, on_listening=start)
    finally:
        stop.set()
    with sqlite3.connect(result.run_dir / "run.sqlite") as db:
        rounds = db.execute("SELECT round, n_updates FROM rounds").fetchall()
    simulated = simulate(config_from_dict(tomllib.loads(recipe_text)), tmp_path / "sim")
    same = np.allclose(result.parameters.flatten(), simulated.parameters.flatten(), 1e-5, 1e-6)
    if join_deadline:
        assert rounds == [(1, 3), (2, 3)], "\n".join(lines)
        diff = np.abs(result.parameters.flatten() - simulated.parameters.flatten()).max()
        assert same, f"{diff}\n" + "\n".join(lines)  # round 1 and the calibration saw all three
    else:  # weakened twin: round 1 starts with the first two, and the model depends on timing
        assert rounds[0] == (1, 2), "\n".join(lines)
        assert not same
