"""Regression targets standardized by the consortium's pooled label mean and spread, fitted from
each site's label count, sum and sum of squares alone, and predictions mapped back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from fedpharma.core.config import SitePolicyConfig
from fedpharma.core.dataset import Dataset, SiteData, TargetScaling
from fedpharma.core.errors import DataError
from fedpharma.core.protocol.codec import EncodedMessage, decode_message
from fedpharma.data.federated_preprocessing import FittedPreprocessing, column_sums
from fedpharma.data.tabular import Column, TabularSchema
from fedpharma.server.feature_statistics import fit_preprocessing
from fedpharma.site.policy import SitePolicy
from fedpharma.site.runtime import SiteRuntime
from fedpharma.transport.inprocess import InProcessChannel

SCHEMA = TabularSchema(
    (
        Column("bmi", "float", minimum=10.0, maximum=60.0, impute="mean"),
        Column("progression", "float", minimum=0.0, maximum=400.0),
    ),
    label_columns=("progression",),
)


def _site(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    bmi = rng.normal(27 + shift, 4, n)
    bmi[rng.random(n) < 0.1] = np.nan
    progression = 150 + 10 * shift + 9 * np.nan_to_num(bmi - 27) + rng.normal(0, 50, n)
    return bmi[:, None].astype(np.float32), progression[:, None].astype(np.float32)


SITES = {
    name: _site(np.random.default_rng(seed), n, shift)
    for name, seed, n, shift in (("a", 1, 250, 0.0), ("b", 2, 12, 6.0), ("c", 3, 90, -3.0))
}


def _runtime(name: str, policy: SitePolicy | None = None) -> SiteRuntime:
    features, labels = SITES[name]
    data = Dataset(
        features=features,
        labels=labels,
        task="regression",
        task_names=("progression",),
        groups=np.zeros(len(features), dtype=np.int64),
    )
    return SiteRuntime(name, SiteData(data, data), trainer=None, policy=policy)  # type: ignore[arg-type]


def _pooled_labels() -> np.ndarray:
    return np.concatenate([labels for _, labels in SITES.values()]).astype(np.float64)


def test_the_target_scaling_equals_the_pooled_label_scaler() -> None:
    channel = InProcessChannel({name: _runtime(name) for name in SITES})
    fitted, how = fit_preprocessing(channel, "run", SCHEMA, standardize_targets=True)
    assert "targets standardized by 3 sites' summed label statistics" in how
    oracle = StandardScaler().fit(_pooled_labels())
    np.testing.assert_allclose(fitted.label_center, oracle.mean_, rtol=1e-9)
    np.testing.assert_allclose(fitted.label_scale, oracle.scale_, rtol=1e-9)
    targets = fitted.target_scaling
    assert targets is not None
    labels = _pooled_labels().astype(np.float32)
    np.testing.assert_allclose(
        targets.standardize(labels), oracle.transform(labels), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(targets.restore(targets.standardize(labels)), labels, rtol=1e-5)


def test_the_target_scaling_is_part_of_the_fit_and_its_digest() -> None:
    channel = InProcessChannel({name: _runtime(name) for name in SITES})
    scaled, _ = fit_preprocessing(channel, "run", SCHEMA, standardize_targets=True)
    plain, _ = fit_preprocessing(channel, "run", SCHEMA)
    assert plain.target_scaling is None and plain.digest() != scaled.digest()
    # a fit without targets is written as before (version 2): earlier digests still hold
    assert json.loads(plain.to_json())["version"] == 2
    assert "label_center" not in json.loads(plain.to_json())
    received = FittedPreprocessing.from_json(scaled.to_json(), SCHEMA)
    assert received == scaled and received.digest() == scaled.digest()
    # a site checks what it receives: a non-positive scale is refused
    broken = json.loads(scaled.to_json())
    broken["label_scale"] = [0.0]
    with pytest.raises(DataError, match="target scaling"):
        FittedPreprocessing.from_json(json.dumps(broken), SCHEMA)


class _Recording:
    """A site runtime whose received task types are recorded (what the coordinator asked)."""

    def __init__(self, runtime: SiteRuntime, asked: list[str]) -> None:
        self.runtime, self.asked = runtime, asked

    def handle_encoded(self, data: bytes | memoryview) -> EncodedMessage:
        self.asked.append(type(decode_message(data)).__name__)
        return self.runtime.handle_encoded(data)


def test_under_dp_no_label_sums_are_asked_for_and_the_declared_range_scales(tmp_path) -> None:
    asked: list[str] = []
    runtimes = {name: _Recording(_runtime(name), asked) for name in SITES}
    fitted, how = fit_preprocessing(
        InProcessChannel(runtimes), "run", SCHEMA, noise_multiplier=3.0, standardize_targets=True
    )
    assert "LabelStatisticsTask" not in asked  # plain label sums would be an unaccounted release
    assert "scaled by the label's declared range" in how
    assert fitted.label_center == (200.0,) and fitted.label_scale == (200.0,)  # [0, 400]
    asked.clear()  # the plain twin asks every site
    fit_preprocessing(InProcessChannel(runtimes), "run", SCHEMA, standardize_targets=True)
    assert asked.count("LabelStatisticsTask") == 3


def test_with_a_site_refusing_the_targets_are_scaled_by_the_declared_range(tmp_path) -> None:
    strict = SitePolicy(SitePolicyConfig(require_dp=True), tmp_path / "ledger.sqlite")
    runtimes = {name: _runtime(name) for name in SITES}
    runtimes["b"] = _runtime("b", policy=strict)
    fitted, how = fit_preprocessing(
        InProcessChannel(runtimes), "run", SCHEMA, standardize_targets=True
    )
    assert "scaled by the label's declared range" in how
    assert fitted.label_center == (200.0,) and fitted.label_scale == (200.0,)
    # without a declared range for the label, the targets are left as they are
    open_label = TabularSchema(
        (SCHEMA.columns[0], Column("progression", "float")), label_columns=("progression",)
    )
    fitted, how = fit_preprocessing(
        InProcessChannel(runtimes), "run", open_label, standardize_targets=True
    )
    assert fitted.target_scaling is None and "not standardized" in how


def test_a_public_prior_wins_over_the_sites_statistics() -> None:
    channel = InProcessChannel({name: _runtime(name) for name in SITES})
    prior = TargetScaling((152.0,), (77.0,))
    fitted, how = fit_preprocessing(
        channel, "run", SCHEMA, standardize_targets=True, label_prior=prior
    )
    assert fitted.target_scaling == prior and "public label prior" in how


def test_the_fit_of_the_features_is_unchanged_by_the_targets() -> None:
    channel = InProcessChannel({name: _runtime(name) for name in SITES})
    scaled, _ = fit_preprocessing(channel, "run", SCHEMA, standardize_targets=True)
    pooled = np.concatenate([f for f, _ in SITES.values()])
    alone = FittedPreprocessing.fit(SCHEMA, column_sums(pooled))
    assert scaled.with_targets(None) == alone
