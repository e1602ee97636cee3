"""JoinGate.wait_for_sites: waiting for enough *admitted* sites (a refused site does not count),
waking when one more site connects, never for longer than WAIT_STEP at a time, and giving up
with the admitted sites once the timeout has passed.

Written against the survivors of `scripts/mutation.py join` (README, Development notes).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest

from fedpharma.core.config import FeaturesConfig
from fedpharma.core.protocol import DescribeTask, DescriptionReply, Failure, Reply, Task
from fedpharma.data.preprocessing import SiteDescription
from fedpharma.server.join import WAIT_STEP, JoinCheck, JoinGate

N_REF = 16


@pytest.fixture(scope="module")
def good() -> SiteDescription:
    return SiteDescription.of_site(FeaturesConfig(radius=2, n_bits=128), n_molecules=N_REF)


@pytest.fixture(scope="module")
def other() -> SiteDescription:
    return SiteDescription.of_site(FeaturesConfig(radius=3, n_bits=128), n_molecules=N_REF)


class Arrivals:
    """A fake channel whose sites connect one per wait, in the order given; ``waits`` records
    each ``wait_for(count, seconds)`` the gate made."""

    def __init__(self, descriptions: Mapping[str, str], connected: int) -> None:
        self.descriptions = dict(descriptions)
        self.order = list(descriptions)
        self.connected = connected
        self.waits: list[tuple[int, float | None]] = []

    def available_sites(self) -> tuple[str, ...]:
        return tuple(self.order[: self.connected])

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        out: dict[str, Reply | Failure] = {}
        for site, task in tasks.items():
            assert isinstance(task, DescribeTask)
            out[site] = DescriptionReply(task.run_id, task.round, site, self.descriptions[site])
        return out

    def wait_for(self, count: int, seconds: float | None) -> None:
        self.waits.append((count, seconds))
        self.connected = min(self.connected + 1, len(self.order))


def test_it_waits_until_enough_sites_are_admitted_and_a_refused_one_does_not_count(good, other):
    channel = Arrivals({"a": good.to_json(), "b": other.to_json(), "c": good.to_json()}, 1)
    gate = JoinGate(channel, "r", JoinCheck(good), wait_for=channel.wait_for)
    assert gate.wait_for_sites(2) == ("a", "c")
    # woken by the next site to connect, or after WAIT_STEP at the latest (no timeout given)
    assert channel.waits == [(2, WAIT_STEP), (3, WAIT_STEP)]


def test_it_returns_at_once_when_enough_sites_are_admitted(good):
    channel = Arrivals({"a": good.to_json(), "b": good.to_json()}, 2)
    gate = JoinGate(channel, "r", JoinCheck(good), wait_for=channel.wait_for)
    assert gate.wait_for_sites(2, timeout=5.0) == ("a", "b")
    assert gate.wait_for_sites(1) == ("a", "b")
    assert channel.waits == []


def test_without_a_way_to_wait_the_admitted_sites_are_returned_at_once(good):
    channel = Arrivals({"a": good.to_json(), "b": good.to_json()}, 1)
    gate = JoinGate(channel, "r", JoinCheck(good))
    assert gate.wait_for_sites(2, timeout=5.0) == ("a",)
    assert channel.waits == []


def test_it_waits_no_longer_than_the_timeout_left_then_returns_the_admitted(good):
    channel = Arrivals({"a": good.to_json(), "b": good.to_json()}, 1)
    waits: list[float | None] = []

    def nobody_comes(count: int, seconds: float | None) -> None:
        assert count == 2
        waits.append(seconds)
        time.sleep(seconds or 0)

    gate = JoinGate(channel, "r", JoinCheck(good), wait_for=nobody_comes)
    started = time.monotonic()
    assert gate.wait_for_sites(2, timeout=0.2) == ("a",)
    assert 0.2 <= time.monotonic() - started < 0.2 + WAIT_STEP
    assert waits and all(s is not None and 0 < s <= 0.2 for s in waits)


def test_a_timeout_longer_than_a_step_waits_one_step_at_a_time(good):
    channel = Arrivals({"a": good.to_json(), "b": good.to_json()}, 1)
    gate = JoinGate(channel, "r", JoinCheck(good), wait_for=channel.wait_for)
    assert gate.wait_for_sites(2, timeout=30 * WAIT_STEP) == ("a", "b")
    assert channel.waits == [(2, WAIT_STEP)]
