"""Robust rules against independent oracles, and as aggregators composed with every strategy."""

import statistics

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedpharma.core.config import RobustConfig
from fedpharma.core.errors import RoundFailed
from fedpharma.core.params import Parameters
from fedpharma.strategy import (
    FedAvg,
    FedOpt,
    RobustRule,
    SampleWeightedMean,
    SiteUpdate,
    build_rule,
)
from fedpharma.strategy.robust import (
    bound_norm,
    coordinate_median,
    krum_scores,
    multi_krum_selection,
    trimmed_mean,
)

finite = st.floats(-1e3, 1e3)
matrices = st.tuples(st.integers(1, 9), st.integers(1, 5)).flatmap(
    lambda shape: hnp.arrays(np.float64, shape, elements=finite)
)


@given(matrices)
def test_coordinate_median_is_each_column_s_median(matrix):
    expected = [statistics.median(column) for column in matrix.T.tolist()]
    np.testing.assert_allclose(coordinate_median(matrix), expected, atol=1e-9)


@given(matrices, st.integers(0, 4))
def test_trimmed_mean_drops_trim_values_from_each_end_of_each_column(matrix, trim):
    n = matrix.shape[0]
    if n <= 2 * trim:
        with pytest.raises(ValueError):
            trimmed_mean(matrix, trim)
        return
    expected = [statistics.fmean(sorted(column)[trim : n - trim]) for column in matrix.T.tolist()]
    np.testing.assert_allclose(trimmed_mean(matrix, trim), expected, atol=1e-9)


def test_trimmed_mean_ignores_one_huge_value_per_coordinate():
    matrix = np.array([[1.0, 2.0], [2.0, 3.0], [3.0, 4.0], [1e9, -1e9]])
    np.testing.assert_allclose(trimmed_mean(matrix, 1), [2.5, 2.5])
    # the weakened twin: the plain mean is dragged anywhere
    assert abs(matrix.mean(axis=0)).max() > 1e8


def test_krum_scores_by_hand():
    # 1-D points 0, 1, 2, 3, 10; n = 5, f = 1: each point's 2 nearest others
    points = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    # 0: 1 (1) + 4 (2) = 5;  1: 1 + 1 = 2;  2: 1 + 1 = 2;  3: 1 + 4 = 5;  10: 49 + 64 = 113
    np.testing.assert_allclose(krum_scores(points, 1), [5.0, 2.0, 2.0, 5.0, 113.0])
    assert multi_krum_selection(points, 1, 1) == [1]  # Krum: the first of the tied best
    assert multi_krum_selection(points, 1, 4) == [0, 1, 2, 3]  # the outlier is never chosen


def test_krum_scores_in_two_dimensions_by_hand():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    # squared distances from (0,0): 1, 1, 2, 50 → 2 nearest: 1 + 1 = 2; the same for each
    # corner of the unit square; (5,5): 32, 41, 41, 50 → 32 + 41 = 73
    np.testing.assert_allclose(krum_scores(points, 1), [2.0, 2.0, 2.0, 2.0, 73.0])


def test_krum_needs_f_plus_three_points():
    with pytest.raises(ValueError, match="at least 4"):
        krum_scores(np.zeros((3, 2)), 1)


@given(hnp.arrays(np.float64, 6, elements=finite), st.floats(1e-3, 1e3))
def test_bound_norm_scales_down_only(vector, bound):
    out = bound_norm(vector, bound)
    norm = np.linalg.norm(vector)
    assert np.linalg.norm(out) <= bound * (1 + 1e-9)
    if norm <= bound:
        np.testing.assert_array_equal(out, vector)
    else:  # same direction
        np.testing.assert_allclose(out * norm / bound, vector, rtol=1e-9, atol=1e-12)


# ----- the rules as aggregators ------------------------------------------------------------------


def updates(*rows, weights=None):
    weights = weights or [1.0] * len(rows)
    return [
        SiteUpdate(f"s{i}", Parameters.from_dict({"w": np.asarray(row, dtype=np.float32)}), w)
        for i, (row, w) in enumerate(zip(rows, weights, strict=True))
    ]


HONEST = ([0.1, 0.2], [0.2, 0.1], [0.15, 0.15], [0.1, 0.1])
POISONED = [*HONEST, [100.0, -100.0]]


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "multi_krum"])
def test_each_rule_keeps_one_poisoned_update_of_five_near_the_honest_ones(rule):
    mean = RobustRule(rule, byzantine=1).mean_update(1, updates(*POISONED)).arrays[0]
    assert np.all((mean >= 0.1 - 1e-6) & (mean <= 0.2 + 1e-6))


def test_weakened_twin_fedavg_s_mean_is_taken_by_the_poisoned_update():
    mean = SampleWeightedMean().mean_update(1, updates(*POISONED)).arrays[0]
    assert np.abs(mean).max() > 10


def test_norm_bound_limits_what_a_scaled_update_adds():
    bounded = RobustRule("mean", norm_bound=1.0).mean_update(1, updates(*POISONED)).arrays[0]
    assert np.linalg.norm(bounded) <= 1.0 / 5 + 0.3
    np.testing.assert_allclose(
        bounded,
        (np.sum(HONEST, axis=0) + np.array([1.0, -1.0]) / np.sqrt(2)) / 5,
        rtol=1e-5,
    )


def test_multi_krum_averages_the_selected_with_their_agreed_weights():
    out = RobustRule("multi_krum", byzantine=1, krum_select=2).mean_update(
        1, updates([0.0], [1.0], [2.0], [3.0], [10.0], weights=[1, 3, 1, 1, 1])
    )
    # scores 5, 2, 2, 5, 113: rows 1 and 2, weighted 3 : 1
    np.testing.assert_allclose(out.arrays[0], [(3 * 1.0 + 2.0) / 4])


def test_median_and_krum_ignore_weights():
    heavy = updates(*POISONED, weights=[1, 1, 1, 1, 1e6])
    for rule in ("median", "trimmed_mean", "multi_krum"):
        mean = RobustRule(rule).mean_update(1, heavy).arrays[0]
        assert np.abs(mean).max() < 1


def test_a_round_with_too_few_updates_for_the_rule_fails_naming_the_need():
    with pytest.raises(RoundFailed, match=r"multi_krum tolerating 1 hostile site.*at least 5"):
        RobustRule("multi_krum").mean_update(3, updates(*HONEST))


def test_the_rule_s_output_keeps_the_model_s_structure_and_dtype():
    out = RobustRule("median").mean_update(1, updates(*POISONED))
    assert out.names == ("w",) and out.arrays[0].dtype == np.float32


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        (RobustConfig(), SampleWeightedMean),
        (RobustConfig(norm_bound=2.0), RobustRule),
        (RobustConfig(rule="median"), RobustRule),
    ],
)
def test_build_rule(config, kind):
    assert type(build_rule(config)) is kind


@pytest.mark.parametrize(
    "strategy", [FedAvg(), FedOpt(variant="adam", eta=0.1)], ids=["fedavg", "fedadam"]
)
def test_a_strategy_steps_on_the_robust_mean(strategy):
    start = Parameters.from_dict({"w": np.zeros(2, dtype=np.float32)})
    robust = RobustRule("median").mean_update(1, updates(*POISONED))
    poisoned = SampleWeightedMean().mean_update(1, updates(*POISONED))
    step = strategy.aggregate_train(1, start, robust).arrays[0]
    if isinstance(strategy, FedAvg):
        np.testing.assert_allclose(step, robust.arrays[0])
    else:  # FedAdam's first step: η · sign-ish of Δ̄, same sign as the honest updates
        assert np.all(step > 0)
        twin = FedOpt(variant="adam", eta=0.1).aggregate_train(1, start, poisoned).arrays[0]
        assert twin[1] < 0  # the poisoned mean turns the second coordinate around
