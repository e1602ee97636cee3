"""Under [secure] the tabular statistics are a secure sum: the fit equals the plain one (and the
pooled oracle), and a hostile coordinator's received messages hold no single site's sums."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from fedpharma.core.config import RunConfig, SecureConfig, SitePolicyConfig
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    FeatureStatisticsResult,
    FeatureStatisticsTask,
    LabelStatisticsResult,
    Refusal,
    Reply,
    SecureReply,
    Task,
)
from fedpharma.core.protocol.messages import Failure
from fedpharma.data.bounded_statistics import bounded_label_sums, bounded_sums, noise_std
from fedpharma.data.federated_preprocessing import FittedPreprocessing, column_sums
from fedpharma.data.tabular import Column, TabularSchema
from fedpharma.secure.ckks import SecretContext, create_secret_context
from fedpharma.secure.identity import ephemeral_consortium
from fedpharma.secure.quantize import FixedPoint
from fedpharma.server.feature_statistics import (
    fit_preprocessing,
    secure_calibration,
    secure_statistics,
)
from fedpharma.server.label_statistics import calibrated_start
from fedpharma.server.secure_statistics import SecureStatistics
from fedpharma.site.policy import SitePolicy
from fedpharma.site.runtime import SiteRuntime
from fedpharma.site.secure import SecureParticipation
from fedpharma.transport.inprocess import InProcessChannel

SCHEMA = TabularSchema(
    (
        Column("dose", "float", minimum=0.0, maximum=100.0, missing=("0",), impute="median"),
        Column("weight", "float", minimum=30.0, maximum=200.0),
        Column("smoker", "bool", impute="most_frequent"),
        Column("stage", "category", ("I", "II", "III"), impute="most_frequent"),
        Column("progression", "float", minimum=0.0, maximum=400.0),
    ),
    label_columns=("progression",),
)


def _site(seed: int, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dose = np.clip(rng.normal(40 + shift, 10, n), 1, 99)
    dose[rng.random(n) < 0.2] = np.nan
    weight = np.clip(rng.normal(70 + 3 * shift, 12, n), 31, 199)
    smoker = (rng.random(n) < 0.3).astype(float)
    stage = np.eye(3)[rng.choice(3, n, p=[0.2, 0.5, 0.3])]
    stage[rng.random(n) < 0.15] = np.nan
    features = np.column_stack([dose, weight, smoker, stage]).astype(np.float32)
    labels = np.clip(150 + 4 * shift + rng.normal(0, 60, n), 1, 399)[:, None].astype(np.float32)
    return features, labels


SITES = {
    name: _site(seed, n, shift)
    for name, seed, n, shift in (("a", 1, 300, 0.0), ("b", 2, 40, 5.0), ("c", 3, 120, -8.0))
}


def _runtimes(
    ckks_key: SecretContext | None = None, policies: Mapping[str, SitePolicy] | None = None
) -> dict[str, SiteRuntime]:
    consortium, identities = ephemeral_consortium(sorted(SITES))
    runtimes = {}
    for name, (features, labels) in SITES.items():
        data = Dataset(
            features, labels, "regression", ("progression",), np.zeros(len(features), np.int64)
        )
        secure = SecureParticipation(identities[name], consortium, ckks_key=ckks_key)
        runtimes[name] = SiteRuntime(
            name,
            SiteData(data, data),
            trainer=None,  # type: ignore[arg-type]
            schema=SCHEMA,
            secure=secure,
            policy=None if policies is None else policies[name],
        )
    return runtimes


class Recording:
    """The coordinator's channel, keeping every reply it receives (what a hostile coordinator
    holds)."""

    def __init__(self, channel: InProcessChannel) -> None:
        self.channel = channel
        self.received: list[Reply] = []

    def available_sites(self) -> tuple[str, ...]:
        return self.channel.available_sites()

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        replies = self.channel.exchange(tasks, timeout)
        self.received += [r for r in replies.values() if not isinstance(r, Failure)]
        return replies


def _holds_sums_of(reply: Reply, name: str) -> bool:
    """Whether ``reply`` shows site ``name``'s own sums: as numbers in a statistics reply, or as
    bytes (float64, or the fixed-point encoding a secure sum would mask) in any payload."""
    features, labels = SITES[name]
    plain = column_sums(features, SCHEMA)
    if isinstance(reply, FeatureStatisticsResult):
        return np.allclose(reply.total, plain.total) and np.allclose(reply.count, plain.count)
    if isinstance(reply, LabelStatisticsResult):
        return np.allclose(reply.total, labels.astype(np.float64).sum(axis=0))
    if isinstance(reply, SecureReply):
        vector = np.concatenate(
            [bounded_sums(SCHEMA, features), bounded_label_sums(SCHEMA, labels)]
        )
        codec = FixedPoint(bits=64, clip=1e6, max_sites=3, max_examples=1)
        probes = [
            vector.astype("<f8").tobytes()[:64],
            np.asarray(plain.total, "<f8").tobytes()[:32],
            codec.encode_weighted(vector, 1)[:8].tobytes(),
            vector.astype("<f4").tobytes()[:32],
        ]
        return any(probe in reply.payload for probe in probes)
    return False


def _pooled() -> tuple[FittedPreprocessing, StandardScaler]:
    features = np.concatenate([f for f, _ in SITES.values()])
    labels = np.concatenate([y for _, y in SITES.values()]).astype(np.float64)
    return FittedPreprocessing.fit(SCHEMA, column_sums(features, SCHEMA)), StandardScaler().fit(
        labels
    )


@pytest.mark.parametrize("mode", ["secagg", "ckks"])
def test_a_secure_sum_gives_the_pooled_fit_and_the_coordinator_no_site_sums(mode: str) -> None:
    key = create_secret_context() if mode == "ckks" else None
    channel = Recording(InProcessChannel(_runtimes(key)))
    secure = SecureStatistics(
        SecureConfig(mode=mode), 2, None if key is None else key.public_context()
    )
    fitted, how = fit_preprocessing(channel, "run", SCHEMA, standardize_targets=True, secure=secure)
    assert f"secure sum ({mode}" in how and "3 sites' summed statistics" in how, how
    assert "securely summed label statistics" in how
    pooled, labels = _pooled()
    tolerance = 1e-9 if mode == "secagg" else 1e-5
    np.testing.assert_allclose(fitted.center, pooled.center, rtol=tolerance)
    np.testing.assert_allclose(fitted.scale, pooled.scale, rtol=tolerance)
    np.testing.assert_allclose(fitted.fill, pooled.fill, rtol=tolerance)
    assert fitted.indicators == pooled.indicators
    np.testing.assert_allclose(fitted.label_center, labels.mean_, rtol=tolerance)
    np.testing.assert_allclose(fitted.label_scale, labels.scale_, rtol=tolerance)

    # hostile coordinator: nothing it received holds a single site's sums
    assert channel.received and all(isinstance(r, SecureReply) for r in channel.received)
    for reply in channel.received:
        assert not any(_holds_sums_of(reply, name) for name in SITES)


def test_the_weakened_twin_without_secure_aggregation_shows_each_sites_sums() -> None:
    channel = Recording(InProcessChannel(_runtimes()))
    fitted, _ = fit_preprocessing(channel, "run", SCHEMA, standardize_targets=True)
    pooled, _ = _pooled()
    np.testing.assert_allclose(fitted.center, pooled.center, rtol=1e-9)
    for name in SITES:  # the detector finds every site's own sums in the plain replies
        assert any(_holds_sums_of(reply, name) for reply in channel.received)
    # …and, in the secure replies' encoding, would find an unmasked input
    features, labels = SITES[name]
    vector = np.concatenate([bounded_sums(SCHEMA, features), bounded_label_sums(SCHEMA, labels)])
    unmasked = FixedPoint(bits=64, clip=1e6, max_sites=3, max_examples=1).encode_weighted(vector, 1)
    leaked = SecureReply("run", 0, name, "masked_input", b"x" + unmasked.tobytes())
    assert _holds_sums_of(leaked, name)


def test_an_unbounded_column_is_refused_and_the_fit_uses_the_declared_ranges() -> None:
    open_weight = TabularSchema(
        (SCHEMA.columns[0], Column("weight", "float"), *SCHEMA.columns[2:]),
        label_columns=("progression",),
    )
    runtimes = _runtimes()
    for runtime in runtimes.values():
        runtime.schema = open_weight
    fitted, how = fit_preprocessing(
        InProcessChannel(runtimes),
        "run",
        open_weight,
        secure=SecureStatistics(SecureConfig(mode="secagg"), 2),
    )
    assert fitted.source == "declared ranges"
    assert "declare min and max in the schema for weight" in how


def test_dp_sums_go_through_the_secure_sum_noised_and_charged(tmp_path) -> None:
    strict = SitePolicyConfig(require_dp=True, record_epsilon=10.0)
    runtimes = _runtimes(policies={n: SitePolicy(strict, tmp_path / f"{n}.sqlite") for n in SITES})
    channel = Recording(InProcessChannel(runtimes))
    fitted, how = fit_preprocessing(
        channel,
        "run",
        SCHEMA,
        noise_multiplier=3.0,
        standardize_targets=True,
        secure=SecureStatistics(SecureConfig(mode="secagg"), 2),
    )
    assert "under DP (σ = 3, charged)" in how and "secure sum (secagg" in how, how
    assert fitted.source == "federated DP sums"
    assert "declared range" in how  # no label sums under DP
    pooled, _ = _pooled()
    noise = noise_std(SCHEMA, 3.0)
    # the weight's mean is off by the stated noise only: 5 standard deviations of the noise
    # the three sites' sum and count carry, over the 460 rows (mean ≈ 70)
    spread = 3**0.5 * (noise.total[1] + 70 * noise.count[1]) / 460
    assert fitted.center[1] != pooled.center[1]
    assert abs(fitted.center[1] - pooled.center[1]) < 5 * spread
    for name, runtime in runtimes.items():
        assert runtime.policy is not None
        events = [type(e.event).__name__ for e in runtime.policy.ledger.entries("record")]
        assert events == ["GaussianEvent"], name
    assert all(isinstance(r, SecureReply) for r in channel.received)


def test_a_site_requiring_secure_aggregation_refuses_plain_feature_sums(tmp_path) -> None:
    policy = SitePolicy(SitePolicyConfig(require_secure=True), tmp_path / "ledger.sqlite")
    runtime = _runtimes(policies=dict.fromkeys(SITES, policy))["a"]
    reply = runtime.handle(FeatureStatisticsTask("run", 0))
    assert isinstance(reply, Refusal) and "requires secure aggregation" in reply.reason


OUTCOME = TabularSchema((*SCHEMA.columns[:4], Column("died", "int")), label_columns=("died",))
HEAD = Parameters.from_dict({"head.weight": np.ones((1, 6)), "head.bias": np.zeros(1)})


def _outcome_runtimes() -> dict[str, SiteRuntime]:
    consortium, identities = ephemeral_consortium(sorted(SITES))
    runtimes = {}
    for k, (name, (features, _)) in enumerate(SITES.items()):
        died = (np.arange(len(features)) % (3 + k) == 0).astype(np.float32)[:, None]
        data = Dataset(features, died, "classification", ("died",), np.zeros(len(died), np.int64))
        secure = SecureParticipation(identities[name], consortium)
        runtimes[name] = SiteRuntime(
            name,
            SiteData(data, data),
            trainer=None,
            schema=OUTCOME,
            secure=secure,  # type: ignore[arg-type]
        )
    return runtimes


@pytest.mark.parametrize("secure", [True, False])
def test_a_classifications_label_statistics_join_the_secure_sum(secure: bool) -> None:
    runtimes = _outcome_runtimes()
    channel = Recording(InProcessChannel(runtimes))
    config = RunConfig(secure=SecureConfig(mode="secagg" if secure else "none"))
    fitted, _ = fit_preprocessing(
        channel,
        "run",
        OUTCOME,
        secure=secure_statistics(config, None),
        calibration_labels=secure_calibration(config, "classification"),
    )
    start, how = calibrated_start(
        config, channel, "run", HEAD, "classification", 1, targets=fitted.target_scaling
    )
    died = np.concatenate([r.data.train.dense_labels() for r in runtimes.values()])
    rate = float(died.mean())
    np.testing.assert_allclose(start.to_dict()["head.bias"], [np.log(rate / (1 - rate))], rtol=1e-6)
    plain_labels = [r for r in channel.received if isinstance(r, LabelStatisticsResult)]
    if secure:  # nothing the coordinator received holds one site's label (or feature) sums
        assert "securely summed" in how and not plain_labels
        assert all(isinstance(r, SecureReply) for r in channel.received)
        for reply in channel.received:
            for runtime in runtimes.values():
                own = runtime.data.train.dense_labels().astype("<f8").sum(axis=0).tobytes()
                assert own not in reply.payload  # type: ignore[union-attr]
    else:  # the weakened twin: each site's own label sums arrive in the clear
        sent = {r.site: r.total for r in plain_labels}
        for name, runtime in runtimes.items():
            assert sent[name] == pytest.approx(runtime.data.train.dense_labels().sum(axis=0))
