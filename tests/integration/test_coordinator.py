"""Fast, in-process checks of the deployment pieces: configs, site data, resume state, retries."""

from __future__ import annotations

import sqlite3
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import recipe_toml, write_deployment

from fedpharma.core.config import config_from_dict, load_config
from fedpharma.core.dataset import dense
from fedpharma.core.deploy_config import load_server_config, load_site_config
from fedpharma.core.errors import ConfigError, RoundFailed
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import EvaluateResult, TrainResult, TrainTask
from fedpharma.server.audit import read_entries, verify
from fedpharma.server.coordinator import read_head, run_coordinator
from fedpharma.server.federation import Federation, FederationSettings
from fedpharma.server.store import RunStore
from fedpharma.sim.engine import prepare_sites
from fedpharma.site.deploy import load_site_data, serve
from fedpharma.strategy import FedOpt

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "deploy"


def test_the_example_deployment_configs_load():
    server = load_server_config(EXAMPLES / "server.toml")
    recipe = load_config(server.run_config)
    assert server.server.tls == str(EXAMPLES / "pki" / "coordinator")
    assert recipe.dataset.name == "chembl2321810" and recipe.strategy.min_sites == 2
    names = set()
    for path in sorted(EXAMPLES.glob("site-*.toml")):
        site = load_site_config(path)
        assert site.run_config == server.run_config  # one recipe for every party
        names.add(Path(site.site.tls or "").name)
    assert names == {"hospital-a", "hospital-b", "pharma-c"}


def test_a_bad_server_config_lists_every_problem(tmp_path):
    path = tmp_path / "server.toml"
    path.write_text(
        'run_confg = "run.toml"\n[server]\naddress = 5\nheartbeat_seconds = -1\n'
        "[round_control]\nretries = 2.5\n"
    )
    with pytest.raises(ConfigError) as info:
        load_server_config(path)
    text = str(info.value)
    assert "5 problem(s)" in text and "did you mean 'run_config'" in text and "give `tls`" in text
    assert "address = 5" in text and "heartbeat_seconds = -1" in text and "retries" in text


def test_a_site_config_needs_its_data_and_identity(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('[site]\ninsecure = true\n[data]\npath = "x.csv"\npartition_index = 0\n')
    with pytest.raises(ConfigError) as info:
        load_site_config(path)
    text = str(info.value)
    assert "needs a `name`" in text and "partition_index = 0" in text


def test_a_demo_site_holds_exactly_the_data_of_the_simulated_site(molecules_csv, tmp_path):
    recipe = config_from_dict(tomllib.loads(recipe_toml(molecules_csv)))
    files = write_deployment(tmp_path, tmp_path / "pki", recipe_toml(molecules_csv), port=1)
    simulated = prepare_sites(recipe).sites
    for index, name in enumerate(simulated, start=1):
        site_config = load_site_config(files[name])
        assert site_config.data.partition_index == index
        data = load_site_data(site_config.data, recipe)
        for got, want in ((data.train, simulated[name].train), (data.test, simulated[name].test)):
            np.testing.assert_array_equal(dense(got.features), dense(want.features))
            np.testing.assert_array_equal(got.dense_labels(), want.dense_labels())


class Echo:
    """One site, "a", that answers every train task with the same update of 10 examples."""

    def __init__(self, update: Parameters) -> None:
        self.update = update

    def available_sites(self):
        return ("a",)

    def exchange(self, tasks, timeout=None):
        (task,) = tasks.values()
        if isinstance(task, TrainTask):
            return {"a": TrainResult(task.run_id, task.round, "a", self.update, 10, {})}
        return {"a": EvaluateResult(task.run_id, task.round, "a", 5, {})}


def test_fedadam_state_survives_the_run_store(tmp_path):
    strategy = FedOpt(variant="adam")
    w = Parameters(("w",), (np.zeros(4, dtype=np.float32),))
    update = Parameters(("w",), (np.array([1, -2, 3, 0.5], dtype=np.float32),))
    store = RunStore.create(tmp_path / "run.sqlite", "r", {})
    federation = Federation(strategy, FederationSettings(), store=store)
    federation.round(Echo(update), w, 1, 1, "r")  # one round: moments, then the checkpoint
    store.close()
    restored = FedOpt(variant="adam")
    store = RunStore(tmp_path / "run.sqlite")
    assert Federation(restored, FederationSettings(), store=store).resume(w)[0] == 1
    assert store.server_state(2) is None
    assert restored.moments is not None and strategy.moments is not None
    np.testing.assert_array_equal(restored.moments.m, strategy.moments.m)
    np.testing.assert_array_equal(restored.moments.v, strategy.moments.v)


def test_too_few_sites_retries_the_round_then_stops_cleanly_with_a_reason(
    molecules_csv, pki_root, tmp_path
):
    files = write_deployment(
        tmp_path, pki_root, recipe_toml(molecules_csv), port=0, retries=1, join_deadline=0.5
    )
    text = files["server"].read_text().replace("wait_for_sites = 90.0", "wait_for_sites = 0.5")
    files["server"].write_text(text)
    config = load_server_config(files["server"])
    recipe = load_config(config.run_config)  # needs 3 sites; only site-1 will come
    lines: list[str] = []
    stop = threading.Event()
    ended: list[str] = []

    def start_site(address: str) -> None:
        site_file = files["site-1"]
        site_file.write_text(site_file.read_text().replace("127.0.0.1:0", address))
        site_config = load_site_config(site_file)
        thread = threading.Thread(
            target=lambda: ended.append(serve(site_config, recipe, stop=stop)), daemon=True
        )
        thread.start()

    with pytest.raises(RoundFailed, match="gave up after 1 retries"):
        run_coordinator(config, recipe, on_status=lines.append, on_listening=start_site)
    stop.set()
    text = "\n".join(lines)
    assert "waiting for sites" in text and "retry 1 of 1" in text
    run_dir = next(Path(config.runs_dir).iterdir())
    entries = read_entries(run_dir / "audit.jsonl")
    assert entries[-1].kind == "run_finished" and "stopped: round 1" in entries[-1].reason
    assert verify(run_dir / "audit.jsonl", expected_head=read_head(run_dir)).ok


def test_a_deployed_site_with_a_policy_keeps_its_ledger_in_its_state_dir(tmp_path):
    import dataclasses

    from fedpharma.site.deploy import build_site

    config = load_site_config(EXAMPLES / "site-a.toml")
    config = dataclasses.replace(config, state_dir=str(tmp_path / "state"))
    site = build_site("hospital-a", config, load_config(config.run_config))
    assert site.policy is not None and site.private_trainer is not None
    assert site.policy.ledger.budgets["record"].epsilon == 8.0
    assert (tmp_path / "state" / "privacy.sqlite").exists()


def test_a_site_whose_own_recipe_has_another_radius_is_refused_at_join_over_mtls(
    molecules_csv, pki_root, tmp_path
):
    """The deployment path: gRPC over mutual TLS, each site reading its own run.toml."""
    recipe_text = recipe_toml(molecules_csv, rounds=1, min_sites=2)
    files = write_deployment(tmp_path, pki_root, recipe_text, port=0, join_deadline=2.0)
    (tmp_path / "run-3.toml").write_text(
        recipe_text.replace("[features]\n", "[features]\nradius = 3\n")
    )
    site_3 = files["site-3"].read_text()
    files["site-3"].write_text(site_3.replace('"run.toml"', '"run-3.toml"'))
    config = load_server_config(files["server"])
    recipe = load_config(config.run_config)
    lines: list[str] = []
    stop = threading.Event()
    ended: dict[str, str] = {}

    def serve_site(site: str, address: str) -> None:
        site_file = files[site]
        site_file.write_text(site_file.read_text().replace("127.0.0.1:0", address))
        site_config = load_site_config(site_file)
        site_recipe = load_config(site_config.run_config)  # the site's own copy
        thread = threading.Thread(
            target=lambda: ended.update({site: serve(site_config, site_recipe, stop=stop)}),
            daemon=True,
        )
        thread.start()

    def start_sites(address: str) -> None:
        # site-3 joins first, so the coordinator checks it before the round starts.
        serve_site("site-3", address)
        deadline = time.monotonic() + 60
        while not any(line.startswith("join: site-3") for line in lines):
            assert time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.05)
        serve_site("site-1", address)
        serve_site("site-2", address)

    try:
        result = run_coordinator(config, recipe, on_status=lines.append, on_listening=start_sites)
        deadline = time.monotonic() + 30
        while "site-3" not in ended and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
    text = "\n".join(lines)
    assert 'site site-3 refused at join: site "site-3" uses fingerprint radius (radius) 3' in text
    assert "preprocessing checked: site-1" in text or "preprocessing checked: site-2" in text
    assert result.rounds_completed == 1
    # site-3 was told why, and left
    assert "refused at join" in ended["site-3"] and "set [features] radius = 2" in ended["site-3"]
    entries = read_entries(result.run_dir / "audit.jsonl")
    denied = [e for e in entries if e.kind == "denied"]
    assert [e.site for e in denied] == ["site-3"] and "radius" in denied[0].reason
    assert {e.site for e in entries if e.kind == "admitted"} == {"site-1", "site-2"}
    with sqlite3.connect(result.run_dir / "run.sqlite") as db:
        assert db.execute("SELECT round, n_updates FROM rounds").fetchall() == [(1, 2)]
        incidents = db.execute("SELECT round, site, kind FROM incidents").fetchall()
    assert incidents == [(0, "site-3", "refused:preprocessing")]
