"""How JoinGate asks for descriptions and passes tasks on: one round-0 DescribeTask exchange under
the gate's timeout; a site missing from the replies gets no verdict without holding the others
back; every verdict carries its reason; tasks go out under the caller's timeout, and not at all
when every site is barred.

Written against the survivors of `scripts/mutation.py join` (README, Development notes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pytest

from fedpharma.core.config import FeaturesConfig
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    DescribeTask,
    DescriptionReply,
    Failure,
    Refusal,
    Reply,
    Task,
    TrainResult,
    TrainTask,
)
from fedpharma.data.preprocessing import SiteDescription
from fedpharma.server.join import JoinCheck, JoinGate, JoinOutcome

N_REF = 16
MODEL = Parameters(("w",), (np.zeros(2, np.float32),))


@pytest.fixture(scope="module")
def good() -> SiteDescription:
    return SiteDescription.of_site(FeaturesConfig(radius=2, n_bits=128), n_molecules=N_REF)


class Recorder:
    """A fake channel: each site answers as scripted (``None``: missing from the replies);
    ``calls`` records every exchange as (tasks, timeout)."""

    def __init__(self, answers: Mapping[str, Reply | None]) -> None:
        self.answers = dict(answers)
        self.calls: list[tuple[dict[str, Task], float | None]] = []

    def available_sites(self) -> tuple[str, ...]:
        return tuple(self.answers)

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        self.calls.append((dict(tasks), timeout))
        out: dict[str, Reply | Failure] = {}
        for site, task in tasks.items():
            answer = self.answers[site]
            if isinstance(task, TrainTask):
                out[site] = TrainResult(task.run_id, task.round, site, task.parameters, 3)
            elif answer is not None:
                out[site] = answer
        return out


def described(site: str, description: SiteDescription) -> DescriptionReply:
    return DescriptionReply("run-1", 0, site, description.to_json())


def test_sites_are_described_in_one_round_0_exchange_under_the_gates_timeout(good):
    channel = Recorder({"a": described("a", good), "b": described("b", good)})
    gate = JoinGate(channel, "run-1", JoinCheck(good), timeout=7.5)
    assert gate.available_sites() == ("a", "b")
    ((tasks, timeout),) = channel.calls
    assert tasks == {"a": DescribeTask("run-1", 0), "b": DescribeTask("run-1", 0)}
    assert timeout == 7.5


def test_a_site_missing_from_the_replies_gets_no_verdict_and_holds_no_one_back(good):
    channel = Recorder({"mute": None, "b": described("b", good)})
    outcomes: list[JoinOutcome] = []
    gate = JoinGate(channel, "run-1", JoinCheck(good), on_outcome=outcomes.extend)
    assert gate.available_sites() == ("b",)
    assert [o.site for o in outcomes] == ["b"]  # no verdict on "mute": it is asked again
    channel.answers["mute"] = described("mute", good)
    assert gate.available_sites() == ("mute", "b")


def test_every_verdict_carries_its_reason(good):
    wrong = dataclasses.replace(good, recipe={**good.recipe, "radius": 3, "n_bits": 256})
    channel = Recorder(
        {
            "ok": described("ok", good),
            "wrong": described("wrong", wrong),
            "garbled": DescriptionReply("run-1", 0, "garbled", "{"),
        }
    )
    outcomes: list[JoinOutcome] = []
    gate = JoinGate(channel, "run-1", JoinCheck(good), on_outcome=outcomes.extend)
    assert gate.available_sites() == ("ok",)
    verdicts = {o.site: o for o in outcomes}
    assert verdicts["ok"] == JoinOutcome("ok", True, f"recipe {good.recipe_digest}")
    assert verdicts["wrong"].admitted is False and verdicts["garbled"].admitted is False
    radius, n_bits = verdicts["wrong"].reason.split("; set [features] radius = 2; ")
    assert radius.startswith('site "wrong" uses fingerprint radius (radius) 3')
    assert n_bits.startswith('site "wrong" uses fingerprint size (n_bits) 256')
    assert verdicts["garbled"].reason.startswith(
        "site 'garbled' sent an unusable preprocessing description: "
    )


def test_a_refusal_to_describe_is_quoted_cut_to_200_characters_with_the_fix(good):
    reason = "x" * 199 + "yz"
    channel = Recorder({"old": Refusal("run-1", 0, "old", "invalid-task", reason)})
    outcomes: list[JoinOutcome] = []
    gate = JoinGate(channel, "run-1", JoinCheck(good), on_outcome=outcomes.extend)
    assert gate.available_sites() == ()
    (outcome,) = outcomes
    assert outcome.reason == (
        f"site 'old' did not describe its preprocessing (invalid-task: {'x' * 199 + 'y'!r}); "
        "run the consortium's fedpharma release on the consortium's kind of data"
    )


def test_tasks_go_out_under_the_callers_timeout_and_barred_sites_fail_in_their_own_name(good):
    channel = Recorder({"a": described("a", good)})
    gate = JoinGate(channel, "run-1", JoinCheck(good), timeout=1.0)
    assert gate.available_sites() == ("a",)
    task = TrainTask("run-1", 1, MODEL)
    replies = gate.exchange({"a": task, "stranger": task}, timeout=4.0)
    assert channel.calls[-1] == ({"a": task}, 4.0)
    assert isinstance(replies["a"], TrainResult)
    assert replies["stranger"] == Failure(
        "stranger", "site was not admitted at join (preprocessing not checked)"
    )


def test_no_exchange_is_made_when_every_site_is_barred(good):
    channel = Recorder({"a": described("a", good)})
    gate = JoinGate(channel, "run-1", JoinCheck(good))
    replies = gate.exchange({"a": TrainTask("run-1", 1, MODEL)}, timeout=4.0)
    assert isinstance(replies["a"], Failure)
    assert channel.calls == []  # nothing to wait for: no exchange with nobody
