"""How the loop starts, waits, retries and resumes: ``min_sites`` available is enough, a wait is
made only when sites are missing and says who is there, each round gets its own retries, a run
without retries stops with the round's reason alone, a resumed run is not prepared again, a
fresh store resumes at round 0, a checkpoint of another model is refused, and a sampled round
never picks a site twice.

Written against the survivors of `scripts/mutation.py federation` (README, Development notes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from fedpharma.core.errors import ProtocolError, RoundFailed
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import EvaluateResult, Failure, Reply, Task, TrainResult, TrainTask
from fedpharma.server.federation import Federation, FederationSettings
from fedpharma.server.round import RoundRecord
from fedpharma.strategy import FedAvg

W0 = Parameters.from_dict({"w": np.zeros(3)})


class Channel:
    """``sites`` train and evaluate; the train exchanges numbered in ``crash_at`` (from 1) fail."""

    def __init__(self, sites: Sequence[str], crash_at: Sequence[int] = ()) -> None:
        self.sites, self.crash_at = tuple(sites), set(crash_at)
        self.train_exchanges = 0

    def available_sites(self) -> tuple[str, ...]:
        return self.sites

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        training = any(isinstance(t, TrainTask) for t in tasks.values())
        self.train_exchanges += training
        out: dict[str, Reply | Failure] = {}
        for site, task in tasks.items():
            if training and self.train_exchanges in self.crash_at:
                out[site] = Failure(site, "connection reset")
            elif isinstance(task, TrainTask):
                update = Parameters.from_dict({"w": np.ones(3)})
                out[site] = TrainResult(task.run_id, task.round, site, update, 5)
            else:
                out[site] = EvaluateResult(task.run_id, task.round, site, 5, {})
        return out


def test_exactly_min_sites_available_is_enough_and_nobody_is_waited_for():
    waits: list[tuple[int, float | None]] = []

    def wait(count: int, seconds: float | None) -> Sequence[str]:
        waits.append((count, seconds))
        return ()

    federation = Federation(FedAvg(), FederationSettings(min_sites=3))
    out = federation.run(Channel(["a", "b", "c"]), W0, 1, run_id="r", wait_for_sites=wait)
    np.testing.assert_array_equal(out.arrays[0], np.ones(3))
    assert waits == []


def test_a_wait_that_brings_exactly_min_sites_starts_the_round():
    channel = Channel(["a"])

    def wait(count: int, seconds: float | None) -> Sequence[str]:
        channel.sites = ("a", "b")
        return channel.sites

    lines: list[str] = []
    federation = Federation(FedAvg(), FederationSettings(min_sites=2), on_status=lines.append)
    out = federation.run(channel, W0, 1, run_id="r", wait_for_sites=wait)
    np.testing.assert_array_equal(out.arrays[0], np.ones(3))
    assert lines == ["waiting for sites: 1 of 2 needed admitted (a)"]


def test_a_wait_with_no_site_there_says_so_and_the_stop_names_round_and_seconds():
    lines: list[str] = []
    federation = Federation(FedAvg(), FederationSettings(min_sites=2), on_status=lines.append)
    with pytest.raises(RoundFailed) as caught:
        federation.run(Channel([]), W0, 1, run_id="r", wait_for_sites=lambda n, s: ())
    assert lines == ["waiting for sites: 0 of 2 needed admitted"]
    assert str(caught.value) == (
        "stopped: round 1: only 0 of the 2 site(s) needed connected and admitted within 0 s"
    )


def test_too_few_sites_without_a_way_to_wait_fail_the_round_naming_the_fix():
    federation = Federation(FedAvg(), FederationSettings(min_sites=2))
    with pytest.raises(RoundFailed) as caught:
        federation.run(Channel(["a"]), W0, 1, run_id="r")
    assert str(caught.value) == (
        "stopped: round 1: 1 site(s) available, at least 2 needed; "
        "start more sites or lower min_sites"
    )


def test_each_round_gets_its_own_retries():
    lines: list[str] = []
    federation = Federation(FedAvg(), FederationSettings(retries=1), on_status=lines.append)
    # round 1 fails once, then succeeds; round 2 fails once, then succeeds
    out = federation.run(Channel(["a"], crash_at=[1, 3]), W0, 2, run_id="r")
    np.testing.assert_array_equal(out.arrays[0], np.full(3, 2.0))
    assert [line.rsplit(";", 1)[1] for line in lines] == [" retry 1 of 1"] * 2


def test_without_retries_the_run_stops_with_the_rounds_reason_alone():
    with pytest.raises(RoundFailed) as caught:
        Federation(FedAvg(), FederationSettings()).run(
            Channel(["a"], crash_at=[1]), W0, 1, run_id="r"
        )
    assert str(caught.value) == (
        "stopped: round 1: 0 of 1 site(s) returned an update, at least 1 needed "
        "(a: connection reset)"
    )


def test_a_run_resumed_after_round_1_is_not_prepared_again():
    prepared: list[Parameters] = []

    def prepare(parameters: Parameters) -> Parameters:
        prepared.append(parameters)
        return parameters

    federation = Federation(FedAvg(), FederationSettings(), prepare=prepare)
    federation.run(Channel(["a"]), W0, 2, run_id="r", first_round=2)
    assert prepared == []
    federation.run(Channel(["a"]), W0, 1, run_id="r")
    assert prepared == [W0]  # a fresh run prepares its initial model, once


class Store:
    """A run store holding ``checkpoint`` (or none) and no strategy state."""

    def __init__(self, checkpoint: tuple[int, Parameters] | None) -> None:
        self.checkpoint = checkpoint

    def on_round(self, record: RoundRecord) -> None:
        return None

    def latest_checkpoint(self) -> tuple[int, Parameters] | None:
        return self.checkpoint

    def save_server_state(self, rnd: int, state: bytes) -> None:
        return None

    def server_state(self, rnd: int) -> bytes | None:
        return None


def test_without_a_store_or_a_completed_round_a_run_resumes_at_round_0():
    assert Federation(FedAvg(), FederationSettings()).resume(W0) == (0, W0)
    empty = Federation(FedAvg(), FederationSettings(), store=Store(None))
    assert empty.resume(W0) == (0, W0)


def test_a_checkpoint_of_another_model_is_refused_as_the_checkpoint():
    other = Parameters.from_dict({"w": np.zeros(4)})
    federation = Federation(FedAvg(), FederationSettings(), store=Store((2, other)))
    with pytest.raises(ProtocolError) as caught:
        federation.resume(W0)
    assert str(caught.value).startswith("checkpoint: parameter 'w' has shape (4,)")


def test_a_sampled_round_never_picks_a_site_twice():
    federation = Federation(FedAvg(), FederationSettings(fraction_fit=0.5, seed=0))
    sites = [f"site-{i}" for i in range(10)]
    picks = [federation.select_sites(sites, rnd) for rnd in range(1, 21)]
    assert all(len(p) == 5 and len(set(p)) == 5 for p in picks)
