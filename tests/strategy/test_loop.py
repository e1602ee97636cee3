"""The Strategy round loop against a scripted channel: selection, validation, failures."""

import numpy as np
import pytest

from fedpharma.config import StrategyConfig
from fedpharma.errors import RoundFailed
from fedpharma.params import Parameters
from fedpharma.protocol import (
    EvaluateResult,
    EvaluateTask,
    Failure,
    Refusal,
    TrainResult,
    TrainTask,
)
from fedpharma.strategy import FedAvg, FedProx, LoopSettings, build_strategy

W0 = Parameters.from_dict({"w": np.zeros(3)})


class ScriptedChannel:
    """Each site answers with a fixed update and size, or a scripted misbehaviour."""

    def __init__(self, updates, sizes, misbehave=None):
        self.updates, self.sizes, self.misbehave = updates, sizes, misbehave or {}
        self.seen_tasks = []

    def available_sites(self):
        return tuple(sorted(self.updates))

    def exchange(self, tasks, timeout=None):
        self.seen_tasks.append(dict(tasks))
        out = {}
        for site, task in tasks.items():
            how = self.misbehave.get(site)
            if isinstance(task, EvaluateTask):
                out[site] = EvaluateResult(task.run_id, task.round, site, 10, {"rmse": 1.0})
            elif how == "crash":
                out[site] = Failure(site, "connection reset")
            elif how == "refuse":
                out[site] = Refusal(task.run_id, task.round, site, "policy", "plan not approved")
            elif how == "wrong-shape":
                bad = Parameters.from_dict({"w": np.zeros(4)})
                out[site] = TrainResult(task.run_id, task.round, site, bad, 5)
            elif how == "impersonate":
                update = Parameters.from_dict({"w": self.updates[site]})
                out[site] = TrainResult(task.run_id, task.round, "site-a", update, 5)
            elif how == "replay":
                update = Parameters.from_dict({"w": self.updates[site]})
                out[site] = TrainResult(task.run_id, task.round - 1, site, update, 5)
            else:
                update = Parameters.from_dict({"w": self.updates[site]})
                out[site] = TrainResult(task.run_id, task.round, site, update, self.sizes[site])
        return out


class Collect:
    def __init__(self):
        self.records = []

    def on_round(self, record):
        self.records.append(record)


UPDATES = {"site-a": np.array([1.0, 0, 0]), "site-b": np.array([0, 2.0, 0]), "site-c": np.ones(3)}
SIZES = {"site-a": 10, "site-b": 30, "site-c": 60}


def test_fedavg_round_is_the_sample_weighted_mean_update():
    channel = ScriptedChannel(UPDATES, SIZES)
    out = FedAvg(LoopSettings()).run(channel, W0, 1, run_id="r")
    expected = np.average(np.stack(list(UPDATES.values())), axis=0, weights=list(SIZES.values()))
    np.testing.assert_allclose(out.arrays[0], expected, rtol=1e-6)


@pytest.mark.parametrize("how", ["crash", "refuse", "wrong-shape", "impersonate", "replay"])
def test_misbehaving_site_is_left_out_and_recorded(how):
    channel = ScriptedChannel(UPDATES, SIZES, {"site-b": how})
    seen = Collect()
    out = FedAvg(LoopSettings(min_sites=2)).run(channel, W0, 1, run_id="r", observers=[seen])
    expected = np.average(
        np.stack([UPDATES["site-a"], UPDATES["site-c"]]), axis=0, weights=[10, 60]
    )
    np.testing.assert_allclose(out.arrays[0], expected, rtol=1e-6)
    record = seen.records[0]
    assert sorted(record.train_results) == ["site-a", "site-c"]
    assert "site-b" in record.failures or "site-b" in record.refusals


def test_round_fails_cleanly_below_min_sites():
    channel = ScriptedChannel(UPDATES, SIZES, {"site-a": "crash", "site-b": "refuse"})
    with pytest.raises(RoundFailed, match="1 of 3 site"):
        FedAvg(LoopSettings(min_sites=2)).run(channel, W0, 1, run_id="r")


def test_fraction_fit_samples_reproducibly():
    settings = LoopSettings(fraction_fit=0.5, seed=3)
    picks = [FedAvg(settings).select_sites(list(UPDATES), rnd) for rnd in range(1, 6)]
    again = [FedAvg(settings).select_sites(list(UPDATES), rnd) for rnd in range(1, 6)]
    assert picks == again
    assert all(len(p) == 2 for p in picks)


def test_each_site_gets_its_own_seed_and_fedprox_sends_mu():
    channel = ScriptedChannel(UPDATES, SIZES)
    FedProx(LoopSettings(local_epochs=3), proximal_mu=0.5).run(channel, W0, 1, run_id="r")
    tasks = channel.seen_tasks[0]
    assert all(isinstance(t, TrainTask) for t in tasks.values())
    assert {t.config["proximal_mu"] for t in tasks.values()} == {0.5}
    assert {t.config["epochs"] for t in tasks.values()} == {3}
    assert len({t.config["seed"] for t in tasks.values()}) == 3


def test_evaluation_runs_every_k_rounds_and_after_the_last():
    channel = ScriptedChannel(UPDATES, SIZES)
    seen = Collect()
    FedAvg(LoopSettings(evaluate_every=2)).run(channel, W0, 5, run_id="r", observers=[seen])
    assert [bool(r.evaluate_results) for r in seen.records] == [False, True, False, True, True]


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad"])
def test_every_configured_strategy_moves_towards_the_updates(name):
    strategy = build_strategy(StrategyConfig(name=name), LoopSettings())
    out = strategy.run(ScriptedChannel(UPDATES, SIZES), W0, 3, run_id="r")
    assert np.all(out.arrays[0] > 0)
