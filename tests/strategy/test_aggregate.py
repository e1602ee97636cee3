import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedpharma.strategy.aggregate import (
    MomentState,
    fedopt_step,
    weighted_average,
    weighted_mean_metrics,
)

finite = st.floats(-1e3, 1e3)


@given(
    st.integers(1, 6).flatmap(
        lambda k: st.tuples(
            st.lists(hnp.arrays(np.float64, 7, elements=finite), min_size=k, max_size=k),
            st.lists(st.integers(1, 10_000), min_size=k, max_size=k),
        )
    )
)
def test_weighted_average_matches_numpy(case):
    vectors, weights = case
    expected = np.average(np.stack(vectors), axis=0, weights=weights)
    np.testing.assert_allclose(weighted_average(vectors, weights), expected, atol=1e-9)


def test_weighted_average_rejects_empty_and_zero_weights():
    with pytest.raises(ValueError):
        weighted_average([], [])
    with pytest.raises(ValueError):
        weighted_average([np.ones(2)], [0])


def test_weighted_mean_metrics_uses_only_sites_reporting_a_metric():
    out = weighted_mean_metrics([{"a": 1.0, "b": 2.0}, {"a": 3.0}], [1, 3])
    assert out["a"] == pytest.approx(np.average([1.0, 3.0], weights=[1, 3]))
    assert out["b"] == pytest.approx(2.0)


def _reference(variant, x, deltas, eta, b1, b2, tau):
    """Reddi et al. 2021 Alg. 2, one coordinate at a time, written independently."""
    x = list(x)
    m = [0.0] * len(x)
    v = [tau**2] * len(x)
    for delta in deltas:
        for i, d in enumerate(delta):
            m[i] = b1 * m[i] + (1 - b1) * d
            if variant == "adagrad":
                v[i] = v[i] + d * d
            elif variant == "adam":
                v[i] = b2 * v[i] + (1 - b2) * d * d
            else:
                s = 1.0 if v[i] - d * d > 0 else (-1.0 if v[i] - d * d < 0 else 0.0)
                v[i] = v[i] - (1 - b2) * d * d * s
            x[i] = x[i] + eta * m[i] / (v[i] ** 0.5 + tau)
    return np.array(x)


@pytest.mark.parametrize("variant", ["adagrad", "adam", "yogi"])
def test_fedopt_matches_reference_recurrence(variant):
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=5)
    deltas = [rng.normal(scale=0.1, size=5) for _ in range(4)]
    x, state = x0.copy(), MomentState.zeros(5, 1e-3)
    for d in deltas:
        x, state = fedopt_step(
            x, d, state, variant=variant, eta=0.05, beta1=0.9, beta2=0.99, tau=1e-3
        )
    np.testing.assert_allclose(x, _reference(variant, x0, deltas, 0.05, 0.9, 0.99, 1e-3))
