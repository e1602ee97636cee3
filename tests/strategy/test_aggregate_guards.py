"""Aggregation refuses inputs it cannot average honestly, and Yogi's sign rule at its tie.

Written against the survivors of `scripts/mutation.py aggregate` (README, Development notes).
"""

import numpy as np
import pytest

from fedpharma.strategy.aggregate import (
    MomentState,
    fedopt_step,
    weighted_average,
    weighted_mean_metrics,
)


def test_weighted_average_says_why_it_refuses():
    with pytest.raises(ValueError, match=r"^cannot average zero arrays$"):
        weighted_average([], [])
    with pytest.raises(ValueError, match=r"^weights must sum to a positive number$"):
        weighted_average([np.ones(2), np.ones(2)], [0, 0])


def test_weighted_average_refuses_more_weights_than_updates():
    # a weight without its update would silently shrink every other site's share
    with pytest.raises(ValueError):
        weighted_average([np.ones(2), np.ones(2)], [1, 1, 2])


def test_weighted_average_refuses_more_updates_than_weights():
    with pytest.raises(ValueError):
        weighted_average([np.ones(2), np.full(2, 9.0)], [1])


def test_weighted_mean_metrics_refuses_metrics_and_weights_of_different_lengths():
    with pytest.raises(ValueError):
        weighted_mean_metrics([{"auc": 0.5}, {"auc": 0.9}], [1])


def test_weighted_mean_metrics_omits_a_metric_only_zero_weight_sites_reported():
    out = weighted_mean_metrics([{"auc": 0.5, "loss": 2.0}, {"loss": 1.0}], [0, 3])
    assert out == {"loss": pytest.approx(1.0)}


def test_yogi_leaves_the_second_moment_unchanged_when_it_equals_the_squared_update():
    # sign(v − Δ²) = 0: Yogi's update of v vanishes (Zaheer et al. 2018, eq. 2)
    delta = np.array([0.5, -0.5])
    state = MomentState(np.zeros(2), delta**2)
    x, after = fedopt_step(
        np.zeros(2), delta, state, variant="yogi", eta=0.1, beta1=0.9, beta2=0.99, tau=1e-3
    )
    np.testing.assert_array_equal(after.v, delta**2)
    assert np.isfinite(x).all()


def test_fedopt_names_an_unknown_variant():
    with pytest.raises(ValueError, match="unknown FedOpt variant 'adamw'"):
        fedopt_step(
            np.zeros(1),
            np.zeros(1),
            MomentState.zeros(1, 1e-3),
            variant="adamw",
            eta=0.1,
            beta1=0.9,
            beta2=0.99,
            tau=1e-3,
        )
