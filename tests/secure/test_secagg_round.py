"""Secure aggregation (Bonawitz et al. 2017) wired into the federated round loop.

The coordinator drives the secagg phases over a channel; it must end with FedAvg's mean while
only ever holding key advertisements, sealed shares, masked vectors and their sum.
"""

import dataclasses

import numpy as np
import pytest

from fedpharma.config import PrivacyConfig, RunConfig, SecureConfig, SitePolicyConfig
from fedpharma.data.dataset import Dataset, SiteData
from fedpharma.errors import ConfigError, RoundFailed
from fedpharma.models.base import FitOutput
from fedpharma.params import Parameters
from fedpharma.protocol import (
    EvaluateResult,
    Refusal,
    SecureReply,
    SecureTask,
    TrainResult,
    TrainTask,
)
from fedpharma.protocol.codec import decode_message, encode_message
from fedpharma.secure import MaskedInput
from fedpharma.server.plan import strategy_for
from fedpharma.server.secagg import SecAggCollector
from fedpharma.site.policy import SitePolicy
from fedpharma.site.runtime import SiteRuntime
from fedpharma.strategy import FedAvg, FedOpt, LoopSettings
from fedpharma.transport.inprocess import InProcessChannel

W0 = Parameters.from_dict(
    {"layer.weight": np.linspace(-0.5, 0.5, 240).reshape(12, 20), "layer.bias": np.zeros(12)}
)
SITES = ("site-a", "site-b", "site-c", "site-d", "site-e")
SIZES = {"site-a": 30, "site-b": 45, "site-c": 12, "site-d": 80, "site-e": 23}
SECURE = SecureConfig(mode="secagg", max_examples=1000)


def _dataset(n: int) -> Dataset:
    rng = np.random.default_rng(n)
    return Dataset(
        features=rng.normal(size=(n, 4)).astype(np.float32),
        labels=rng.normal(size=(n, 1)).astype(np.float32),
        task="regression",
        task_names=("y",),
        groups=np.arange(n),
    )


def _delta(site: str, params: Parameters) -> list[np.ndarray]:
    rng = np.random.default_rng([7, SITES.index(site)])
    return [rng.uniform(-0.05, 0.05, size=a.shape) for a in params.arrays]


class FakeTrainer:
    """Moves the weights by a fixed, site-specific random step Δ_k."""

    def __init__(self, site: str) -> None:
        self.site = site

    def fit(self, params, data, *, epochs, seed, proximal_mu=0.0):
        moved = tuple(a + d for a, d in zip(params.arrays, _delta(self.site, params), strict=True))
        return FitOutput(Parameters(params.names, moved), len(data), 0.5, 0.0)

    def predict(self, params, data):
        return np.zeros((len(data), 1), dtype=np.float32)


class RecordingChannel(InProcessChannel):
    """An in-process channel that records every reply the coordinator receives, and loses the
    replies of the ``drop`` sites in the phase of the same name (they crash after sending)."""

    def __init__(self, sites, drop: dict[str, set[str]] | None = None) -> None:
        super().__init__(sites)
        self.drop = drop or {}
        self.replies: list[tuple[str, object]] = []

    def exchange(self, tasks, timeout=None):
        replies = super().exchange(tasks, timeout)
        for site, reply in replies.items():
            self.replies.append((site, reply))
        phase = next(
            (t.phase for t in tasks.values() if isinstance(t, SecureTask)),
            "advertise" if any(isinstance(t, TrainTask) for t in tasks.values()) else "",
        )
        for site in self.drop.get(phase, set()):
            if site in replies:
                replies.pop(site)  # the channel reports nothing: a Failure ("no reply")
        return replies


def _sites(policy=None, tmp_path=None):
    return {
        name: SiteRuntime(
            name,
            SiteData(_dataset(SIZES[name]), _dataset(5)),
            FakeTrainer(name),
            policy=(
                SitePolicy(policy, tmp_path / f"{name}.sqlite") if policy is not None else None
            ),
        )
        for name in SITES
    }


def _fedavg_mean(sites=SITES) -> np.ndarray:
    n = np.array([SIZES[s] for s in sites], dtype=np.float64)
    deltas = np.stack([np.concatenate([d.ravel() for d in _delta(s, W0)]) for s in sites])
    return (n[:, None] * deltas).sum(axis=0) / n.sum()


def _secure_fedavg(channel, min_sites=1) -> Parameters:
    strategy = FedAvg(LoopSettings(min_sites=min_sites), collector=SecAggCollector(SECURE))
    return strategy.run(channel, W0, rounds=1, run_id="run-s")


def test_secure_round_matches_plaintext_fedavg_within_quantization_error():
    secure = _secure_fedavg(RecordingChannel(_sites()))
    plain = FedAvg(LoopSettings()).run(RecordingChannel(_sites()), W0, rounds=1, run_id="run-p")
    np.testing.assert_allclose(secure.flatten(), plain.flatten(), atol=1e-6)
    np.testing.assert_allclose(secure.flatten(), W0.flatten() + _fedavg_mean(), atol=1e-6)


def test_secure_round_drives_fedopt_with_the_secure_mean():
    def fedadam(collector):
        strategy = FedOpt(LoopSettings(), variant="adam", eta=0.1, collector=collector)
        return strategy.run(RecordingChannel(_sites()), W0, rounds=1, run_id="run-o")

    np.testing.assert_allclose(
        fedadam(SecAggCollector(SECURE)).flatten(), fedadam(None).flatten(), atol=1e-7
    )


def test_coordinator_never_receives_an_unmasked_update():
    channel = RecordingChannel(_sites())
    _secure_fedavg(channel)
    codec = SecAggCollector(SECURE).codec(len(SITES))
    assert not any(isinstance(reply, TrainResult) for _, reply in channel.replies)
    assert all(isinstance(r, SecureReply | EvaluateResult) for _, r in channel.replies)
    masked = {
        site: MaskedInput.from_bytes(reply.payload).vector()
        for site, reply in channel.replies
        if isinstance(reply, SecureReply) and reply.phase == "masked_input"
    }
    assert sorted(masked) == list(SITES)
    for site, vector in masked.items():
        flat = np.concatenate([d.ravel() for d in _delta(site, W0)])
        contribution = codec.encode_weighted(flat, SIZES[site])
        assert vector.shape == contribution.shape
        assert np.mean(vector != contribution) >= 0.99
        # Nor does the update appear in the clear in any payload the site sent.
        raw = contribution[:-1].tobytes()[:64]
        payloads = [
            r.payload for s, r in channel.replies if s == site and isinstance(r, SecureReply)
        ]
        assert all(raw not in payload for payload in payloads)


@pytest.mark.parametrize("dropped", [{"site-b"}, {"site-b", "site-e"}])
def test_sites_that_drop_after_masking_stay_in_the_sum(dropped):
    result = _secure_fedavg(RecordingChannel(_sites(), drop={"unmask": dropped}))
    np.testing.assert_allclose(result.flatten(), W0.flatten() + _fedavg_mean(), atol=1e-6)


@pytest.mark.parametrize("dropped", [{"site-c"}, {"site-a", "site-d"}])
def test_sites_that_drop_before_masking_leave_the_survivors_sum(dropped):
    result = _secure_fedavg(RecordingChannel(_sites(), drop={"masked_input": dropped}))
    survivors = [s for s in SITES if s not in dropped]
    np.testing.assert_allclose(result.flatten(), W0.flatten() + _fedavg_mean(survivors), atol=1e-6)


@pytest.mark.parametrize(
    "phase", ["advertise", "share_keys", "masked_input", "unmask"], ids=lambda p: p
)
def test_below_threshold_the_round_fails(phase):
    channel = RecordingChannel(_sites(), drop={phase: {"site-a", "site-b", "site-c"}})
    with pytest.raises(RoundFailed, match=r"at least|threshold|t = 3"):
        _secure_fedavg(channel)


def test_too_few_contributors_for_min_sites_fails():
    channel = RecordingChannel(_sites(), drop={"masked_input": {"site-a", "site-b"}})
    with pytest.raises(RoundFailed, match="at least 4 needed"):
        _secure_fedavg(channel, min_sites=4)


def test_secure_messages_round_trip_the_codec():
    task = SecureTask("run", 3, "share_keys", b"\x00\x01payload")
    reply = SecureReply("run", 3, "site-a", "unmask", b"")
    assert decode_message(encode_message(task)) == task
    assert decode_message(encode_message(reply)) == reply


def test_site_requiring_secure_aggregation_refuses_plaintext_training(tmp_path):
    sites = _sites(SitePolicyConfig(require_secure=True), tmp_path)
    reply = sites["site-a"].handle(TrainTask("run", 1, W0, {"epochs": 1}))
    assert isinstance(reply, Refusal) and reply.kind == "policy"
    assert "secure aggregation" in reply.reason
    result = _secure_fedavg(RecordingChannel(sites))
    np.testing.assert_allclose(result.flatten(), W0.flatten() + _fedavg_mean(), atol=1e-6)


def test_secure_phase_without_an_open_round_is_refused():
    site = _sites()["site-a"]
    reply = site.handle(SecureTask("run", 1, "unmask", b""))
    assert isinstance(reply, Refusal)


def test_central_site_level_noise_is_refused_with_secure_aggregation():
    privacy = PrivacyConfig(site_level=True, site_noise_multiplier=1.0)
    config = dataclasses.replace(RunConfig(), privacy=privacy, secure=SECURE)
    with pytest.raises(ConfigError, match="distributed"):
        strategy_for(config, planned_sites=4, noise_rng=np.random.default_rng(0))
    distributed = dataclasses.replace(privacy, noise_placement="distributed")
    ok = strategy_for(
        dataclasses.replace(config, privacy=distributed),
        planned_sites=4,
        noise_rng=np.random.default_rng(0),
    )
    assert isinstance(ok.collector, SecAggCollector)


def test_secure_demo_simulation_matches_plaintext(tmp_path):
    from fedpharma.cli.main import DEMO_CONFIG
    from fedpharma.sim.engine import prepare_sites, simulate

    plain_config = dataclasses.replace(DEMO_CONFIG, rounds=2, baselines=False)
    secure_config = dataclasses.replace(plain_config, secure=SecureConfig(mode="secagg"))
    prepared = prepare_sites(plain_config)
    plain = simulate(plain_config, tmp_path / "plain", prepared=prepared)
    secure = simulate(secure_config, tmp_path / "secure", prepared=prepared)
    np.testing.assert_allclose(
        secure.parameters.flatten(), plain.parameters.flatten(), rtol=0, atol=1e-5
    )
    assert secure.summary["pooled"]["federated"] == pytest.approx(
        plain.summary["pooled"]["federated"], abs=1e-3
    )
