"""validate_reply: only a well-formed answer from the right site to this very task gets through.

Written against the survivors of `scripts/mutation.py messages` (README, Development notes).
"""

import numpy as np
import pytest

from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol.messages import (
    DescribeTask,
    DescriptionReply,
    EvaluateResult,
    EvaluateTask,
    FeatureStatisticsResult,
    FeatureStatisticsTask,
    LabelStatisticsResult,
    LabelStatisticsTask,
    Refusal,
    SecureReply,
    SecureTask,
    TrainResult,
    TrainTask,
    secure_mode,
    validate_reply,
)
from fedpharma.core.protocol.settings import CKKSSettings, SecAggSettings, TrainSettings

W = Parameters.from_dict({"w": np.zeros(2)})
TRAIN = TrainTask("run", 3, W)
EVALUATE = EvaluateTask("run", 3, W)
DESCRIBE = DescribeTask("run", 3)
SECAGG = TrainTask(
    "run",
    3,
    W,
    TrainSettings(
        secure=SecAggSettings(threshold=2, ring_bits=64, clip=1.0, max_sites=3, max_examples=9)
    ),
)
CKKS = TrainTask("run", 3, W, TrainSettings(secure=CKKSSettings(threshold=2, key_id="00" * 8)))
UNMASK = SecureTask("run", 3, "unmask", b"")


def _result(site="a", run_id="run", round_=3, n_examples=5, update=W):
    return TrainResult(run_id, round_, site, update, n_examples)


def _secure(phase):
    return SecureReply("run", 3, "a", phase, b"\x01")


@pytest.mark.parametrize(
    ("task", "reply"),
    [
        (TRAIN, _result()),
        (EVALUATE, EvaluateResult("run", 3, "a", 4, {"auc": 0.7})),
        (DESCRIBE, DescriptionReply("run", 3, "a", "{}")),
        (SECAGG, _secure("advertise")),
        (CKKS, _secure("encrypted_update")),
        (UNMASK, _secure("unmask")),
        *((task, Refusal("run", 3, "a", "policy", "no")) for task in (TRAIN, EVALUATE, DESCRIBE)),
        (SECAGG, Refusal("run", 3, "a", "policy", "no")),
        (UNMASK, Refusal("run", 3, "a", "policy", "no")),
    ],
)
def test_a_fitting_answer_is_returned_unchanged(task, reply):
    assert validate_reply(task, "a", reply) is reply


@pytest.mark.parametrize(
    ("task", "reply", "message"),
    [
        (TRAIN, EvaluateResult("run", 3, "a", 4), "a TrainTask was answered with a EvaluateResult"),
        (EVALUATE, _result(), "a EvaluateTask was answered with a TrainResult"),
        (DESCRIBE, _result(), "a DescribeTask was answered with a TrainResult"),
        (TRAIN, _secure("advertise"), "a TrainTask was answered with a SecureReply"),
        (SECAGG, _result(), "a TrainTask was answered with a TrainResult"),  # plaintext update
        (CKKS, _result(), "a TrainTask was answered with a TrainResult"),
        (UNMASK, _result(), "a SecureTask was answered with a TrainResult"),
        (DESCRIBE, EvaluateResult("run", 3, "a", 4), "answered with a EvaluateResult"),
    ],
)
def test_an_answer_of_the_wrong_kind_is_refused(task, reply, message):
    with pytest.raises(ProtocolError, match=message):
        validate_reply(task, "a", reply)


def test_an_answer_in_another_sites_name_is_refused():
    with pytest.raises(ProtocolError, match="site 'b' answered in the name of 'a'"):
        validate_reply(TRAIN, "b", _result(site="a"))


@pytest.mark.parametrize(
    ("run_id", "round_"), [("other-run", 3), ("run", 2), ("run", 4), ("other-run", 2)]
)
def test_an_answer_to_another_run_or_round_is_refused_as_stale(run_id, round_):
    expected = (
        f"answer is for run {run_id!r} round {round_}, expected run 'run' round 3 "
        r"\(stale or replayed\)"
    )
    with pytest.raises(ProtocolError, match=expected):
        validate_reply(TRAIN, "a", _result(run_id=run_id, round_=round_))


@pytest.mark.parametrize(
    ("task", "phase", "expected"),
    [
        (SECAGG, "encrypted_update", "advertise"),
        (CKKS, "advertise", "encrypted_update"),
        (UNMASK, "masked_input", "unmask"),
    ],
)
def test_a_secure_answer_in_the_wrong_phase_is_refused(task, phase, expected):
    with pytest.raises(
        ProtocolError, match=f"a '{expected}' secure task was answered in phase '{phase}'"
    ):
        validate_reply(task, "a", _secure(phase))


def test_an_update_for_another_model_is_refused_naming_the_site():
    wrong = Parameters.from_dict({"w": np.zeros(3)})
    with pytest.raises(ProtocolError, match=r"^update from 'a': parameter 'w' has shape"):
        validate_reply(TRAIN, "a", _result(update=wrong))


@pytest.mark.parametrize(
    ("task", "mode"),
    [
        (SECAGG, "secagg"),
        (CKKS, "ckks"),
        (TRAIN, None),
        (EVALUATE, None),
        (UNMASK, None),
    ],
)
def test_secure_mode_is_named_only_by_a_train_task_with_a_known_mode(task, mode):
    assert secure_mode(task) == mode


def test_label_statistics_are_accepted_only_as_the_answer_to_their_own_task():
    task = LabelStatisticsTask("run", 3)
    sums = LabelStatisticsResult("run", 3, "a", (4.0,), (2.0,), (1.5,))
    assert validate_reply(task, "a", sums) is sums
    with pytest.raises(ProtocolError, match="LabelStatisticsTask was answered with a Evaluate"):
        validate_reply(task, "a", EvaluateResult("run", 3, "a", 4, {}))
    with pytest.raises(ProtocolError, match="EvaluateTask was answered with a LabelStatistics"):
        validate_reply(EVALUATE, "a", sums)
    features = FeatureStatisticsTask("run", 3)
    column_sums = FeatureStatisticsResult("run", 3, "a", 4, (4.0,), (2.0,), (1.5,))
    assert validate_reply(features, "a", column_sums) is column_sums
    with pytest.raises(ProtocolError, match="FeatureStatisticsTask was answered with a Label"):
        validate_reply(features, "a", sums)
    with pytest.raises(ProtocolError, match="LabelStatisticsTask was answered with a Feature"):
        validate_reply(task, "a", column_sums)
