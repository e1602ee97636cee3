"""Inductive conformal prediction: exact p-values, and validity where it is promised."""

import math

import numpy as np
import pytest

from fedpharma.evaluation.conformal import (
    IntervalRegressor,
    MondrianClassifier,
    coverage,
    efficiency,
)


def test_p_values_count_the_calibration_scores_at_least_as_strange():
    # class 0 calibration probabilities 0.1, 0.2, 0.6 → scores p; class 1: 0.9, 0.4 → 1 − p.
    cp = MondrianClassifier.calibrate([0, 0, 0, 1, 1, np.nan], [0.1, 0.2, 0.6, 0.9, 0.4, 0.5])
    p = cp.p_values([0.3])
    assert p[0, 0] == pytest.approx((1 + 1) / 4)  # class 0 score 0.3: only 0.6 ≥ it
    assert p[0, 1] == pytest.approx((0 + 1) / 3)  # class 1 score 0.7: none of 0.1, 0.6
    sets = cp.prediction_sets([0.3], error_rate=0.4)
    assert sets.tolist() == [[True, False]]
    assert efficiency(sets) == 1.0 and coverage(sets, [0]) == 1.0 and coverage(sets, [1]) == 0.0


def _imbalanced(rng, n):
    """A weak classifier on a 10 %-positive task: the minority class is hard."""
    y = (rng.random(n) < 0.1).astype(float)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 0.8 * y - 1.5)))
    return y, p


def test_mondrian_sets_cover_each_class_at_the_promised_rate():
    rng = np.random.default_rng(0)
    error = 0.2
    per_class = {0: [], 1: []}
    pooled_minority = []
    for _ in range(200):
        y_cal, p_cal = _imbalanced(rng, 400)
        y, p = _imbalanced(rng, 400)
        sets = MondrianClassifier.calibrate(y_cal, p_cal).prediction_sets(p, error)
        for c in (0, 1):
            per_class[c].append(coverage(sets[y == c], y[y == c]))
        # The weakened twin: one calibration for both classes (not Mondrian).
        both = np.sort(np.r_[p_cal[y_cal == 0], 1 - p_cal[y_cal == 1]])
        twin = MondrianClassifier((both, both)).prediction_sets(p, error)
        pooled_minority.append(coverage(twin[y == 1], y[y == 1]))
    for c in (0, 1):
        assert np.mean(per_class[c]) >= 1 - error - 0.01
    assert np.mean(pooled_minority) < 1 - error - 0.05  # without Mondrian the minority is missed


def test_conformal_intervals_cover_at_the_promised_rate_and_are_exact_on_a_hand_case():
    rng = np.random.default_rng(1)
    error, hits = 0.1, []
    for _ in range(300):
        residual = IntervalRegressor.calibrate(rng.standard_t(3, 50), np.zeros(50))
        y = rng.standard_t(3, 200)
        hits.append(np.mean(np.abs(y) <= residual.half_width(error)))
    assert np.mean(hits) >= 1 - error - 0.01
    hand = IntervalRegressor.calibrate([1.0, 2.0, 3.0, 4.0], [0.0] * 4)
    assert hand.half_width(0.4) == 3.0  # ⌈5 × 0.6⌉ = 3rd smallest
    assert math.isinf(hand.half_width(0.1))  # ⌈5 × 0.9⌉ = 5 > 4 residuals


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1])
def test_an_error_rate_outside_zero_one_is_refused(rate):
    with pytest.raises(ValueError, match="error rate"):
        IntervalRegressor.calibrate([1.0], [0.0]).half_width(rate)
