"""Feature sums under a site's DP policy: the Gaussian mechanism on clipped per-record
contributions, charged to the site's ledger, fitted within the stated noise; and an adversary
who differences the release against every record but one, with a weakened (noise-free) twin."""

from __future__ import annotations

import numpy as np
import pytest

from fedpharma.core.config import SitePolicyConfig
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.protocol import FeatureStatisticsResult, FeatureStatisticsTask, Refusal
from fedpharma.data.bounded_statistics import noise_std, sensitivity
from fedpharma.data.federated_preprocessing import (
    MEDIAN_BINS,
    FittedPreprocessing,
    column_sums,
)
from fedpharma.data.tabular import Column, TabularSchema
from fedpharma.server.feature_statistics import fit_preprocessing
from fedpharma.site.policy import SitePolicy
from fedpharma.site.runtime import SiteRuntime
from fedpharma.transport.inprocess import InProcessChannel

SCHEMA = TabularSchema(
    (
        Column("dose", "float", minimum=0.0, maximum=100.0, missing=("0",), impute="median"),
        Column("weight", "float", minimum=30.0, maximum=150.0),
        Column("smoker", "bool", impute="most_frequent"),
        Column("stage", "category", ("I", "II", "III"), impute="most_frequent"),
        Column("y", "int"),
    ),
    label_columns=("y",),
)
SIGMA = 1.0


def _features(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    dose = np.clip(rng.normal(40 + shift, 10, n), 1, 99)
    dose[rng.random(n) < 0.2] = np.nan
    weight = np.clip(rng.normal(70 + 3 * shift, 12, n), 31, 149)
    smoker = (rng.random(n) < 0.3).astype(float)
    stage = np.eye(3)[rng.choice(3, n, p=[0.2, 0.5, 0.3])]
    return np.column_stack([dose, weight, smoker, stage]).astype(np.float32)


SITES = {
    name: _features(np.random.default_rng(seed), n, shift)
    for name, seed, n, shift in (("a", 1, 400, 0.0), ("b", 2, 60, 5.0), ("c", 3, 200, -8.0))
}


def _policy(tmp_path, name: str, **rules) -> SitePolicy:
    config = SitePolicyConfig(record_epsilon=rules.pop("epsilon", 10.0), **rules)
    return SitePolicy(config, tmp_path / f"{name}.sqlite")


def _runtime(name: str, features: np.ndarray, policy: SitePolicy | None, seed: int = 0):
    data = Dataset(
        features=features,
        labels=np.zeros((len(features), 1), dtype=np.float32),
        task="classification",
        task_names=("y",),
        groups=np.zeros(len(features), dtype=np.int64),
    )
    return SiteRuntime(
        name,
        SiteData(data, data),
        trainer=None,  # type: ignore[arg-type]
        policy=policy,
        schema=SCHEMA,
        noise_source=lambda rnd: np.random.default_rng([seed, rnd]),
    )


def test_dp_sums_match_the_pooled_sums_within_the_stated_noise_and_are_charged(tmp_path):
    runtimes = {
        name: _runtime(name, x, _policy(tmp_path, name), seed=k)
        for k, (name, x) in enumerate(SITES.items())
    }
    fitted, how = fit_preprocessing(
        InProcessChannel(runtimes), "run", SCHEMA, noise_multiplier=SIGMA
    )
    assert "under DP (σ = 1, charged)" in how and fitted.source == "federated DP sums"
    # the noise each site's release carries, as stated; three sites add three draws
    stated = noise_std(SCHEMA, SIGMA)
    assert stated.rows == pytest.approx(SIGMA * np.sqrt(1 + 3 * 6 + 1))
    released = [runtimes[n].handle(FeatureStatisticsTask("again", 0, SIGMA)) for n in SITES]
    pooled = column_sums(np.concatenate(list(SITES.values())), SCHEMA)
    for field, std in (
        ("count", stated.count),
        ("total", stated.total),
        ("sum_of_squares", stated.sum_of_squares),
    ):
        summed = np.sum([getattr(r, field) for r in released], axis=0)
        error = np.abs(summed - np.asarray(getattr(pooled, field)))
        assert (error <= 4 * np.asarray(std) * np.sqrt(3)).all(), field
        assert (error > 0).all(), f"{field} carries no noise"
    # the fit is within what that noise allows: the pooled mean of dose is 40ish
    pooled_x = np.concatenate(list(SITES.values())).astype(np.float64)
    assert abs(fitted.center[1] - np.nanmean(pooled_x[:, 1])) < 4 * stated.total[1] * 2 / 660
    assert abs(fitted.fill[0] - np.nanmedian(pooled_x[:, 0])) < 5.0
    # every release was charged to the site's own ledger: two per site, one Gaussian event each
    for runtime in runtimes.values():
        entries = runtime.policy.ledger.entries("record")
        assert [type(e.event).__name__ for e in entries] == ["GaussianEvent"] * 2
        assert entries[-1].cumulative.epsilon > entries[0].cumulative.epsilon > 0


def test_the_federated_median_equals_the_pooled_median_within_one_bin() -> None:
    runtimes = {name: _runtime(name, x, None) for name, x in SITES.items()}
    fitted, _ = fit_preprocessing(InProcessChannel(runtimes), "run", SCHEMA)
    pooled = np.concatenate(list(SITES.values())).astype(np.float64)
    assert fitted.fill[0] == pytest.approx(np.nanmedian(pooled[:, 0]), abs=100 / MEDIAN_BINS)
    assert fitted.center[0] == pytest.approx(np.nanmean(pooled[:, 0]), rel=1e-6)  # scaled by mean
    assert fitted.fill[1] == pytest.approx(np.nanmean(pooled[:, 1]), rel=1e-6)  # no median asked


def test_a_site_requiring_dp_refuses_plain_sums_and_a_release_it_cannot_bound(tmp_path):
    strict = _runtime("b", SITES["b"], _policy(tmp_path, "b", require_dp=True))
    plain = strict.handle(FeatureStatisticsTask("run", 0))
    assert isinstance(plain, Refusal) and "unaccounted release" in plain.reason
    unbounded = TabularSchema(
        (Column("dose", "float", impute="mean"), *SCHEMA.columns[1:]), label_columns=("y",)
    )
    strict.schema = unbounded
    reply = strict.handle(FeatureStatisticsTask("run", 0, SIGMA))
    assert isinstance(reply, Refusal) and "declare min and max" in reply.reason
    assert strict.policy is not None and strict.policy.ledger.entries() == ()  # nothing charged
    no_budget = _runtime("b", SITES["b"], SitePolicy(SitePolicyConfig(), tmp_path / "n.sqlite"))
    reply = no_budget.handle(FeatureStatisticsTask("run", 0, SIGMA))
    assert isinstance(reply, Refusal) and "record-level privacy budget" in reply.reason
    tight = _runtime("b", SITES["b"], _policy(tmp_path, "t", epsilon=0.5))
    assert isinstance(tight.handle(FeatureStatisticsTask("run", 0, SIGMA)), Refusal)
    # a refused fit falls back to the declared ranges, which are public
    runtimes = {"b": _runtime("b", SITES["b"], _policy(tmp_path, "s", require_dp=True))}
    fitted, how = fit_preprocessing(InProcessChannel(runtimes), "run", SCHEMA)
    assert fitted.source == "declared ranges" and "b sent no feature statistics" in how


def _differencing_attack(runtime: SiteRuntime, features: np.ndarray, trials: int) -> np.ndarray:
    """The coordinator knows every record of the site but the first and reads that record's
    dose off the released total; the error of its guess, per trial."""
    known = np.nansum(features[1:, 0].astype(np.float64))
    errors = []
    for trial in range(trials):
        reply = runtime.handle(FeatureStatisticsTask(f"probe-{trial}", trial, SIGMA))
        assert isinstance(reply, FeatureStatisticsResult)
        errors.append(abs(reply.total[0] - known - float(features[0, 0])))
    return np.asarray(errors)


def test_an_adversary_cannot_read_a_record_off_dp_sums_but_can_off_a_noise_free_twin(
    tmp_path, monkeypatch
):
    features = SITES["b"].copy()
    features[0, 0] = 63.0
    strict = _runtime("b", features, _policy(tmp_path, "b", require_dp=True, epsilon=50.0))
    errors = _differencing_attack(strict, features, trials=5)
    # the noise on dose's total is σΔ·100 ≈ 450: the guess is off by far more than the range
    assert np.median(errors) > 10.0
    assert sensitivity(SCHEMA) == pytest.approx(np.sqrt(20))

    # weakened twin: the same site with its noise removed gives the record away exactly
    monkeypatch.setattr(
        "fedpharma.site.statistics.gaussian_noise", lambda shape, std, rng: np.zeros(shape)
    )
    weak = _runtime("b", features, _policy(tmp_path, "w", require_dp=True, epsilon=50.0))
    assert np.max(_differencing_attack(weak, features, trials=2)) < 1e-3


def test_a_noised_fit_stays_inside_the_declared_ranges() -> None:
    sums = column_sums(SITES["b"], SCHEMA)
    broken = type(
        sums
    )(
        sums.rows,
        (-3.0, *sums.count[1:]),  # noise pushed dose's count below zero
        (-5000.0, *sums.total[1:]),
        (1.0, *sums.sum_of_squares[1:]),
        sums.histogram,
    )
    fitted = FittedPreprocessing.fit(SCHEMA, broken, noised=True)
    assert 0.0 <= fitted.center[0] <= 100.0 and 0.0 < fitted.scale[0] <= 50.0
    assert "missing(dose)" in fitted.indicator_names and "missing(smoker)" in fitted.indicator_names
