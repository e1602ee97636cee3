"""The one selection rule every model kind goes through: best validation score, then patience."""

import math

import pytest

from fedpharma.evaluation.selection import BestCheckpoint


def test_the_best_is_the_argmax_of_a_higher_is_better_score_and_the_earliest_on_ties():
    rule = BestCheckpoint[str](higher_is_better=True)
    for step, score in enumerate([0.5, 0.7, 0.6, 0.7, 0.65], start=1):
        rule.offer(step, score, f"model-{step}")
    assert rule.best is not None
    assert (rule.best.step, rule.best.score, rule.best.model) == (2, 0.7, "model-2")


def test_the_best_is_the_argmin_of_a_lower_is_better_score():
    rule = BestCheckpoint[int](higher_is_better=False)
    scores = [1.2, 0.9, 0.8, 0.85, 1.1]
    for step, score in enumerate(scores, start=1):
        rule.offer(step, score, step)
    assert rule.best is not None and rule.best.step == 3


@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_an_undefined_or_diverged_score_never_wins(bad):
    rule = BestCheckpoint[int](higher_is_better=False)
    rule.offer(1, 1.0, 1)
    assert rule.offer(2, bad, 2) is False
    assert rule.best is not None and rule.best.step == 1
    lone = BestCheckpoint[int](higher_is_better=True)
    lone.offer(1, bad, 1)
    assert lone.best is None and not lone.exhausted


def test_patience_is_spent_after_that_many_checkpoints_without_improvement():
    rule = BestCheckpoint[int](higher_is_better=True, patience=2)
    verdicts = []
    for step, score in enumerate([0.5, 0.6, 0.55, 0.58, 0.7], start=1):
        rule.offer(step, score, step)
        verdicts.append(rule.exhausted)
    assert verdicts == [False, False, False, True, False]
    never = BestCheckpoint[int](higher_is_better=True, patience=0)
    for step in range(1, 20):
        never.offer(step, 1.0 / step, step)
    assert not never.exhausted


def test_negative_patience_is_refused():
    with pytest.raises(ValueError, match="patience"):
        BestCheckpoint[int](higher_is_better=True, patience=-1)
