"""A site enforces its owner's privacy budget before it touches data, and keeps its ledger."""

import dataclasses

import numpy as np
import pytest

from fedpharma.core.config import SitePolicyConfig
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.errors import PolicyRefused
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    LocalTraining,
    Refusal,
    SecAggSettings,
    SiteDP,
    TrainResult,
    TrainSettings,
    TrainTask,
)
from fedpharma.models.base import FitOutput
from fedpharma.privacy import GaussianEvent, compose, noised_share_bound
from fedpharma.secure.identity import ephemeral_consortium
from fedpharma.server.dp import SiteLevelDP
from fedpharma.site.policy import SitePolicy
from fedpharma.site.runtime import SiteRuntime
from fedpharma.site.secure import SecureParticipation
from fedpharma.strategy import SiteUpdate

W0 = Parameters.from_dict({"head.weight": np.zeros((1, 4)), "head.bias": np.zeros(1)})


class RecordingData:
    """A dataset whose rows record whether anyone read them."""

    def __init__(self, n):
        rng = np.random.default_rng(0)
        self.inner = Dataset(
            features=rng.normal(size=(n, 4)).astype(np.float32),
            labels=rng.normal(size=(n, 1)).astype(np.float32),
            task="regression",
            task_names=("y",),
            groups=np.arange(n),
        )


class SpyTrainer:
    """Moves every weight by +3 (an update of norm 3·√5) and counts fits."""

    def __init__(self):
        self.fits = 0

    def fit(self, params, data, *, epochs, seed, proximal_mu=0.0):
        self.fits += 1
        moved = Parameters(params.names, tuple(a + 3.0 for a in params.arrays))
        return FitOutput(moved, len(data), 0.5, 0.0)

    def predict(self, params, data):
        return np.zeros((len(data), 1), dtype=np.float32)


def _site(tmp_path, policy_config, trainer=None):
    data = RecordingData(50).inner
    policy = SitePolicy(policy_config, tmp_path / "privacy.sqlite")
    trainer = trainer or SpyTrainer()
    consortium, identities = ephemeral_consortium(("site-a",))
    site = SiteRuntime(
        "site-a",
        SiteData(data, data),
        trainer,
        policy=policy,
        noise_source=lambda seed: np.random.default_rng(seed),
        secure=SecureParticipation(identities["site-a"], consortium),
    )
    return site, trainer, policy


def _site_level_task(rnd, sigma=1.0, clip=1.0, placement="central"):
    site_dp = SiteDP(sigma, clip, planned_sites=4, min_sites=4, placement=placement)
    return TrainTask("run-1", rnd, W0, TrainSettings(LocalTraining(1, rnd), site_dp=site_dp))


def test_task_over_budget_is_refused_before_training_and_charges_nothing(tmp_path):
    site, trainer, policy = _site(tmp_path, SitePolicyConfig(site_epsilon=12.0))
    assert isinstance(site.handle(_site_level_task(1)), TrainResult)
    spent = policy.ledger.spent("site").epsilon
    replies = [site.handle(_site_level_task(rnd)) for rnd in range(2, 30)]
    refusal = next(r for r in replies if isinstance(r, Refusal))
    assert refusal.kind == "privacy-budget"
    assert "budget" in refusal.reason and "ε" in refusal.reason
    fits_before_refusal = replies.index(refusal) + 1
    assert trainer.fits == fits_before_refusal  # the refused task trained nothing
    assert len(policy.ledger.entries("site")) == fits_before_refusal
    assert policy.ledger.spent("site").epsilon <= 12.0
    assert policy.ledger.spent("site").epsilon >= spent


def test_site_without_a_budget_for_the_relation_refuses(tmp_path):
    site, trainer, _ = _site(tmp_path, SitePolicyConfig())
    reply = site.handle(_site_level_task(1))
    assert isinstance(reply, Refusal) and reply.kind == "policy"
    assert trainer.fits == 0


def test_require_dp_refuses_a_plain_task(tmp_path):
    site, trainer, _ = _site(tmp_path, SitePolicyConfig(require_dp=True))
    reply = site.handle(TrainTask("run-1", 1, W0, TrainSettings(LocalTraining(1, 1))))
    assert isinstance(reply, Refusal) and "requires differential privacy" in reply.reason
    assert trainer.fits == 0


def test_ledger_survives_a_site_restart(tmp_path):
    config = SitePolicyConfig(site_epsilon=50.0)
    site, _, policy = _site(tmp_path, config)
    for rnd in (1, 2, 3):
        site.handle(_site_level_task(rnd))
    before = policy.ledger.spent("site").epsilon
    restarted = SitePolicy(config, tmp_path / "privacy.sqlite")
    assert len(restarted.ledger.entries("site")) == 3
    assert restarted.ledger.spent("site").epsilon == pytest.approx(before)
    expected = restarted.ledger.accountant.epsilon(compose([GaussianEvent(1.0)] * 3), 1e-5)
    assert before == pytest.approx(expected)


def test_site_level_update_is_clipped_and_reports_its_epsilon(tmp_path):
    site, _, _ = _site(tmp_path, SitePolicyConfig(site_epsilon=50.0))
    reply = site.handle(_site_level_task(1, clip=0.5))
    assert isinstance(reply, TrainResult)
    assert np.linalg.norm(reply.update.flatten()) <= 0.5 + 1e-6
    assert "train_loss" not in reply.metrics  # not covered by the guarantee: never sent
    assert reply.metrics["epsilon_site"] > 0
    assert set(reply.metrics) == {"epsilon_site"}  # no raw "within the clip" bit either


def test_distributed_noise_share_has_std_sigma_c_over_sqrt_n(tmp_path):
    site, _, _ = _site(tmp_path, SitePolicyConfig(site_epsilon=1e6))
    sigma, clip, n = 2.0, 1.0, 4
    zeros = Parameters.from_dict({"w": np.zeros(100_000)})
    settings = SiteDP(sigma, clip, planned_sites=n, min_sites=n, placement="distributed")
    share = site.dp.clip_and_noise(zeros, settings, seed=1).flatten()
    assert share.std() == pytest.approx(sigma * clip / np.sqrt(n), rel=0.02)
    central = dataclasses.replace(settings, placement="central")
    assert not site.dp.clip_and_noise(zeros, central, seed=1).flatten().any()


def _secagg(ring_bits=64, clip=100.0):
    return SecAggSettings(
        threshold=3, ring_bits=ring_bits, clip=clip, max_sites=4, max_examples=1_000
    )


@pytest.mark.parametrize(
    ("secure", "problem"),
    [
        (None, "needs secure aggregation"),
        (_secagg(ring_bits=32), "64"),
        (_secagg(clip=1.5), "truncate"),
    ],
)
def test_distributed_noise_is_refused_where_it_would_not_be_what_is_charged(
    tmp_path, secure, problem
):
    site, trainer, policy = _site(tmp_path, SitePolicyConfig(site_epsilon=1e6))
    task = _site_level_task(1, placement="distributed")
    task = dataclasses.replace(task, settings=dataclasses.replace(task.settings, secure=secure))
    reply = site.handle(task)
    assert isinstance(reply, Refusal) and reply.kind == "policy" and problem in reply.reason
    assert trainer.fits == 0 and not policy.ledger.entries()


def test_a_noise_share_outside_the_quantizer_range_is_refused_not_truncated(tmp_path):
    site, _, _ = _site(tmp_path, SitePolicyConfig(site_epsilon=1e6))
    zeros = Parameters.from_dict({"w": np.zeros(10_000)})
    settings = SiteDP(1.0, 1.0, planned_sites=4, min_sites=4, placement="distributed")
    site.dp.clip_and_noise(zeros, settings, seed=1, bound=noised_share_bound(1.0, 1.0, 4))
    with pytest.raises(PolicyRefused, match="rather than truncate"):
        site.dp.clip_and_noise(zeros, settings, seed=1, bound=1.0)


def test_central_noise_on_the_sum_has_std_sigma_c_over_k():
    sigma, clip, k = 1.5, 2.0, 4
    aggregator = SiteLevelDP(
        noise_multiplier=sigma,
        clip_norm=clip,
        planned_sites=k,
        min_sites=k,
        distributed=False,
        rng=np.random.default_rng(7),
    )
    zeros = Parameters.from_dict({"w": np.zeros(200_000)})
    results = [SiteUpdate(f"s{i}", zeros, 10) for i in range(k)]
    mean = aggregator.mean_update(1, results).flatten()
    assert mean.std() == pytest.approx(sigma * clip / k, rel=0.01)
    assert abs(mean.mean()) < 0.01


def test_coordinator_reclips_an_oversized_update_under_central_noise():
    aggregator = SiteLevelDP(
        noise_multiplier=1e-9,
        clip_norm=1.0,
        planned_sites=1,
        min_sites=1,
        distributed=False,
        rng=np.random.default_rng(0),
    )
    big = Parameters.from_dict({"w": np.full(100, 10.0)})
    mean = aggregator.mean_update(1, [SiteUpdate("s", big, 5)])
    assert np.linalg.norm(mean.flatten()) == pytest.approx(1.0, rel=1e-6)
