"""The round loop under secure aggregation: every train task carries the collector's settings
for this round and number of sites; the sites' advertisements, the model, the round, the run id
and the timeout go to the collector; the model moves by the secure mean only; the record names
the contributors and holds no single update; a round with too few advertisements or
contributors fails with every site's reason.

Written against the survivors of `scripts/mutation.py federation` (README, Development notes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pytest

from fedpharma.core.errors import RoundFailed
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    Channel,
    EvaluateResult,
    Failure,
    Refusal,
    Reply,
    SecAggSettings,
    SecureReply,
    SecureSettings,
    Task,
    TrainTask,
)
from fedpharma.server.federation import Federation, FederationSettings
from fedpharma.server.round import RoundRecord
from fedpharma.strategy import FedAvg

W0 = Parameters.from_dict({"w": np.zeros(3)})
MEAN = Parameters.from_dict({"w": np.array([0.5, -1.0, 2.0])})
SITES = ("site-a", "site-b", "site-c")


class Sites:
    """Each site advertises (or behaves as ``misbehave`` says) and evaluates."""

    def __init__(self, misbehave: Mapping[str, str] | None = None) -> None:
        self.misbehave = dict(misbehave or {})
        self.calls: list[tuple[dict[str, Task], float | None]] = []

    def available_sites(self) -> tuple[str, ...]:
        return SITES

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        self.calls.append((dict(tasks), timeout))
        out: dict[str, Reply | Failure] = {}
        for site, task in tasks.items():
            how = self.misbehave.get(site)
            if not isinstance(task, TrainTask):
                out[site] = EvaluateResult(task.run_id, task.round, site, 4, {"rmse": 1.0})
            elif how == "crash":
                out[site] = Failure(site, "connection reset")
            elif how == "refuse":
                out[site] = Refusal(task.run_id, task.round, site, "policy", "not approved")
            else:
                payload = site.encode()
                out[site] = SecureReply(task.run_id, task.round, site, "advertise", payload)
        return out


@dataclass(frozen=True)
class Outcome:
    mean: Parameters
    contributors: tuple[str, ...]
    failures: dict[str, str] = field(default_factory=dict)


class Collector:
    """A stand-in for secure aggregation: reveals MEAN as the mean of ``contributors``."""

    def __init__(
        self, contributors: tuple[str, ...], failures: Mapping[str, str] | None = None
    ) -> None:
        self.contributors, self.failures = contributors, dict(failures or {})
        self.settings_asked: list[tuple[int, int]] = []
        self.collected: list[dict[str, object]] = []

    def task_settings(self, rnd: int, n_sites: int) -> SecureSettings:
        self.settings_asked.append((rnd, n_sites))
        return SecAggSettings(
            threshold=2, ring_bits=64, clip=1.0, max_sites=n_sites, max_examples=9
        )

    def collect(
        self,
        channel: Channel,
        advertisements: Mapping[str, SecureReply],
        template: Parameters,
        *,
        n_sites: int,
        rnd: int,
        run_id: str,
        timeout: float | None = None,
        on_rejected: object = None,
    ) -> Outcome:
        self.collected.append(
            {
                "channel": channel,
                "advertised": {s: r.payload for s, r in advertisements.items()},
                "template": template,
                "n_sites": n_sites,
                "rnd": rnd,
                "run_id": run_id,
                "timeout": timeout,
            }
        )
        return Outcome(MEAN, self.contributors, self.failures)


class Stepping(FedAvg):
    """FedAvg that notes the round of each server step."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    def aggregate_train(self, rnd: int, parameters: Parameters, mean: Parameters) -> Parameters:
        self.steps.append(rnd)
        return super().aggregate_train(rnd, parameters, mean)


class Keep:
    def __init__(self) -> None:
        self.records: list[RoundRecord] = []

    def on_round(self, record: RoundRecord) -> None:
        self.records.append(record)


def federation(
    collector: Collector, keep: Keep, min_sites: int = 2, strategy: FedAvg | None = None
) -> Federation:
    settings = FederationSettings(min_sites=min_sites, timeout=9.0)
    return Federation(strategy or FedAvg(), settings, collector=collector, observers=[keep])


def test_a_secure_round_moves_by_the_collected_mean_and_records_only_the_contributors():
    channel, collector, keep = Sites({"site-c": "crash"}), Collector(("site-a", "site-b")), Keep()
    collector.failures = {"site-b": "dropped out after sharing keys"}
    strategy = Stepping()
    out = federation(collector, keep, strategy=strategy).run(channel, W0, 2, run_id="run-9")

    np.testing.assert_array_equal(out.arrays[0], 2 * MEAN.arrays[0])  # w + Δ̄, twice
    assert strategy.steps == [1, 2]
    assert collector.settings_asked == [(1, 3), (2, 3)]
    train_tasks = [tasks for tasks, _ in channel.calls if isinstance(tasks["site-a"], TrainTask)]
    for rnd, tasks in enumerate(train_tasks, start=1):
        assert {t.settings.secure for t in tasks.values()} == {  # type: ignore[attr-defined]
            collector.task_settings(rnd, 3)
        }
        assert {(t.run_id, t.round) for t in tasks.values()} == {("run-9", rnd)}
    assert all(timeout == 9.0 for _, timeout in channel.calls)
    first, second = collector.collected
    assert first == {
        "channel": channel,
        "advertised": {"site-a": b"site-a", "site-b": b"site-b"},
        "template": W0,
        "n_sites": 3,
        "rnd": 1,
        "run_id": "run-9",
        "timeout": 9.0,
    }
    assert second["rnd"] == 2
    np.testing.assert_array_equal(second["template"].arrays[0], MEAN.arrays[0])  # type: ignore[attr-defined]

    record = keep.records[0]
    assert record.contributors == ("site-a", "site-b") and record.train_results == {}
    assert record.failures == {  # the train exchange's failures and the collector's together
        "site-c": "connection reset",
        "site-b": "dropped out after sharing keys",
    }


def test_too_few_advertisements_fail_the_round_with_every_sites_reason_before_collecting():
    channel = Sites({"site-b": "crash", "site-c": "refuse"})
    collector = Collector(SITES)
    with pytest.raises(RoundFailed) as caught:
        federation(collector, Keep()).run(channel, W0, 1, run_id="r")
    assert str(caught.value) == (
        "stopped: round 1: 1 of 3 site(s) returned an update, at least 2 needed "
        "(site-b: connection reset; site-c refused: not approved)"
    )
    assert collector.collected == []


def test_too_few_contributors_fail_the_round_with_the_collectors_reasons():
    collector = Collector(("site-a",), {"site-b": "no masked input", "site-c": "no masked input"})
    with pytest.raises(RoundFailed) as caught:
        federation(collector, Keep()).run(Sites(), W0, 1, run_id="r")
    assert str(caught.value) == (
        "stopped: round 1: 1 of 3 site(s) returned an update, at least 2 needed "
        "(site-b, site-c: no masked input)"  # one reason, said once
    )


def test_sites_refusing_for_the_same_reason_are_named_together_once():
    channel = Sites({"site-b": "refuse", "site-c": "refuse"})
    with pytest.raises(RoundFailed) as caught:
        federation(Collector(SITES), Keep()).run(channel, W0, 1, run_id="r")
    message = str(caught.value)
    assert message.endswith("(site-b, site-c refused: not approved)")
    assert message.count("not approved") == 1


def test_a_round_below_min_sites_without_any_reason_says_so():
    with pytest.raises(RoundFailed) as caught:
        federation(Collector(("site-a", "site-b")), Keep(), min_sites=3).run(
            Sites(), W0, 1, run_id="r"
        )
    assert str(caught.value).endswith(
        "2 of 3 site(s) returned an update, at least 3 needed (no reason given)"
    )
