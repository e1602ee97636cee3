"""``--resume`` continues a run only with the recipe it started with.

Resuming with another recipe (another learning rate, say) would finish the run as a model no
recipe describes, under the first recipe's run id and audit log; it is refused before anything
is written, with the fix named. (The kill -9 and resume of a whole deployment, which checks
that the model and the server optimizer's moments survive, is in test_deployment.py.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from deploy_helpers import recipe_toml, write_deployment

from fedpharma.config import load_config, load_server_config
from fedpharma.errors import ConfigError, RoundFailed
from fedpharma.server.audit import read_entries
from fedpharma.server.coordinator import run_coordinator


@pytest.fixture
def stopped_run(molecules_csv, pki_root, tmp_path):
    """A run that stopped in round 1 (no site came), its server config and its recipe."""
    files = write_deployment(tmp_path, pki_root, recipe_toml(molecules_csv), retries=0)
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
