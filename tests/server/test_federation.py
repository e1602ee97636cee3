"""The Federation's round loop against a scripted channel: selection, validation, failures."""

import numpy as np
import pytest

from fedpharma.core.config import StrategyConfig
from fedpharma.core.errors import DataError, RoundFailed
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    EvaluateResult,
    EvaluateTask,
    Failure,
    Refusal,
    TrainResult,
    TrainTask,
)
from fedpharma.server.federation import Federation, FederationSettings
from fedpharma.strategy import FedAvg, FedProx, build_strategy

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
    out = Federation(FedAvg(), FederationSettings()).run(channel, W0, 1, run_id="r")
    expected = np.average(np.stack(list(UPDATES.values())), axis=0, weights=list(SIZES.values()))
    np.testing.assert_allclose(out.arrays[0], expected, rtol=1e-6)


@pytest.mark.parametrize("how", ["crash", "refuse", "wrong-shape", "impersonate", "replay"])
def test_misbehaving_site_is_left_out_and_recorded(how):
    channel = ScriptedChannel(UPDATES, SIZES, {"site-b": how})
    seen = Collect()
    federation = Federation(FedAvg(), FederationSettings(min_sites=2), observers=[seen])
    out = federation.run(channel, W0, 1, run_id="r")
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
        Federation(FedAvg(), FederationSettings(min_sites=2)).run(channel, W0, 1, run_id="r")


def test_fraction_fit_samples_reproducibly():
    settings = FederationSettings(fraction_fit=0.5, seed=3)
    picks = [Federation(FedAvg(), settings).select_sites(list(UPDATES), r) for r in range(1, 6)]
    again = [Federation(FedAvg(), settings).select_sites(list(UPDATES), r) for r in range(1, 6)]
    assert picks == again
    assert all(len(p) == 2 for p in picks)


def test_each_site_gets_its_own_seed_and_fedprox_sends_mu():
    channel = ScriptedChannel(UPDATES, SIZES)
    federation = Federation(FedProx(proximal_mu=0.5), FederationSettings(local_epochs=3))
    federation.run(channel, W0, 1, run_id="r")
    tasks = channel.seen_tasks[0]
    assert all(isinstance(t, TrainTask) for t in tasks.values())
    assert {t.settings.local.proximal_mu for t in tasks.values()} == {0.5}
    assert {t.settings.local.epochs for t in tasks.values()} == {3}
    assert len({t.settings.local.seed for t in tasks.values()}) == 3


def test_evaluation_runs_every_k_rounds_and_after_the_last():
    channel = ScriptedChannel(UPDATES, SIZES)
    seen = Collect()
    federation = Federation(FedAvg(), FederationSettings(evaluate_every=2), observers=[seen])
    federation.run(channel, W0, 5, run_id="r")
    assert [bool(r.evaluate_results) for r in seen.records] == [False, True, False, True, True]


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad"])
def test_every_configured_strategy_moves_towards_the_updates(name):
    federation = Federation(build_strategy(StrategyConfig(name=name)), FederationSettings())
    out = federation.run(ScriptedChannel(UPDATES, SIZES), W0, 3, run_id="r")
    assert np.all(out.arrays[0] > 0)


class FlakyChannel(ScriptedChannel):
    """Every site crashes in the first ``bad`` train exchanges, then answers."""

    def __init__(self, bad):
        super().__init__(UPDATES, SIZES)
        self.bad = bad

    def exchange(self, tasks, timeout=None):
        if self.bad and any(isinstance(t, TrainTask) for t in tasks.values()):
            self.bad -= 1
            self.seen_tasks.append(dict(tasks))
            return {site: Failure(site, "connection reset") for site in tasks}
        return super().exchange(tasks, timeout)


def test_a_failed_round_is_retried_and_then_the_run_stops_with_the_reason():
    lines = []
    ok = Federation(FedAvg(), FederationSettings(retries=2), on_status=lines.append)
    ok.run(FlakyChannel(bad=2), W0, 1, run_id="r")
    assert [line.endswith(f"retry {k} of 2") for k, line in enumerate(lines, 1)] == [True, True]
    stopped = Federation(FedAvg(), FederationSettings(retries=1))
    with pytest.raises(RoundFailed, match=r"stopped: round 1: 0 of 3 .* gave up after 1 retries"):
        stopped.run(FlakyChannel(bad=2), W0, 1, run_id="r")


def test_the_federation_waits_for_sites_where_the_channel_can_and_prepares_once():
    channel = ScriptedChannel(UPDATES, SIZES)
    waits, prepared, lines = [], [], []

    def wait(count, seconds):
        waits.append((count, seconds))
        return channel.available_sites()

    def prepare(parameters):
        prepared.append(parameters)
        return Parameters.from_dict({"w": np.full(3, 5.0)})

    settings = FederationSettings(min_sites=4, wait_for_sites=2.0, retries=1)
    federation = Federation(FedAvg(), settings, prepare=prepare, on_status=lines.append)
    with pytest.raises(RoundFailed, match="only 3 of the 4 site"):
        federation.run(channel, W0, 2, run_id="r", wait_for_sites=wait)
    assert waits == [(4, 2.0), (4, 2.0)] and prepared == []
    assert lines[0] == "waiting for sites: 3 of 4 needed admitted (site-a, site-b, site-c)"
    out = Federation(FedAvg(), FederationSettings(), prepare=prepare).run(
        channel, W0, 2, run_id="r", wait_for_sites=wait
    )
    assert len(prepared) == 1 and np.all(out.arrays[0] > 5.0)


class MemoryStore:
    """The run store's checkpoint interface, in memory."""

    def __init__(self):
        self.checkpoints, self.states = {}, {}

    def on_round(self, record):
        self.checkpoints[record.round] = record.parameters

    def latest_checkpoint(self):
        return max(self.checkpoints.items()) if self.checkpoints else None

    def save_server_state(self, rnd, state):
        self.states[rnd] = state

    def server_state(self, rnd):
        return self.states.get(rnd)


@pytest.mark.parametrize("name", ["fedavg", "fedadam"])
def test_a_resumed_federation_ends_with_the_model_of_an_uninterrupted_one(name):
    def federation(store=None):
        strategy = build_strategy(StrategyConfig(name=name))
        return Federation(strategy, FederationSettings(fraction_fit=0.5, seed=1), store=store)

    whole = federation().run(ScriptedChannel(UPDATES, SIZES), W0, 4, run_id="r")
    store = MemoryStore()
    federation(store).run(ScriptedChannel(UPDATES, SIZES), W0, 2, run_id="r")
    resumed = federation(store)
    completed, parameters = resumed.resume(W0)
    assert completed == 2 and (store.states != {}) == (name == "fedadam")
    out = resumed.run(ScriptedChannel(UPDATES, SIZES), parameters, 4, run_id="r", first_round=3)
    np.testing.assert_array_equal(out.arrays[0], whole.arrays[0])
    if name == "fedadam":  # without the moments a FedAdam run cannot resume exactly
        store.states.clear()
        with pytest.raises(DataError, match="moments"):
            federation(store).resume(W0)


class EvaluationRefusingChannel(ScriptedChannel):
    """site-b's policy refuses evaluation (``require_dp``); site-c refuses round 2's training."""

    def exchange(self, tasks, timeout=None):
        out = super().exchange(tasks, timeout)
        for site, task in tasks.items():
            if site == "site-b" and isinstance(task, EvaluateTask):
                out[site] = Refusal(task.run_id, task.round, site, "policy", "requires DP")
            if site == "site-c" and isinstance(task, TrainTask) and task.round == 2:
                out[site] = Refusal(task.run_id, task.round, site, "privacy-budget", "spent")
        return out


def test_a_site_refusing_evaluation_is_recorded_once_and_the_rounds_go_on():
    channel, collect = EvaluationRefusingChannel(UPDATES, SIZES), Collect()
    Federation(FedAvg(), FederationSettings(), observers=[collect]).run(channel, W0, 3, run_id="r")
    first, second, _ = collect.records
    assert set(first.evaluate_results) == {"site-a", "site-c"}
    assert first.refusals["site-b"].reason == "requires DP"
    assert "site-b" not in second.refusals  # not asked again
    assert second.refusals["site-c"].kind == "privacy-budget"  # not hidden by an eval refusal
    evaluated = [
        set(t) for t in channel.seen_tasks if isinstance(next(iter(t.values())), EvaluateTask)
    ]
    assert evaluated == [{"site-a", "site-b", "site-c"}, {"site-a", "site-c"}, {"site-a", "site-c"}]
