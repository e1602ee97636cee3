"""The paired bootstrap resamples the same rows for every model and agrees with the plain
metric where it must."""

import numpy as np
import pytest

from fedpharma.evaluation.bootstrap import paired_bootstrap, percentile_interval
from fedpharma.evaluation.metrics import compute_metrics


def test_resamples_are_paired_and_scored_with_the_package_metric():
    rng = np.random.default_rng(0)
    labels = rng.normal(size=40)
    good, bad = labels + rng.normal(0, 0.1, 40), labels + rng.normal(0, 1.0, 40)
    scores = paired_bootstrap(
        "regression", labels, {"good": good, "bad": bad}, "rmse", np.random.default_rng(1), 200
    )
    # the same generator draws the same rows: resample 0 re-scored by hand
    rows = np.random.default_rng(1).integers(0, 40, 40)
    assert scores["good"][0] == pytest.approx(
        compute_metrics("regression", labels[rows], good[rows])["rmse"]
    )
    assert scores["bad"][0] == pytest.approx(
        compute_metrics("regression", labels[rows], bad[rows])["rmse"]
    )
    assert np.all(scores["good"] < scores["bad"])  # paired: a 10x better model wins every draw
    low, high = percentile_interval(scores["good"])
    assert low < compute_metrics("regression", labels, good)["rmse"] < high


def test_a_model_scored_against_itself_has_a_zero_width_difference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60).astype(float)
    scores_a = rng.random(60)
    scores = paired_bootstrap(
        "classification", labels, {"a": scores_a, "b": scores_a.copy()}, "roc_auc", rng, 50
    )
    assert percentile_interval(scores["a"] - scores["b"]) == (0.0, 0.0)
