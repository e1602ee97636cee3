"""The simulation's execution backends give the same model for the same seed: sequential in
this process, a pool of worker processes, Ray actors (when Ray is installed). Only codec bytes
cross to the workers; a worker hosts only its own sites."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest

from fedpharma.cli.main import DEMO_CONFIG
from fedpharma.core.config import SimulationConfig
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    EvaluateTask,
    Failure,
    LocalTraining,
    TrainSettings,
    TrainTask,
)
from fedpharma.models.factory import build_trainer
from fedpharma.sim.backends import open_sites
from fedpharma.sim.engine import prepare_sites, simulate
from fedpharma.sim.hosting import answer, deal, decode_answer, frame, unframe

SMALL = dataclasses.replace(DEMO_CONFIG, rounds=2, baselines=False, privacy_audit=False)


@pytest.fixture(scope="module")
def prepared():
    return prepare_sites(SMALL)


@pytest.fixture(scope="module")
def sequential(prepared, tmp_path_factory):
    """The sequential model, trained with one thread as each worker trains: float sums over a
    different number of threads round differently (~1e-7), so bit-equality needs the same."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return simulate(SMALL, tmp_path_factory.mktemp("seq"), prepared=prepared).parameters
    finally:
        torch.set_num_threads(threads)


def _on(backend: str, workers: int = 2):
    return dataclasses.replace(SMALL, simulation=SimulationConfig(backend=backend, workers=workers))


def test_the_process_pool_ends_with_exactly_the_sequential_model(prepared, sequential, tmp_path):
    pooled = simulate(_on("processes"), tmp_path, prepared=prepared).parameters
    assert pooled.names == sequential.names
    np.testing.assert_array_equal(pooled.flatten(), sequential.flatten())


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray is not installed (the fedpharma[ray] extra; the dev extra brings it)",
)
def test_ray_actors_end_with_exactly_the_sequential_model(prepared, sequential, tmp_path):
    on_ray = simulate(_on("ray"), tmp_path, prepared=prepared).parameters
    np.testing.assert_array_equal(on_ray.flatten(), sequential.flatten())


def test_workers_answer_only_their_sites_and_report_failures_as_failures(prepared, tmp_path):
    assert deal(["c", "a", "b"], 2) == [["a", "c"], ["b"]]
    site, body = unframe(frame("site-1", b"xyz"))
    assert (site, bytes(body)) == ("site-1", b"xyz")
    with open_sites(_on("processes", workers=1), ["site-1", "site-2"], tmp_path) as channel:
        assert channel.available_sites() == ("site-1", "site-2")
        w = Parameters.from_dict({"w": np.zeros(2)})  # does not fit the model: a refusal
        replies = channel.exchange(
            {"site-1": EvaluateTask("r", 1, w), "site-9": EvaluateTask("r", 1, w)}
        )
        assert isinstance(replies["site-9"], Failure)
        assert not isinstance(replies["site-1"], Failure)
        # A worker that misses the deadline is stopped: its late answer can meet no later task.
        x = build_trainer(SMALL, prepared.dataset).initial_parameters(0)
        slow = TrainTask("r", 2, x, TrainSettings(LocalTraining(epochs=1000)))
        late = channel.exchange({"site-2": slow}, timeout=0.5)
        assert isinstance(late["site-2"], Failure) and "no answer within" in late["site-2"].reason
        assert channel.available_sites() == ()
    failed = decode_answer("s", answer({}, frame("s", b"")))
    assert isinstance(failed, Failure) and "not hosted" in failed.reason
