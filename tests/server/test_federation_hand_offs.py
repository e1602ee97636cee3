"""What the round loop hands on: every strategy and aggregator hook gets this round's number,
every task the run id, the round and the current model, every exchange the configured timeout,
every site its record-level and site-level DP settings; and the round's record holds what
happened (contributors, evaluation metrics, its duration).

Written against the survivors of `scripts/mutation.py federation` (README, Development notes).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    EvaluateResult,
    EvaluateTask,
    Failure,
    LocalTraining,
    RecordDP,
    Reply,
    SiteDP,
    Task,
    TrainResult,
    TrainTask,
)
from fedpharma.server.federation import Federation, FederationSettings
from fedpharma.server.round import RoundRecord
from fedpharma.strategy import FedAvg, SampleWeightedMean, SiteUpdate

W0 = Parameters.from_dict({"w": np.zeros(3)})
SITES = ("site-a", "site-b", "site-c")
DP = SiteDP(noise_multiplier=1.0, clip_norm=0.5, planned_sites=3, min_sites=1)
RECORD_DP = RecordDP(max_grad_norm=1.0, delta=1e-5, planned_rounds=3, noise_multiplier=1.1)


class Channel:
    """Every site trains (update ``[1, 1, 1]`` from 10 examples) and evaluates (rmse 2.0);
    ``calls`` records each exchange as (tasks, timeout)."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Task], float | None]] = []

    def available_sites(self) -> tuple[str, ...]:
        return SITES

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        self.calls.append((dict(tasks), timeout))
        out: dict[str, Reply | Failure] = {}
        for site, task in tasks.items():
            if isinstance(task, TrainTask):
                update = Parameters.from_dict({"w": np.ones(3)})
                out[site] = TrainResult(task.run_id, task.round, site, update, 10)
            else:
                out[site] = EvaluateResult(task.run_id, task.round, site, 4, {"rmse": 2.0})
        return out


class Recording(FedAvg):
    """FedAvg that notes the round number each hook was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.rounds: dict[str, list[int]] = {}

    def _note(self, hook: str, rnd: int) -> None:
        self.rounds.setdefault(hook, []).append(rnd)

    def configure_train(self, rnd: int, local: LocalTraining) -> LocalTraining:
        self._note("configure_train", rnd)
        return super().configure_train(rnd, local)

    def aggregate_train(self, rnd: int, parameters: Parameters, mean: Parameters) -> Parameters:
        self._note("aggregate_train", rnd)
        return super().aggregate_train(rnd, parameters, mean)

    def configure_evaluate(self, rnd: int, available: Sequence[str]) -> list[str]:
        self._note("configure_evaluate", rnd)
        return super().configure_evaluate(rnd, available)

    def aggregate_evaluate(self, rnd: int, results: Sequence[EvaluateResult]) -> dict[str, float]:
        self._note("aggregate_evaluate", rnd)
        return super().aggregate_evaluate(rnd, results)


class SiteLevelDP(SampleWeightedMean):
    """The sample-weighted mean, announcing site-level DP settings; notes the round numbers."""

    def __init__(self) -> None:
        self.rounds: dict[str, list[int]] = {"task_settings": [], "mean_update": []}

    def task_settings(self, rnd: int) -> SiteDP | None:
        self.rounds["task_settings"].append(rnd)
        return DP

    def mean_update(self, rnd: int, updates: Sequence[SiteUpdate]) -> Parameters:
        self.rounds["mean_update"].append(rnd)
        return super().mean_update(rnd, updates)


class Keep:
    def __init__(self) -> None:
        self.records: list[RoundRecord] = []

    def on_round(self, record: RoundRecord) -> None:
        self.records.append(record)


def run_two_rounds() -> tuple[Channel, Recording, SiteLevelDP, Keep, Parameters, float]:
    channel, strategy, aggregator, keep = Channel(), Recording(), SiteLevelDP(), Keep()
    settings = FederationSettings(timeout=12.5, record_dp=RECORD_DP)
    federation = Federation(strategy, settings, aggregator=aggregator, observers=[keep])
    started = time.perf_counter()
    out = federation.run(channel, W0, 2, run_id="run-7")
    return channel, strategy, aggregator, keep, out, time.perf_counter() - started


def test_every_hook_gets_the_number_of_the_round_it_serves():
    _, strategy, aggregator, _, _, _ = run_two_rounds()
    assert strategy.rounds == {
        "configure_train": [1, 1, 1, 2, 2, 2],  # once per site
        "aggregate_train": [1, 2],
        "configure_evaluate": [1, 2],
        "aggregate_evaluate": [1, 2],
    }
    assert aggregator.rounds == {"task_settings": [1, 1, 1, 2, 2, 2], "mean_update": [1, 2]}


def test_every_task_carries_the_run_id_the_round_the_current_model_and_the_dp_settings():
    channel, _, _, _, out, _ = run_two_rounds()
    kinds = [{type(t) for t in tasks.values()} for tasks, _ in channel.calls]
    assert kinds == [{TrainTask}, {EvaluateTask}] * 2
    after_round_1 = W0.arrays[0] + 1.0
    for index, (tasks, timeout) in enumerate(channel.calls):
        assert timeout == 12.5
        assert sorted(tasks) == list(SITES)
        rnd = index // 2 + 1
        for task in tasks.values():
            assert (task.run_id, task.round) == ("run-7", rnd)
            if isinstance(task, TrainTask):
                assert task.settings.record_dp == RECORD_DP and task.settings.site_dp == DP
                sent = W0.arrays[0] if rnd == 1 else after_round_1
            else:  # evaluation of the round's new model
                sent = after_round_1 if rnd == 1 else out.arrays[0]
            np.testing.assert_array_equal(task.parameters.arrays[0], sent)


def test_the_record_holds_contributors_metrics_and_the_rounds_duration():
    _, _, _, keep, out, elapsed = run_two_rounds()
    first, second = keep.records
    assert first.contributors == SITES
    assert first.evaluate_metrics == {"rmse": 2.0}
    assert first.seconds >= 0 and first.seconds + second.seconds <= elapsed
    np.testing.assert_array_equal(second.parameters.arrays[0], out.arrays[0])


def test_a_round_without_evaluation_records_none():
    keep = Keep()
    settings = FederationSettings(evaluate_every=0)  # only after the last round
    Federation(FedAvg(), settings, observers=[keep]).run(Channel(), W0, 3, run_id="r")
    assert [r.evaluate_results == {} for r in keep.records] == [True, True, False]
    assert [r.evaluate_metrics for r in keep.records] == [{}, {}, {"rmse": 2.0}]


def test_by_default_every_round_is_evaluated():
    keep = Keep()
    Federation(FedAvg(), FederationSettings(), observers=[keep]).run(Channel(), W0, 3, run_id="r")
    assert [set(r.evaluate_results) for r in keep.records] == [set(SITES)] * 3
