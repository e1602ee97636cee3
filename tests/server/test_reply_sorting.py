"""A round's replies sorted by what each site did: usable results, refusals, and failures whose
reason says what went wrong (no reply, the site's own failure, or why the reply was rejected).

Written against the survivors of `scripts/mutation.py round` (README, Development notes).
"""

from __future__ import annotations

import numpy as np

from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    EvaluateResult,
    EvaluateTask,
    Failure,
    Refusal,
    TrainResult,
    TrainTask,
)
from fedpharma.server.round import sort_replies

MODEL = Parameters.from_dict({"w": np.zeros(2)})
TRAIN = TrainTask("run", 2, MODEL)


def test_a_site_that_sent_nothing_fails_with_no_reply() -> None:
    results, refusals, failures = sort_replies({"quiet": TRAIN}, {})
    assert (results, refusals, failures) == ({}, {}, {"quiet": "no reply"})


def test_a_failed_exchange_keeps_the_channels_reason() -> None:
    replies = {"down": Failure("down", "connection reset by peer")}
    _, _, failures = sort_replies({"down": TRAIN}, replies)
    assert failures == {"down": "connection reset by peer"}


def test_a_rejected_reply_fails_with_the_reason_it_was_rejected() -> None:
    stale = TrainResult("run", 1, "old", MODEL, 4)  # an answer to round 1, replayed in round 2
    results, _, failures = sort_replies({"old": TRAIN}, {"old": stale})
    assert results == {}
    assert failures["old"].startswith("rejected: answer is for run 'run' round 1")
    assert "stale or replayed" in failures["old"]


def test_results_and_refusals_are_sorted_apart_and_extra_replies_ignored() -> None:
    tasks = {"a": TRAIN, "b": TRAIN, "c": EvaluateTask("run", 2, MODEL)}
    good = TrainResult("run", 2, "a", MODEL, 3)
    refusal = Refusal("run", 2, "b", "policy", "not today")
    evaluated = EvaluateResult("run", 2, "c", 5, {"rmse": 1.0})
    uninvited = TrainResult("run", 2, "x", MODEL, 3)
    replies = {"a": good, "b": refusal, "c": evaluated, "x": uninvited}
    results, refusals, failures = sort_replies(tasks, replies)
    assert results == {"a": good, "c": evaluated}
    assert refusals == {"b": refusal} and failures == {}
