"""JoinGate delivers a task only to a site the join check admitted: not to a refused site, and
not to one that never got a verdict (silent at its description, or never listed at all)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from fedpharma.core.config import FeaturesConfig
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    DescribeTask,
    DescriptionReply,
    EvaluateResult,
    EvaluateTask,
    Failure,
    Reply,
    Task,
    TrainResult,
    TrainTask,
)
from fedpharma.data.preprocessing import SiteDescription
from fedpharma.server.join import JoinCheck, JoinGate

N_REF = 16  # a small public reference set keeps the description cheap
MODEL = Parameters(("w",), (np.zeros(2, np.float32),))


class Sites:
    """A fake channel: connected sites describe themselves as told and answer every other task;
    ``delivered`` lists the (site, task type) of every task that reached a site."""

    def __init__(self, descriptions: Mapping[str, str | None]) -> None:
        self.descriptions = dict(descriptions)  # None: silent (no answer in time)
        self.connected = tuple(sorted(descriptions))
        self.delivered: list[tuple[str, str]] = []

    def available_sites(self) -> tuple[str, ...]:
        return self.connected

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        replies: dict[str, Reply | Failure] = {}
        for site, task in tasks.items():
            self.delivered.append((site, type(task).__name__))
            if isinstance(task, DescribeTask):
                text = self.descriptions[site]
                replies[site] = (
                    Failure(site, "no answer before the deadline")
                    if text is None
                    else DescriptionReply(task.run_id, task.round, site, text)
                )
            elif isinstance(task, TrainTask):
                replies[site] = TrainResult(task.run_id, task.round, site, task.parameters, 5)
            elif isinstance(task, EvaluateTask):
                replies[site] = EvaluateResult(task.run_id, task.round, site, 5, {})
        return replies

    def received(self, site: str) -> list[str]:
        return [kind for s, kind in self.delivered if s == site and kind != "DescribeTask"]


@pytest.fixture(scope="module")
def description() -> SiteDescription:
    return SiteDescription.of_site(FeaturesConfig(radius=2, n_bits=128), n_molecules=N_REF)


def round_tasks(sites: tuple[str, ...]) -> dict[str, Task]:
    return {site: TrainTask("run-1", 1, MODEL) for site in sites}


def assert_barred(replies: Mapping[str, Reply | Failure], site: str) -> None:
    reply = replies[site]
    assert isinstance(reply, Failure), reply
    assert "not admitted at join" in reply.reason


def test_a_site_silent_at_its_description_gets_no_task(description):
    channel = Sites({"honest": description.to_json(), "silent": None})
    gate = JoinGate(channel, "run-1", JoinCheck(description))
    assert gate.available_sites() == ("honest",)
    replies = gate.exchange(round_tasks(("honest", "silent")))
    assert isinstance(replies["honest"], TrainResult)
    assert_barred(replies, "silent")
    assert channel.received("silent") == [] and channel.received("honest") == ["TrainTask"]


def test_a_site_the_gate_never_listed_gets_no_task(description):
    channel = Sites({"a": description.to_json(), "late": description.to_json()})
    channel.connected = ("a",)
    gate = JoinGate(channel, "run-1", JoinCheck(description))
    assert gate.available_sites() == ("a",)
    channel.connected = ("a", "late")  # connects after the look, before the tasks go out
    replies = gate.exchange(round_tasks(("a", "late")) | {"late": EvaluateTask("run-1", 1, MODEL)})
    assert_barred(replies, "late")
    assert channel.received("late") == [] and ("late", "DescribeTask") not in channel.delivered
    assert gate.available_sites() == ("a", "late")  # checked at the next look, then served
    assert isinstance(gate.exchange(round_tasks(("late",)))["late"], TrainResult)


def test_a_site_that_rejoins_after_the_look_gets_no_task_until_checked_again(description):
    channel = Sites({"a": description.to_json(), "b": description.to_json()})
    connection = {"a": 1, "b": 1}
    gate = JoinGate(channel, "run-1", JoinCheck(description), connection_of=connection.get)
    assert gate.available_sites() == ("a", "b")
    connection["b"] = 2  # b leaves and rejoins between the look and the evaluation
    replies = gate.exchange({site: EvaluateTask("run-1", 1, MODEL) for site in ("a", "b")})
    assert isinstance(replies["a"], EvaluateResult)
    assert_barred(replies, "b")
    assert channel.received("b") == []
    assert gate.available_sites() == ("a", "b")  # the new connection is described, then served
    assert isinstance(gate.exchange(round_tasks(("b",)))["b"], TrainResult)


def test_a_site_without_any_look_gets_no_task(description):
    channel = Sites({"a": description.to_json()})
    gate = JoinGate(channel, "run-1", JoinCheck(description))
    replies = gate.exchange(round_tasks(("a",)))  # nobody asked the gate who is admitted
    assert_barred(replies, "a")
    assert channel.delivered == []


def test_a_refused_site_gets_neither_training_nor_evaluation(description):
    other = SiteDescription.of_site(FeaturesConfig(radius=3, n_bits=128), n_molecules=N_REF)
    channel = Sites({"good": description.to_json(), "other": other.to_json()})
    gate = JoinGate(channel, "run-1", JoinCheck(description))
    assert gate.available_sites() == ("good",)
    for task in (TrainTask("run-1", 1, MODEL), EvaluateTask("run-1", 1, MODEL)):
        replies = gate.exchange({"good": task, "other": task})
        assert_barred(replies, "other")
        assert not isinstance(replies["good"], Failure)
    assert channel.received("other") == []
    assert channel.received("good") == ["TrainTask", "EvaluateTask"]


def test_without_a_join_check_every_connected_site_is_served():
    channel = Sites({"a": None, "b": None})
    gate = JoinGate(channel, "run-1", None)
    replies = gate.exchange(round_tasks(("a", "b")))
    assert all(isinstance(r, TrainResult) for r in replies.values())
    assert channel.delivered == [("a", "TrainTask"), ("b", "TrainTask")]
