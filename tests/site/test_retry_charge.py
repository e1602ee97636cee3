"""A round failed by a hostile site and retried does not charge the honest sites' budgets again.

The retried round sends every site the very same task (same run, round, model and settings),
so an honest site answers it with the release the coordinator already holds: nothing new
leaves, nothing new is charged. Its weakened twin (a site that does not recognise the task)
charges the honest sites twice for one round.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedpharma.core.config import SitePolicyConfig
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    EvaluateResult,
    EvaluateTask,
    Failure,
    LocalTraining,
    SiteDP,
    TrainResult,
    TrainSettings,
    TrainTask,
)
from fedpharma.core.protocol.codec import decode_message, encode_message_parts
from fedpharma.models.base import FitOutput
from fedpharma.server.dp import SiteLevelDP
from fedpharma.server.federation import Federation, FederationSettings
from fedpharma.site import runtime as runtime_module
from fedpharma.site.policy import SitePolicy
from fedpharma.site.runtime import SiteRuntime
from fedpharma.strategy import FedAvg
from fedpharma.transport.inprocess import InProcessChannel

W0 = Parameters.from_dict({"w": np.zeros(4, dtype=np.float32)})


class Trainer:
    def __init__(self) -> None:
        self.fits = 0

    def fit(self, params, data, *, epochs, seed, proximal_mu=0.0):
        self.fits += 1
        moved = Parameters(params.names, tuple(a + 1.0 for a in params.arrays))
        return FitOutput(moved, len(data), 0.5, 0.0)

    def predict(self, params, data):
        return np.zeros((len(data), 1), dtype=np.float32)


def honest_site(name: str, tmp_path) -> tuple[SiteRuntime, SitePolicy, Trainer]:
    rng = np.random.default_rng(0)
    data = Dataset(
        rng.normal(size=(20, 4)).astype(np.float32),
        rng.normal(size=(20, 1)).astype(np.float32),
        "regression",
        ("y",),
        np.arange(20),
    )
    policy = SitePolicy(SitePolicyConfig(site_epsilon=100.0), tmp_path / f"{name}.sqlite")
    trainer = Trainer()
    site = SiteRuntime(name, SiteData(data, data), trainer, policy=policy)
    return site, policy, trainer


class Hostile:
    """Sends a malformed update first (the round falls short of min_sites), then a good one."""

    def __init__(self) -> None:
        self.tasks = 0

    def handle_encoded(self, data):
        task = decode_message(data)
        if isinstance(task, EvaluateTask):
            return encode_message_parts(EvaluateResult(task.run_id, task.round, "evil", 0))
        self.tasks += 1
        assert isinstance(task, TrainTask)
        update = Parameters(task.parameters.names, tuple(a + 1 for a in task.parameters.arrays))
        if self.tasks == 1:
            update = Parameters.from_dict({"w": np.zeros(5, dtype=np.float32)})
        return encode_message_parts(TrainResult(task.run_id, task.round, "evil", update, 20))


def run_with_a_retry(tmp_path) -> list[tuple[SitePolicy, Trainer]]:
    honest = {name: honest_site(name, tmp_path) for name in ("a", "b")}
    channel = InProcessChannel({"a": honest["a"][0], "b": honest["b"][0], "evil": Hostile()})
    aggregator = SiteLevelDP(
        noise_multiplier=1.0,
        clip_norm=1.0,
        planned_sites=3,
        min_sites=3,
        distributed=False,
        rng=np.random.default_rng(1),
    )
    federation = Federation(
        FedAvg(),
        FederationSettings(min_sites=3, retries=1, evaluate_every=0),
        aggregator=aggregator,
    )
    federation.run(channel, W0, 1, run_id="run-1", wait_for_sites=lambda n, t: ("a", "b", "evil"))
    return [(policy, trainer) for _, policy, trainer in honest.values()]


def test_a_retried_round_charges_each_honest_site_once(tmp_path):
    for policy, trainer in run_with_a_retry(tmp_path):
        assert [e.round for e in policy.ledger.entries("site")] == [1]
        assert trainer.fits == 1  # the same release was sent again, not a new one


def test_weakened_twin_a_site_that_does_not_recognise_the_task_pays_twice(tmp_path, monkeypatch):
    fresh = iter(range(10**6))
    monkeypatch.setattr(runtime_module, "_task_digest", lambda task: bytes([next(fresh) % 256]))
    for policy, trainer in run_with_a_retry(tmp_path):
        assert [e.round for e in policy.ledger.entries("site")] == [1, 1]
        assert trainer.fits == 2


@pytest.mark.parametrize("change", ["round", "parameters", "settings"])
def test_a_different_task_is_charged_again(tmp_path, change):
    site, policy, _ = honest_site("a", tmp_path)
    site_dp = SiteDP(1.0, 1.0, planned_sites=3, min_sites=3)
    task = TrainTask("run-1", 1, W0, TrainSettings(LocalTraining(1, 1), site_dp=site_dp))
    other = {
        "round": TrainTask("run-1", 2, W0, task.settings),
        "parameters": TrainTask("run-1", 1, Parameters.from_dict({"w": np.ones(4)}), task.settings),
        "settings": TrainTask("run-1", 1, W0, TrainSettings(LocalTraining(1, 2), site_dp=site_dp)),
    }[change]
    first, again, second = site.handle(task), site.handle(task), site.handle(other)
    assert again is first and isinstance(second, TrainResult)
    assert len(policy.ledger.entries("site")) == 2
    assert not isinstance(first, Failure)
