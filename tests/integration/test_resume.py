"""``--resume``: a crashed run continues to the model an uninterrupted run reaches, and only
with the recipe it started with.

Here the coordinator runs in this process and "crashes" at a round boundary (an exception out of
its status callback, after the round was stored), so the test is fast and exact; the kill -9 of
real processes at any moment is in test_deployment.py. Resuming with another recipe (another
learning rate, say) would finish the run as a model no recipe describes, under the first
recipe's run id and audit log; it is refused before anything is written, with the fix named.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import SITES, point_sites_at, recipe_toml, write_deployment

from fedpharma.core.config import load_config
from fedpharma.core.deploy_config import load_server_config, load_site_config
from fedpharma.core.errors import ConfigError, RoundFailed
from fedpharma.server.audit import read_entries, verify
from fedpharma.server.coordinator import read_head, run_coordinator
from fedpharma.sim.engine import simulate
from fedpharma.site.deploy import serve


class Crash(BaseException):
    """The coordinator process dying (not an error it could handle)."""


class Sites:
    """The three sites, each serving in a thread until ``stop``."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, address: str) -> None:
        point_sites_at(self.files, address)
        for site in SITES:
            config = load_site_config(self.files[site])
            recipe = load_config(config.run_config)
            thread = threading.Thread(
                target=serve, args=(config, recipe), kwargs={"stop": self.stop_event}, daemon=True
            )
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(30)
            assert not thread.is_alive(), "a site thread did not stop"


def test_a_fedadam_run_crashed_after_round_1_resumes_to_the_uninterrupted_model(
    molecules_csv, pki_root, tmp_path
):
    """FedAdam (Reddi et al. 2021, Alg. 2) carries moments from round to round: unless they are
    restored with the model, the resumed run takes different steps and ends elsewhere."""
    recipe_text = recipe_toml(molecules_csv, rounds=3, strategy="fedadam")
    # No dropout: these sites train in threads of one process, and dropout masks come from
    # torch's process-wide generator, so concurrent sites would draw from one another's stream.
    recipe_text = recipe_text.replace("dropout = 0.1", "dropout = 0.0")
    files = write_deployment(tmp_path / "cfg", pki_root, recipe_text)
    config = load_server_config(files["server"])
    recipe = load_config(config.run_config)

    def die_after_round_1(line: str) -> None:
        if line.startswith("round 1 of 3 done"):
            raise Crash(line)

    first = Sites(files)
    try:
        with pytest.raises(Crash):
            run_coordinator(config, recipe, on_status=die_after_round_1, on_listening=first.start)
    finally:
        first.stop()
    (run_dir,) = Path(config.runs_dir).iterdir()

    second = Sites(files)
    lines: list[str] = []
    try:
        result = run_coordinator(
            config, recipe, resume=run_dir, on_status=lines.append, on_listening=second.start
        )
    finally:
        second.stop()
    assert any(line.startswith("resumed at round 2") for line in lines), lines
    assert result.rounds_completed == 3
    uninterrupted = simulate(recipe, tmp_path / "sim").parameters
    np.testing.assert_allclose(
        result.parameters.flatten(), uninterrupted.flatten(), rtol=1e-5, atol=1e-6
    )
    assert verify(run_dir / "audit.jsonl", expected_head=read_head(run_dir)).ok


@pytest.fixture
def stopped_run(molecules_csv, pki_root, tmp_path):
    """A run that stopped in round 1 (no site came), its server config and its recipe."""
    files = write_deployment(
        tmp_path, pki_root, recipe_toml(molecules_csv), retries=0, join_deadline=0.2
    )
    text = files["server"].read_text().replace("wait_for_sites = 90.0", "wait_for_sites = 0.2")
    files["server"].write_text(text)
    config = load_server_config(files["server"])
    recipe = load_config(config.run_config)
    with pytest.raises(RoundFailed):
        run_coordinator(config, recipe)
    (run_dir,) = Path(config.runs_dir).iterdir()
    return run_dir, config, recipe


def test_a_resume_with_another_recipe_is_refused_before_anything_is_written(stopped_run):
    run_dir, config, recipe = stopped_run
    before = (run_dir / "audit.jsonl").read_bytes()
    for other in (
        dataclasses.replace(
            recipe, training=dataclasses.replace(recipe.training, learning_rate=0.02)
        ),
        dataclasses.replace(recipe, rounds=recipe.rounds + 1),
        dataclasses.replace(recipe, seed=recipe.seed + 1),
    ):
        with pytest.raises(ConfigError) as caught:
            run_coordinator(config, other, resume=run_dir)
        assert "differs from the one run" in str(caught.value)
        assert "resume with the same recipe" in str(caught.value)
        assert (run_dir / "audit.jsonl").read_bytes() == before


def test_a_resume_with_the_same_recipe_continues_the_run(stopped_run):
    run_dir, config, recipe = stopped_run
    lines: list[str] = []
    with pytest.raises(RoundFailed):  # still no site: it stops again, but it did resume
        run_coordinator(config, recipe, resume=run_dir, on_status=lines.append)
    assert any(line.startswith("resumed at round 1") for line in lines), lines
    kinds = [e.kind for e in read_entries(run_dir / "audit.jsonl")]
    assert kinds.count("run_started") == 1 and kinds.count("resume") == 1
