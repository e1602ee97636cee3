"""Metrics over sparse multitask labels agree with direct scikit-learn / scipy calls."""

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from sklearn import metrics as sk

from fedpharma.evaluation.metrics import (
    PRIMARY_METRIC,
    average_precision,
    compute_metrics,
    per_task_metrics,
    roc_auc,
)

NAN = np.nan
REG_TRUE = np.array(
    [[1.0, NAN, 0.5], [2.0, 3.0, NAN], [NAN, 1.0, 1.5], [4.0, 2.0, NAN], [3.5, NAN, NAN]]
)
REG_PRED = np.array(
    [[1.2, 9.0, 0.1], [1.5, 2.5, 9.0], [9.0, 1.5, 1.9], [3.0, 2.5, 9.0], [3.0, 9.0, 9.0]]
)
CLS_TRUE = np.array(
    [[1, 0, NAN], [0, NAN, 1], [1, 1, 1], [NAN, 0, NAN], [0, 1, 1], [1, NAN, NAN]], dtype=float
)
CLS_PRED = np.array(
    [
        [0.9, 0.2, 0.5],
        [0.4, 0.5, 0.8],
        [0.6, 0.3, 0.7],
        [0.1, 0.4, 0.5],
        [0.55, 0.9, 0.2],
        [0.3, 0.5, 0.5],
    ]
)


def observed(column: int, truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isnan(truth[:, column])
    return truth[keep, column], pred[keep, column]


def test_regression_matches_sklearn_per_task_and_on_average() -> None:
    expected = []
    for column in range(3):
        t, p = observed(column, REG_TRUE, REG_PRED)
        expected.append(
            {
                "rmse": math.sqrt(sk.mean_squared_error(t, p)),
                "mae": sk.mean_absolute_error(t, p),
                "r2": sk.r2_score(t, p),
                "spearman": spearmanr(t, p).statistic,
            }
        )
    per_task = per_task_metrics("regression", REG_TRUE, REG_PRED)
    assert len(per_task) == 3
    for got, want in zip(per_task, expected, strict=True):
        assert got == pytest.approx(want)
    summary = compute_metrics("regression", REG_TRUE, REG_PRED)
    assert summary == pytest.approx({k: np.mean([e[k] for e in expected]) for k in expected[0]})


def test_classification_matches_sklearn_and_skips_single_class_tasks() -> None:
    # Column 2 holds only positives among its observed labels: no AUC, skipped entirely.
    per_task = per_task_metrics("classification", CLS_TRUE, CLS_PRED)
    assert all(math.isnan(v) for v in per_task[2].values())
    expected = []
    for column in range(2):
        t, p = observed(column, CLS_TRUE, CLS_PRED)
        expected.append(
            {
                "roc_auc": sk.roc_auc_score(t, p),
                "pr_auc": sk.average_precision_score(t, p),
                "accuracy": sk.accuracy_score(t, p >= 0.5),
                "sensitivity": sk.recall_score(t, p >= 0.5),
                "specificity": sk.recall_score(1 - t, p < 0.5),
                "brier": sk.brier_score_loss(t, p),
            }
        )
        assert per_task[column] == pytest.approx(expected[-1])
    summary = compute_metrics("classification", CLS_TRUE, CLS_PRED)
    assert summary == pytest.approx({k: np.mean([e[k] for e in expected]) for k in expected[0]})


@settings(max_examples=200, deadline=None)
@given(
    labels=st.lists(st.booleans(), min_size=2, max_size=60).filter(lambda v: 0 < sum(v) < len(v)),
    data=st.data(),
)
def test_ranking_metrics_equal_sklearn_including_ties(labels, data) -> None:
    # Scores drawn from a few levels, so most examples are tied with others.
    levels = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5000001, 0.9, 1.0])
    scores = np.array(data.draw(st.lists(levels, min_size=len(labels), max_size=len(labels))))
    truth = np.array(labels, dtype=np.float64)
    assert roc_auc(truth, scores) == pytest.approx(sk.roc_auc_score(truth, scores), abs=1e-12)
    assert average_precision(truth, scores) == pytest.approx(
        sk.average_precision_score(truth, scores), abs=1e-12
    )


def test_no_qualifying_task_gives_nan() -> None:
    truth = np.array([[1.0, NAN], [1.0, NAN], [NAN, 0.0]])
    summary = compute_metrics("classification", truth, np.full(truth.shape, 0.5))
    assert set(summary) == {
        "roc_auc",
        "pr_auc",
        "accuracy",
        "sensitivity",
        "specificity",
        "brier",
    }
    assert all(math.isnan(v) for v in summary.values())
    empty = compute_metrics("regression", np.full((2, 2), NAN), np.zeros((2, 2)))
    assert all(math.isnan(v) for v in empty.values())


def test_undefined_regression_metrics_are_nan_not_warnings() -> None:
    with np.testing.assert_no_warnings():
        single = per_task_metrics("regression", [[2.0]], [[1.0]])[0]
        constant = per_task_metrics("regression", [1.0, 1.0, 1.0], [0.5, 1.0, 2.0])[0]
    assert single["rmse"] == 1.0 and math.isnan(single["r2"]) and math.isnan(single["spearman"])
    assert math.isnan(constant["spearman"])


def test_non_finite_predictions_score_nan() -> None:
    pred = REG_PRED.copy()
    pred[0, 0] = NAN  # observed position in task 0; task 1 still scores
    per_task = per_task_metrics("regression", REG_TRUE, pred)
    assert math.isnan(per_task[0]["rmse"]) and not math.isnan(per_task[1]["rmse"])


def test_one_dimensional_input_is_one_task() -> None:
    assert compute_metrics("regression", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])["spearman"] == 1.0


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="same n×t shape"):
        compute_metrics("regression", np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="0 or 1"):
        compute_metrics("classification", [0.0, 2.0], [0.1, 0.9])
    with pytest.raises(ValueError, match="unknown task"):
        compute_metrics("ranking", [0.0], [0.0])  # type: ignore[arg-type]


@pytest.mark.parametrize("task", sorted(PRIMARY_METRIC))
def test_the_primary_metric_ranks_the_better_model_first(task) -> None:
    """The direction the report and the cross-site matrix read the primary metric in is the
    direction in which it improves."""
    name, higher_is_better = PRIMARY_METRIC[task]
    rng = np.random.default_rng(0)
    if task == "regression":
        labels = rng.normal(size=200)
        close = labels + 0.2 * rng.normal(size=200)
    else:
        labels = rng.integers(0, 2, 200).astype(float)
        close = np.clip(labels + 0.3 * rng.normal(size=200), 0.01, 0.99)
    far = rng.random(200)
    better = compute_metrics(task, labels, close)[name]
    worse = compute_metrics(task, labels, far)[name]
    assert (better > worse) == higher_is_better and better != worse


def test_evaluation_never_imports_torch() -> None:
    code = "import sys, fedpharma.evaluation, fedpharma.models; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
