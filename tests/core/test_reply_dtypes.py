"""``validate_reply``: an update travels in exactly the model's dtypes, on every channel (the
gRPC push checks it too, ``transport/grpc/bounds.py``), wider or narrower."""

import numpy as np
import pytest

from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import TrainResult, TrainTask
from fedpharma.core.protocol.codec import decode_message, encode_message
from fedpharma.core.protocol.messages import validate_reply


def task(dtype):
    model = Parameters(("w", "b"), (np.zeros(3, dtype=dtype), np.zeros(2, dtype=dtype)))
    return TrainTask("run-1", 1, model)


def reply(dtypes):
    arrays = tuple(np.ones(n, dtype=d) for n, d in zip((3, 2), dtypes, strict=True))
    result = TrainResult("run-1", 1, "site-m", Parameters(("w", "b"), arrays), 5)
    return decode_message(encode_message(result))  # as it arrives


@pytest.mark.parametrize(
    ("model", "sent"),
    [
        (np.float32, (np.float64, np.float32)),
        (np.float32, (np.float32, np.float64)),
        (np.float64, (np.float32, np.float64)),
    ],
)
def test_an_update_in_another_dtype_is_rejected_naming_the_site_and_parameter(model, sent):
    with pytest.raises(ProtocolError) as caught:
        validate_reply(task(model), "site-m", reply(sent))
    assert "update from 'site-m'" in str(caught.value)
    assert "the model sent is" in str(caught.value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_update_in_the_model_s_dtypes_is_accepted(dtype):
    validate_reply(task(dtype), "site-m", reply((dtype, dtype)))
