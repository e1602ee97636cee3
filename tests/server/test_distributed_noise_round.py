"""Distributed site-level DP under pairwise masks, end to end: the coordinator sizes the
quantizer's range for the noise shares, the sites check it, and the round's sum carries the
untruncated noise the sites charged."""

import dataclasses

import numpy as np
import pytest

from fedpharma.core.config import PrivacyConfig, RunConfig, SecureConfig, SitePolicyConfig
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.params import Parameters
from fedpharma.models.base import FitOutput
from fedpharma.privacy import noised_share_bound
from fedpharma.secure.identity import ephemeral_consortium
from fedpharma.server import plan
from fedpharma.server.plan import build_federation
from fedpharma.site import policy as site_policy
from fedpharma.site.dp import DPParticipation
from fedpharma.site.policy import SitePolicy
from fedpharma.site.runtime import SiteRuntime
from fedpharma.site.secure import SecureParticipation
from fedpharma.transport.inprocess import InProcessChannel

SITES = ("site-a", "site-b", "site-c", "site-d")
SIGMA, CLIP = 1.0, 0.5
W0 = Parameters.from_dict({"w": np.zeros(50_000)})


class StillTrainer:
    """Leaves the weights where they are: the round's mean is the sites' noise alone."""

    def fit(self, params, data, *, epochs, seed, proximal_mu=0.0):
        return FitOutput(params, len(data), 0.0, 0.0)

    def predict(self, params, data):
        return np.zeros((len(data), 1), dtype=np.float32)


def _data() -> Dataset:
    return Dataset(
        features=np.zeros((10, 1), dtype=np.float32),
        labels=np.zeros((10, 1), dtype=np.float32),
        task="regression",
        task_names=("y",),
        groups=np.arange(10),
    )


def _config(**secure) -> RunConfig:
    privacy = PrivacyConfig(
        site_level=True,
        site_noise_multiplier=SIGMA,
        clip_norm=CLIP,
        noise_placement="distributed",
    )
    config = dataclasses.replace(RunConfig(), privacy=privacy, rounds=1)
    return dataclasses.replace(config, secure=SecureConfig(mode="secagg", **secure))


def _round_mean(tmp_path) -> np.ndarray:
    """One round of four sites whose updates are zero; the mean holds only their noise."""
    config = _config(clip=CLIP)  # a range without headroom: the coordinator widens it
    federation = build_federation(
        config, planned_sites=len(SITES), noise_rng=np.random.default_rng(0)
    )
    consortium, identities = ephemeral_consortium(SITES)
    sites = {
        name: SiteRuntime(
            name,
            SiteData(_data(), _data()),
            StillTrainer(),
            policy=SitePolicy(SitePolicyConfig(site_epsilon=100.0), tmp_path / f"{name}.sqlite"),
            noise_source=lambda seed: np.random.default_rng(seed),
            secure=SecureParticipation(identities[name], consortium),
        )
        for name in SITES
    }
    final = federation.run(InProcessChannel(sites), W0, 1, run_id="dist")
    assert all(sites[s].policy.ledger.entries() for s in SITES)
    return final.flatten()


def test_the_sum_of_the_shares_carries_the_charged_noise_untruncated(tmp_path):
    federation = build_federation(_config(), planned_sites=4, noise_rng=np.random.default_rng(0))
    settings = federation.collector.task_settings(1, len(SITES))
    assert settings.clip == pytest.approx(noised_share_bound(SIGMA, CLIP, len(SITES)))
    mean = _round_mean(tmp_path)
    # Σ of K shares N(0, σ²C²/K), divided by K: std σC/K (to within 4 standard errors).
    assert mean.std() == pytest.approx(SIGMA * CLIP / len(SITES), rel=0.013)


def test_weakened_twin_without_headroom_truncates_the_noise(tmp_path, monkeypatch):
    monkeypatch.setattr(plan, "_with_noise_headroom", lambda secure, aggregator: secure)
    monkeypatch.setattr(site_policy, "noise_placement_problems", lambda settings: [])
    unguarded = DPParticipation.clip_and_noise  # and no refusal when a share leaves the range
    monkeypatch.setattr(
        DPParticipation,
        "clip_and_noise",
        lambda self, update, settings, seed, bound=None: unguarded(self, update, settings, seed),
    )
    mean = _round_mean(tmp_path)
    # Each share cut at ±C = ±2 of its stds: the sum carries about 4 % less noise than charged.
    assert mean.std() < 0.98 * SIGMA * CLIP / len(SITES)
