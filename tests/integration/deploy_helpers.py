"""Helpers for deployment tests: configs and real processes (the fixtures are in conftest.py).

A module of its own, with a name no other test folder uses, so that ``import deploy_helpers``
means this file whatever order pytest collects the folders in (``from conftest import`` meant
whichever folder's conftest was imported last).

Processes are started with the ``fedpharma`` CLI of this interpreter, their output going to log
files the test polls (no pipe can fill up). A coordinator binds port 0 and reports the port it
got (``listening on 127.0.0.1:PORT``); the sites' configs are pointed at that address before they
start, so no port is probed, closed and then hoped to be still free.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SITES = ("site-1", "site-2", "site-3")
CLI = [sys.executable, "-c", "from fedpharma.cli.main import app; app(prog_name='fedpharma')"]


def recipe_toml(
    data: Path,
    *,
    rounds: int = 2,
    min_sites: int = 3,
    strategy: str = "fedavg",
    local_epochs: int = 1,
    seed: int = 7,
) -> str:
    return f"""
rounds = {rounds}
seed = {seed}
baselines = false
[dataset]
path = "{data}"
label_columns = ["pIC50"]
task = "regression"
test_fraction = 0.2
[features]
n_bits = 256
[partition]
method = "scaffold"
n_sites = 3
[model]
hidden = [32]
dropout = 0.1
[training]
local_epochs = {local_epochs}
batch_size = 8
learning_rate = 0.01
[strategy]
name = "{strategy}"
min_sites = {min_sites}
server_learning_rate = 0.05
"""


def write_deployment(
    folder: Path,
    pki_root: Path,
    recipe: str,
    *,
    port: int = 0,
    retries: int = 2,
    round_timeout: float = 60.0,
    join_deadline: float = 60.0,
) -> dict[str, Path]:
    """run.toml, server.toml and one site-k.toml per site (part k of the recipe's data).

    The server binds ``port`` (0: any free port, reported when it listens); the sites dial
    127.0.0.1:``port`` until :func:`point_sites_at` gives them the address it reported.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.toml").write_text(recipe)
    (folder / "server.toml").write_text(
        f"""
run_config = "run.toml"
runs_dir = "runs"
[server]
address = "127.0.0.1:{port}"
tls = "{pki_root / "coordinator"}"
heartbeat_seconds = 0.3
liveness_timeout = 2.0
[round_control]
round_timeout = {round_timeout}
wait_for_sites = 90.0
retries = {retries}
join_deadline = {join_deadline}
"""
    )
    files = {"server": folder / "server.toml"}
    for index, site in enumerate(SITES, start=1):
        files[site] = folder / f"{site}.toml"
        files[site].write_text(
            f"""
run_config = "run.toml"
state_dir = "state-{site}"
[site]
coordinator = "127.0.0.1:{port}"
tls = "{pki_root / "sites" / site}"
pull_wait = 0.5
backoff_max = 0.5
give_up_after = 120.0
[data]
path = "{recipe_data_path(recipe)}"
label_columns = ["pIC50"]
task = "regression"
partition_index = {index}
"""
        )
    return files


def point_sites_at(files: dict[str, Path], address: str) -> None:
    """Give every site config the coordinator's reported ``address``."""
    for site in SITES:
        text = files[site].read_text()
        files[site].write_text(re.sub(r'coordinator = "[^"]*"', f'coordinator = "{address}"', text))


def run_in_threads(
    files: dict[str, Path], on_status: Callable[[str], None] = lambda _line: None
) -> Any:
    """Run the deployment of ``files`` in this process: the coordinator here, each site in a
    thread started once the coordinator listens (pointed at its address); the coordinator's
    result, after the sites have stopped (or 30 s)."""
    from fedpharma.core.config import load_config
    from fedpharma.core.deploy_config import load_server_config, load_site_config
    from fedpharma.server.coordinator import run_coordinator
    from fedpharma.site.deploy import serve

    config = load_server_config(files["server"])
    stop = threading.Event()
    ended: dict[str, str] = {}

    def start_sites(address: str) -> None:
        for site in SITES:
            text = files[site].read_text().replace("127.0.0.1:0", address)
            files[site].write_text(text)
            site_config = load_site_config(files[site])
            recipe = load_config(site_config.run_config)
            threading.Thread(
                target=lambda c=site_config, r=recipe, s=site: ended.update(
                    {s: serve(c, r, stop=stop, on_status=on_status)}
                ),
                daemon=True,
            ).start()

    try:
        result = run_coordinator(config, load_config(config.run_config), on_listening=start_sites)
        deadline = time.monotonic() + 30
        while len(ended) < len(SITES) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
    return result


def serve_on(files: dict[str, Path], address: str) -> None:
    """Make the server config bind ``address`` (a resumed coordinator where the sites dial)."""
    text = files["server"].read_text()
    files["server"].write_text(re.sub(r'address = "[^"]*"', f'address = "{address}"', text))


def recipe_data_path(recipe: str) -> str:
    match = re.search(r'path = "([^"]+)"', recipe)
    assert match
    return match.group(1)


class Proc:
    """A CLI process whose stdout+stderr go to a log file."""

    def __init__(self, args: list[str], log: Path, cwd: Path) -> None:
        self.log = log
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                [*CLI, *args], stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 120.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.text())
            if match:
                return match
            if self.popen.poll() is not None:
                match = re.search(pattern, self.text())
                if match:
                    return match
                raise AssertionError(f"process exited ({self.popen.returncode}):\n{self.text()}")
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} not seen within {timeout} s:\n{self.text()}")

    def wait(self, timeout: float = 120.0) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"still running after {timeout} s:\n{self.text()}") from exc

    def kill9(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)
