"""What a task can legitimately be answered with: honest answers of every kind fit their
bound, and the bound is the model's size (plus a header), not the 2 GiB payload limit."""

import numpy as np
import pytest

from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    CKKSSettings,
    DescribeTask,
    EvaluateResult,
    EvaluateTask,
    SecAggSettings,
    SecureReply,
    SecureTask,
    TrainResult,
    TrainSettings,
    TrainTask,
)
from fedpharma.core.protocol.codec import encode_message
from fedpharma.secure.secagg.messages import MaskedInput
from fedpharma.transport.grpc.bounds import REPLY_HEADER_BYTES, check_update, reply_bound

LIMIT = 2 << 30
MODEL = Parameters.from_dict({"w": np.ones((300, 1000)), "b": np.zeros(7)})


def update(dtype="float32", model=MODEL):
    arrays = tuple(a.astype(dtype) for a in model.arrays)
    return TrainResult("r", 1, "s", Parameters(model.names, arrays), 10, {"loss": 0.1})


def test_a_plaintext_update_is_bounded_by_the_model_and_its_structure_checked():
    bound = reply_bound(TrainTask("r", 1, MODEL), None, LIMIT)
    honest = len(encode_message(update()))
    assert honest <= bound.max_bytes <= honest + REPLY_HEADER_BYTES
    assert len(encode_message(update("float64"))) > bound.max_bytes  # twice the model
    check_update(update(), bound, "s")
    tiny = Parameters.from_dict({"w": [1.0], "b": [0.0]})
    with pytest.raises(ProtocolError, match="float64"):  # fits the header room, not the dtype
        check_update(
            update("float64", tiny), reply_bound(TrainTask("r", 1, tiny), None, LIMIT), "s"
        )
    with pytest.raises(ProtocolError, match="shape"):
        check_update(
            update(model=Parameters.from_dict({"w": np.ones(3), "b": np.zeros(7)})), bound, "s"
        )


def test_evaluation_and_description_answers_are_a_header_at_most():
    for task in (EvaluateTask("r", 1, MODEL), DescribeTask("r", 0)):
        bound = reply_bound(task, None, LIMIT)
        assert bound.max_bytes == REPLY_HEADER_BYTES and bound.model is None
    assert len(encode_message(EvaluateResult("r", 1, "s", 5, {"rmse": 1.0}))) < REPLY_HEADER_BYTES


def test_a_64_bit_masked_input_of_the_model_fits_its_phase():
    task = SecureTask("r", 1, "masked_input", b"\0" * 500)
    bound = reply_bound(task, MODEL.size, LIMIT)
    masked = MaskedInput("r", 1, "s", 64, np.zeros(MODEL.size, np.uint64).tobytes()).to_bytes()
    reply = SecureReply("r", 1, "s", "masked_input", masked)
    assert len(encode_message(reply)) <= bound.max_bytes < REPLY_HEADER_BYTES + 9 * MODEL.size
    assert reply_bound(task, None, LIMIT).max_bytes == LIMIT  # no model known: the global limit


SECAGG = SecAggSettings(threshold=2, ring_bits=64, clip=1.0, max_sites=3, max_examples=100)


def test_a_ckks_encrypted_update_of_the_model_fits_its_bound():
    ckks = pytest.importorskip("fedpharma.secure.ckks")
    pytest.importorskip("tenseal")
    small = Parameters.from_dict({"w": np.ones(5000) * 0.01})
    encrypted = ckks.create_secret_context().encrypt_update(small.flatten(), 10).to_bytes()
    reply = SecureReply("r", 1, "s", "encrypted_update", encrypted)
    bound = reply_bound(
        TrainTask("r", 1, small, TrainSettings(secure=CKKSSettings(threshold=2, key_id="00" * 8))),
        None,
        LIMIT,
    )
    assert len(encode_message(reply)) <= bound.max_bytes < 4 << 20
    secagg = reply_bound(TrainTask("r", 1, small, TrainSettings(secure=SECAGG)), None, LIMIT)
    assert secagg.max_bytes == REPLY_HEADER_BYTES
