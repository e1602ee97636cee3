"""Secure aggregation wired into the federated round loop: pairwise masks and CKKS.

The coordinator drives the secure phases over a channel; it must end with FedAvg's mean while
only ever holding key advertisements, sealed shares, masked vectors, ciphertexts and their sum.
"""

import dataclasses

import numpy as np
import pytest
import tenseal

from fedpharma.core.config import PrivacyConfig, RunConfig, SecureConfig, SitePolicyConfig
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.errors import ConfigError, RoundFailed
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    EvaluateResult,
    Refusal,
    SecureReply,
    SecureTask,
    TrainResult,
    TrainSettings,
    TrainTask,
)
from fedpharma.core.protocol.codec import decode_message, encode_message
from fedpharma.core.protocol.messages import SECURE_FIRST_PHASE
from fedpharma.models.base import FitOutput
from fedpharma.secure import DecryptedMean, MaskedInput, create_secret_context
from fedpharma.secure.contributors import SignedContribution
from fedpharma.secure.identity import ephemeral_consortium
from fedpharma.server.federation import Federation, FederationSettings
from fedpharma.server.plan import build_federation
from fedpharma.server.secure import CKKSCollector, SecAggCollector
from fedpharma.site.policy import SitePolicy
from fedpharma.site.runtime import SiteRuntime
from fedpharma.site.secure import SecureParticipation
from fedpharma.strategy import FedAvg, FedOpt
from fedpharma.transport.inprocess import InProcessChannel

W0 = Parameters.from_dict(
    {"layer.weight": np.linspace(-0.5, 0.5, 240).reshape(12, 20), "layer.bias": np.zeros(12)}
)
SITES = ("site-a", "site-b", "site-c", "site-d", "site-e", "site-f", "site-g")
SIZES = {
    "site-a": 30,
    "site-b": 45,
    "site-c": 12,
    "site-d": 80,
    "site-e": 23,
    "site-f": 51,
    "site-g": 17,
}
CONSORTIUM, IDENTITIES = ephemeral_consortium(SITES)
SECURE = SecureConfig(mode="secagg", max_examples=1000)
CKKS = SecureConfig(mode="ckks")
KEY = create_secret_context()  # the consortium's CKKS key, held by every site
MODES = ("secagg", "ckks")


def _collector(mode: str, config: SecureConfig | None = None):
    if mode == "ckks":
        return CKKSCollector(config or CKKS, KEY.public_context())
    return SecAggCollector(config or SECURE)


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
        steps = zip(params.arrays, _delta(self.site, params), strict=True)
        moved = tuple((a + d).astype(a.dtype) for a, d in steps)  # in the model's dtype
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
            (
                t.phase if isinstance(t, SecureTask) else SECURE_FIRST_PHASE[t.settings.secure.kind]
                for t in tasks.values()
                if isinstance(t, SecureTask)
                or (isinstance(t, TrainTask) and t.settings.secure is not None)
            ),
            "",
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
            secure=SecureParticipation(IDENTITIES[name], CONSORTIUM, ckks_key=KEY),
        )
        for name in SITES
    }


def _sent(site: str) -> np.ndarray:
    """The update ``site`` sends: its step taken in the model's dtype, flattened."""
    steps = zip(W0.arrays, _delta(site, W0), strict=True)
    return np.concatenate([((a + d).astype(a.dtype) - a).ravel() for a, d in steps])


def _fedavg_mean(sites=SITES) -> np.ndarray:
    n = np.array([SIZES[s] for s in sites], dtype=np.float64)
    deltas = np.stack([_sent(s) for s in sites])
    return (n[:, None] * deltas).sum(axis=0) / n.sum()


def _secure_fedavg(channel, min_sites=1, mode="secagg", config=None) -> Parameters:
    settings = FederationSettings(min_sites=min_sites)
    federation = Federation(FedAvg(), settings, collector=_collector(mode, config))
    return federation.run(channel, W0, rounds=1, run_id="run-s")


@pytest.mark.parametrize("mode", MODES)
def test_secure_round_matches_plaintext_fedavg_within_quantization_error(mode):
    secure = _secure_fedavg(RecordingChannel(_sites()), mode=mode)
    plain = Federation(FedAvg(), FederationSettings()).run(
        RecordingChannel(_sites()), W0, rounds=1, run_id="run-p"
    )
    np.testing.assert_allclose(secure.flatten(), plain.flatten(), atol=1e-6)
    np.testing.assert_allclose(secure.flatten(), W0.flatten() + _fedavg_mean(), atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_secure_round_drives_fedopt_with_the_secure_mean(mode):
    def fedadam(collector):
        strategy = FedOpt(variant="adam", eta=0.1)
        federation = Federation(strategy, FederationSettings(), collector=collector)
        return federation.run(RecordingChannel(_sites()), W0, rounds=1, run_id="run-o")

    np.testing.assert_allclose(
        fedadam(_collector(mode)).flatten(), fedadam(None).flatten(), atol=1e-7
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
        # Read as a contribution, a masked input is noise spread over the whole ring, not Δ_k.
        read = codec.dequantize(vector[:-1]) / (SIZES[site] / codec.max_examples)
        # uncorrelated: |r| of independent noise has sd 1/√n, so 5/√n fails ~1e-6 of honest runs
        assert abs(np.corrcoef(read, flat)[0, 1]) < 5 / np.sqrt(flat.size)
        assert np.mean(np.abs(read - flat)) > 1.0


def test_ckks_coordinator_holds_only_ciphertexts_and_one_decrypted_sum():
    channel = RecordingChannel(_sites())
    _secure_fedavg(channel, mode="ckks")
    assert not any(isinstance(reply, TrainResult) for _, reply in channel.replies)
    secure = [(s, r) for s, r in channel.replies if isinstance(r, SecureReply)]
    uploads = {s: r.payload for s, r in secure if r.phase == "encrypted_update"}
    decrypted = [r.payload for _, r in secure if r.phase == "decrypt"]
    assert sorted(uploads) == list(SITES) and len(decrypted) == 1
    assert DecryptedMean.from_bytes(decrypted[0]).contributors == len(SITES)
    for site, payload in uploads.items():
        update = SignedContribution.from_bytes(payload).encrypted()
        flat = _sent(site)
        # a key holder reads n_k·Δ_k, n_k and 1 off it; the coordinator's context cannot
        values = KEY.decrypt(update)
        np.testing.assert_allclose(values[:-2], flat * SIZES[site], atol=1e-6)
        coordinator = KEY.public_context()._context
        with pytest.raises(ValueError, match=r"secret.key"):
            tenseal.ckks_vector_from(coordinator, bytes(update.chunks[0])).decrypt()


def test_ckks_site_decrypts_only_a_contributor_set_it_signed():
    site = _sites()["site-a"]
    config = CKKSCollector(CKKS, KEY.public_context()).task_settings(1, 5)
    reply = site.handle(TrainTask("run", 1, W0, TrainSettings(secure=config)))
    assert isinstance(reply, SecureReply) and reply.phase == "encrypted_update"
    own = SignedContribution.from_bytes(reply.payload).encrypted()
    single = KEY.public_context().aggregate([own])
    refused = site.handle(SecureTask("run", 1, "decrypt", single.to_bytes()))
    assert isinstance(refused, Refusal) and "only the contributor set it signed" in refused.reason
    other_round = site.handle(SecureTask("run", 2, "decrypt", single.to_bytes()))
    assert (
        isinstance(other_round, Refusal) and "no secure-aggregation round 2" in other_round.reason
    )


def test_ckks_task_under_another_key_or_without_a_key_is_refused_before_training():
    sites = _sites()
    foreign = CKKSCollector(CKKS, create_secret_context().public_context()).task_settings(1, 5)
    reply = sites["site-a"].handle(TrainTask("run", 1, W0, TrainSettings(secure=foreign)))
    assert isinstance(reply, Refusal) and "provision every party from the same key" in reply.reason
    keyless = SiteRuntime(
        "site-a",
        sites["site-a"].data,
        FakeTrainer("site-a"),
        secure=SecureParticipation(IDENTITIES["site-a"], CONSORTIUM),
    )
    settings = CKKSCollector(CKKS, KEY.public_context()).task_settings(1, 5)
    reply = keyless.handle(TrainTask("run", 1, W0, TrainSettings(secure=settings)))
    assert isinstance(reply, Refusal) and "holds no CKKS key" in reply.reason


class TamperingChannel(RecordingChannel):
    """Corrupts the encrypted update of one site (a byte flipped or the payload truncated)."""

    def __init__(self, sites, victim: str, how: str) -> None:
        super().__init__(sites)
        self.victim, self.how = victim, how

    def exchange(self, tasks, timeout=None):
        replies = super().exchange(tasks, timeout)
        reply = replies.get(self.victim)
        if isinstance(reply, SecureReply) and reply.phase == "encrypted_update":
            data = bytearray(reply.payload)
            data[len(data) // 2] ^= 0x10
            altered = bytes(data) if self.how == "flip" else reply.payload[:1000]
            replies[self.victim] = dataclasses.replace(reply, payload=altered)
        return replies


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_ckks_tampered_upload_drops_that_site_and_the_round_goes_on(how):
    channel = TamperingChannel(_sites(), "site-c", how)
    result = _secure_fedavg(channel, mode="ckks")
    survivors = [s for s in SITES if s != "site-c"]
    np.testing.assert_allclose(result.flatten(), W0.flatten() + _fedavg_mean(survivors), atol=1e-6)


@pytest.mark.parametrize("dropped", [{"site-b"}, {"site-b", "site-e"}])
def test_ckks_sites_that_drop_after_uploading_leave_the_survivors_sum(dropped):
    channel = RecordingChannel(_sites(), drop={"encrypted_update": dropped})
    result = _secure_fedavg(channel, mode="ckks")
    survivors = [s for s in SITES if s not in dropped]
    np.testing.assert_allclose(result.flatten(), W0.flatten() + _fedavg_mean(survivors), atol=1e-6)


def test_ckks_a_lost_decryptor_is_replaced_by_the_next_contributor():
    channel = RecordingChannel(_sites(), drop={"decrypt": {"site-a"}})
    result = _secure_fedavg(channel, mode="ckks")
    np.testing.assert_allclose(result.flatten(), W0.flatten() + _fedavg_mean(), atol=1e-6)


def test_ckks_below_threshold_the_round_fails():
    channel = RecordingChannel(_sites(), drop={"encrypted_update": set(SITES[:5])})
    with pytest.raises(RoundFailed, match=r"2 encrypted update.*at least 3 needed"):
        _secure_fedavg(channel, mode="ckks", config=SecureConfig(mode="ckks", threshold=3))
    everyone_gone = RecordingChannel(_sites(), drop={"decrypt": set(SITES)})
    with pytest.raises(RoundFailed, match="no contributing site decrypted the sum"):
        _secure_fedavg(everyone_gone, mode="ckks")


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
    "phase", ["advertise", "share_keys", "masked_input", "consistency", "unmask"], ids=lambda p: p
)
def test_below_threshold_the_round_fails(phase):
    channel = RecordingChannel(_sites(), drop={phase: {"site-a", "site-b", "site-c"}})
    with pytest.raises(RoundFailed, match=r"at least|threshold|t = 5"):
        _secure_fedavg(channel)


def test_too_few_contributors_for_min_sites_fails_before_anything_is_unmasked():
    channel = RecordingChannel(_sites(), drop={"masked_input": {"site-a", "site-b"}})
    collector = SecAggCollector(SECURE, min_sites=6)
    federation = Federation(FedAvg(), FederationSettings(min_sites=6), collector=collector)
    with pytest.raises(RoundFailed, match=r"only 5 site\(s\) sent masked inputs.*t = 6"):
        federation.run(channel, W0, rounds=1, run_id="run-s")
    phases = {r.phase for _, r in channel.replies if isinstance(r, SecureReply)}
    assert "consistency" not in phases and "unmask" not in phases


def test_secure_messages_round_trip_the_codec():
    task = SecureTask("run", 3, "share_keys", b"\x00\x01payload")
    reply = SecureReply("run", 3, "site-a", "unmask", b"")
    assert decode_message(encode_message(task)) == task
    assert decode_message(encode_message(reply)) == reply


@pytest.mark.parametrize("mode", MODES)
def test_site_requiring_secure_aggregation_refuses_plaintext_training(tmp_path, mode):
    sites = _sites(SitePolicyConfig(require_secure=True), tmp_path)
    reply = sites["site-a"].handle(TrainTask("run", 1, W0))
    assert isinstance(reply, Refusal) and reply.kind == "policy"
    assert "secure aggregation" in reply.reason
    result = _secure_fedavg(RecordingChannel(sites), mode=mode)
    np.testing.assert_allclose(result.flatten(), W0.flatten() + _fedavg_mean(), atol=1e-6)


def test_secure_phase_without_an_open_round_is_refused():
    site = _sites()["site-a"]
    reply = site.handle(SecureTask("run", 1, "unmask", b""))
    assert isinstance(reply, Refusal)


def test_central_site_level_noise_is_refused_with_secure_aggregation():
    privacy = PrivacyConfig(site_level=True, site_noise_multiplier=1.0)
    config = dataclasses.replace(RunConfig(), privacy=privacy, secure=SECURE)
    with pytest.raises(ConfigError, match="distributed"):
        build_federation(config, planned_sites=4, noise_rng=np.random.default_rng(0))
    distributed = dataclasses.replace(privacy, noise_placement="distributed")
    ok = build_federation(
        dataclasses.replace(config, privacy=distributed),
        planned_sites=4,
        noise_rng=np.random.default_rng(0),
    )
    assert isinstance(ok.collector, SecAggCollector)
    ckks = dataclasses.replace(config, privacy=distributed, secure=CKKS)
    with pytest.raises(ConfigError, match="public CKKS context"):
        build_federation(ckks, planned_sites=4, noise_rng=np.random.default_rng(0))
    with_key = build_federation(
        ckks,
        planned_sites=4,
        noise_rng=np.random.default_rng(0),
        ckks_context=KEY.public_context(),
    )
    assert isinstance(with_key.collector, CKKSCollector)
    assert with_key.collector.dp_planned_sites == 4


@pytest.mark.parametrize("mode", MODES)
def test_secure_demo_simulation_matches_plaintext(tmp_path, mode):
    from fedpharma.cli.main import DEMO_CONFIG
    from fedpharma.sim.engine import prepare_sites, simulate

    plain_config = dataclasses.replace(DEMO_CONFIG, rounds=2, baselines=False)
    secure_config = dataclasses.replace(plain_config, secure=SecureConfig(mode=mode))
    prepared = prepare_sites(plain_config)
    plain = simulate(plain_config, tmp_path / "plain", prepared=prepared)
    secure = simulate(secure_config, tmp_path / "secure", prepared=prepared)
    np.testing.assert_allclose(
        secure.parameters.flatten(), plain.parameters.flatten(), rtol=0, atol=1e-5
    )
    assert secure.summary.pooled.federated == pytest.approx(
        plain.summary.pooled.federated, abs=1e-3
    )


@pytest.mark.parametrize("mode", MODES)
def test_secure_aggregation_needs_three_sites(mode):
    from fedpharma.core.config import cross_check

    base = RunConfig()
    two = dataclasses.replace(
        base,
        secure=SecureConfig(mode=mode),
        partition=dataclasses.replace(base.partition, n_sites=2),
    )
    assert any("at least 3 sites" in p for p in cross_check(two))
    three = dataclasses.replace(two, partition=dataclasses.replace(base.partition, n_sites=3))
    assert not any("at least 3 sites" in p for p in cross_check(three))
    collector = _collector(mode)
    if mode == "ckks":
        assert collector.threshold(2) == 3  # the fewest updates in a decrypted sum
    else:
        with pytest.raises(RoundFailed, match="at least 3"):
            collector.collect(RecordingChannel({}), {}, W0, n_sites=2, rnd=1, run_id="r")
