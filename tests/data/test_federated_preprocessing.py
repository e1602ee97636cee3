"""Federated imputation and standardization equal the pooled fit, from the sites' sums alone."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler

from fedpharma.core.config import SitePolicyConfig
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.protocol import FeatureStatisticsResult, FeatureStatisticsTask, Refusal
from fedpharma.data.federated_preprocessing import FittedPreprocessing, column_sums
from fedpharma.data.tabular import Column, TabularSchema
from fedpharma.server.feature_statistics import fit_preprocessing
from fedpharma.site.policy import SitePolicy
from fedpharma.site.runtime import SiteRuntime
from fedpharma.transport.inprocess import InProcessChannel

SCHEMA = TabularSchema(
    (
        Column("dose", "float", minimum=0.0, maximum=100.0, missing=("0",), impute="mean"),
        Column("weight", "float"),
        Column("smoker", "bool", impute="most_frequent"),
        Column("stage", "category", ("I", "II", "III"), impute="most_frequent"),
        Column("y", "int"),
    ),
    label_columns=("y",),
)


def _site_features(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    dose = rng.normal(40 + shift, 10, n)
    dose[rng.random(n) < 0.2] = np.nan
    weight = rng.normal(70 + 3 * shift, 12, n)
    smoker = (rng.random(n) < 0.3).astype(float)
    smoker[rng.random(n) < 0.1] = np.nan
    stage = np.eye(3)[rng.choice(3, n, p=[0.2, 0.5, 0.3])]
    stage[rng.random(n) < 0.15] = np.nan
    return np.column_stack([dose, weight, smoker, stage]).astype(np.float32)


SITES = {
    name: _site_features(np.random.default_rng(seed), n, shift)
    for name, seed, n, shift in (("a", 1, 300, 0.0), ("b", 2, 40, 5.0), ("c", 3, 120, -8.0))
}


def _runtime(name: str, features: np.ndarray, policy: SitePolicy | None = None) -> SiteRuntime:
    data = Dataset(
        features=features,
        labels=np.zeros((len(features), 1), dtype=np.float32),
        task="classification",
        task_names=("y",),
        groups=np.zeros(len(features), dtype=np.int64),
    )
    return SiteRuntime(name, SiteData(data, data), trainer=None, policy=policy)  # type: ignore[arg-type]


def test_the_federated_fit_equals_the_pooled_imputer_and_scaler() -> None:
    channel = InProcessChannel({name: _runtime(name, x) for name, x in SITES.items()})
    fitted, how = fit_preprocessing(channel, "run", SCHEMA)
    assert "3 sites' summed statistics" in how
    pooled = np.concatenate(list(SITES.values())).astype(np.float64)

    numeric = pooled[:, :2]
    imputer = SimpleImputer(strategy="mean", add_indicator=True).fit(numeric)
    expected = StandardScaler().fit(imputer.transform(numeric)[:, :2])
    np.testing.assert_allclose(fitted.fill[:2], imputer.statistics_, rtol=1e-6)
    np.testing.assert_allclose(fitted.center[:2], np.nanmean(numeric, axis=0), rtol=1e-6)
    np.testing.assert_allclose(fitted.scale[:2], np.nanstd(numeric, axis=0), rtol=1e-6)
    assert expected.mean_ == pytest.approx(imputer.statistics_, rel=1e-6)

    # most frequent: binary by majority, category by the largest one-hot sum
    assert fitted.fill[2] == float(np.nanmean(pooled[:, 2]) >= 0.5)
    most = int(np.argmax(np.nansum(pooled[:, 3:], axis=0)))
    assert fitted.fill[3:] == tuple(1.0 if k == most else 0.0 for k in range(3))
    # one indicator for each imputing column that was missing somewhere
    assert fitted.indicator_names == ("missing(dose)", "missing(smoker)", "missing(stage)")

    out = fitted.transform(pooled)
    assert out.shape == (pooled.shape[0], 6 + 3) and not np.isnan(out).any()
    standardized = np.where(np.isnan(numeric), imputer.statistics_, numeric) - fitted.center[:2]
    np.testing.assert_allclose(out[:, :2], standardized / np.asarray(fitted.scale[:2]), rtol=1e-4)
    np.testing.assert_array_equal(out[:, 6], np.isnan(pooled[:, 0]))


def test_the_fit_is_the_same_whichever_way_the_rows_are_split_between_sites() -> None:
    pooled = np.concatenate(list(SITES.values()))
    one = FittedPreprocessing.fit(SCHEMA, column_sums(pooled))
    parts = column_sums(pooled[:7]) + column_sums(pooled[7:200]) + column_sums(pooled[200:])
    split = FittedPreprocessing.fit(SCHEMA, parts)
    np.testing.assert_allclose(one.center, split.center, rtol=1e-9)
    np.testing.assert_allclose(one.scale, split.scale, rtol=1e-9)
    assert one.indicators == split.indicators
    # the digest identifies the fit: another fit (other data), another digest
    other = FittedPreprocessing.fit(SCHEMA, column_sums(SITES["b"]))
    assert one.digest() != other.digest()


def test_a_site_requiring_dp_sends_no_sums_and_the_fit_uses_declared_ranges(tmp_path) -> None:
    strict = SitePolicy(SitePolicyConfig(require_dp=True), tmp_path / "ledger.sqlite")
    runtimes = {name: _runtime(name, x) for name, x in SITES.items()}
    runtimes["b"] = _runtime("b", SITES["b"], policy=strict)
    reply = runtimes["b"].handle(FeatureStatisticsTask("run", 0))
    assert isinstance(reply, Refusal) and "unaccounted release" in reply.reason
    # the twin without the requirement sends its sums, and only sums
    sent = _runtime("b", SITES["b"]).handle(FeatureStatisticsTask("run", 0))
    assert isinstance(sent, FeatureStatisticsResult) and sent.n_examples == 40
    fitted, how = fit_preprocessing(InProcessChannel(runtimes), "run", SCHEMA)
    assert "declared ranges: b sent no feature statistics" in how
    assert fitted.center[0] == 50.0 and fitted.scale[0] == 50.0  # dose: declared [0, 100]
    assert fitted.center[1] == 0.0 and fitted.scale[1] == 1.0  # weight: nothing declared


def test_a_reply_of_the_wrong_width_is_left_out() -> None:
    runtimes = {name: _runtime(name, x) for name, x in SITES.items()}
    runtimes["c"] = _runtime("c", SITES["c"][:, :4])
    fitted, how = fit_preprocessing(InProcessChannel(runtimes), "run", SCHEMA)
    assert "c sent no feature statistics" in how and fitted.source == "declared ranges"
