"""``validate_reply``: the example count an aggregate weighs a site's answer by.

FedAvg weighs each update by its n_k (McMahan et al. 2017, Alg. 1): an update claiming no
examples (or fewer) would be averaged with weight 0 (or pull the mean away from the others), so it
is refused before it reaches any aggregate.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    ChemicalOverlapResult,
    ChemicalOverlapTask,
    EvaluateResult,
    EvaluateTask,
    TrainResult,
    TrainTask,
)
from fedpharma.core.protocol.messages import validate_reply

MODEL = Parameters.from_dict({"w": np.zeros((2, 3)), "b": np.zeros(3)})
UPDATE = Parameters.from_dict({"w": np.full((2, 3), 0.1), "b": np.full(3, -0.1)})
TRAIN = TrainTask("run-1", 4, MODEL)
EVALUATE = EvaluateTask("run-1", 4, MODEL)


def train_result(n_examples: int) -> TrainResult:
    return TrainResult("run-1", 4, "site-a", UPDATE, n_examples, {"train_loss": 0.5})


@pytest.mark.parametrize("n_examples", [0, -1, -1000])
def test_an_update_from_no_examples_is_refused_and_the_site_is_told_why(n_examples):
    with pytest.raises(ProtocolError) as caught:
        validate_reply(TRAIN, "site-a", train_result(n_examples))
    message = str(caught.value)
    assert f"claims {n_examples} training examples" in message
    assert "'site-a'" in message and "must refuse the task" in message


@pytest.mark.parametrize("n_examples", [1, 2, 10**9])
def test_an_update_from_one_example_or_more_is_accepted_as_sent(n_examples):
    reply = train_result(n_examples)
    assert validate_reply(TRAIN, "site-a", reply) is reply


def test_an_evaluation_counts_zero_or_more_test_rows():
    empty = EvaluateResult("run-1", 4, "site-a", 0, {})
    assert validate_reply(EVALUATE, "site-a", empty) is empty
    with pytest.raises(ProtocolError, match="claims -3 test examples"):
        validate_reply(EVALUATE, "site-a", EvaluateResult("run-1", 4, "site-a", -3, {"r2": 1.0}))


@pytest.mark.parametrize(("buckets", "bits"), [(1025, 10), (10, 257), (1025, 257)])
def test_overlap_set_sizes_larger_than_the_sets_asked_for_are_refused(buckets, bits):
    task = ChemicalOverlapTask("run-1", 4, 1024, 256)
    with pytest.raises(ProtocolError, match="claims"):
        validate_reply(task, "site-a", ChemicalOverlapResult("run-1", 4, "site-a", buckets, bits))
    fits = ChemicalOverlapResult("run-1", 4, "site-a", 1024, 0)
    assert validate_reply(task, "site-a", fits) is fits
