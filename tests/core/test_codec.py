import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedpharma.errors import ProtocolError
from fedpharma.params import Parameters
from fedpharma.protocol import (
    PROTOCOL_VERSION,
    DescribeTask,
    DescriptionReply,
    EvaluateResult,
    EvaluateTask,
    Refusal,
    TrainResult,
    TrainTask,
)
from fedpharma.protocol.codec import decode_message, encode_message

PARAMS = Parameters.from_dict({"w": np.arange(6.0).reshape(2, 3), "b": np.ones(3)})
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
text = st.text(max_size=20)


def _same(a, b):
    assert type(a) is type(b)
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, Parameters):
            assert x.names == y.names
            for p, q in zip(x.arrays, y.arrays, strict=True):
                np.testing.assert_array_equal(p, q)
        else:
            assert x == y


@given(text, st.integers(0, 10_000), st.dictionaries(text, st.one_of(finite, st.booleans(), text)))
def test_tasks_round_trip(run_id, rnd, config):
    for cls in (TrainTask, EvaluateTask):
        message = cls(run_id, rnd, PARAMS, config)
        _same(decode_message(encode_message(message)), message)


@given(text, st.integers(0, 10_000), text, st.integers(1, 10**9), st.dictionaries(text, finite))
def test_results_round_trip(run_id, rnd, site, n, metrics):
    for message in (
        TrainResult(run_id, rnd, site, PARAMS, n, metrics),
        EvaluateResult(run_id, rnd, site, n, metrics),
        Refusal(run_id, rnd, site, "policy", "not approved"),
    ):
        _same(decode_message(encode_message(message)), message)


@given(text, st.integers(0, 10_000), text, st.text(max_size=2000))
def test_join_messages_round_trip(run_id, rnd, site, description):
    for message in (DescribeTask(run_id, rnd), DescriptionReply(run_id, rnd, site, description)):
        _same(decode_message(encode_message(message)), message)


def _forge(header: dict, tail: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return b"FPM1" + struct.pack("<I", len(raw)) + raw + tail


def test_other_protocol_version_names_both_versions():
    blob = _forge({"type": "Refusal", "version": 99})
    with pytest.raises(ProtocolError, match=f"version 99.*speaks {PROTOCOL_VERSION}"):
        decode_message(blob)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ({"type": "Evil"}, "unknown message type"),
        ({"type": "Refusal", "run_id": "r", "round": 1, "site": "s", "kind": "k"}, "lacks"),
        (
            {"type": "EvaluateResult", "run_id": "r", "round": -1, "site": "s", "n_examples": 1},
            "non-negative integer",
        ),
        (
            {"type": "EvaluateResult", "run_id": 3, "round": 1, "site": "s", "n_examples": 1},
            "must be a string",
        ),
        (
            {
                "type": "EvaluateResult",
                "run_id": "r",
                "round": 1,
                "site": "s",
                "n_examples": 1,
                "metrics": {"auc": "high"},
            },
            "finite numbers",
        ),
        (
            {
                "type": "Refusal",
                "run_id": "r",
                "round": 1,
                "site": "s",
                "kind": "k",
                "reason": "x",
                "extra": 1,
            },
            "unexpected fields",
        ),
        (
            {"type": "DescriptionReply", "run_id": "r", "round": 0, "site": "s"},
            "lacks field 'description'",
        ),
        (
            {
                "type": "DescriptionReply",
                "run_id": "r",
                "round": 0,
                "site": "s",
                "description": {"radius": 2},
            },
            "description must be a string",
        ),
    ],
)
def test_malformed_headers_are_rejected(header, match):
    with pytest.raises(ProtocolError, match=match):
        decode_message(_forge({"version": PROTOCOL_VERSION} | header))


def test_non_finite_metric_cannot_be_sent():
    with pytest.raises(ProtocolError, match="non-finite"):
        encode_message(EvaluateResult("r", 1, "s", 3, {"auc": float("nan")}))


def test_truncated_update_is_rejected():
    blob = encode_message(TrainResult("r", 1, "s", PARAMS, 5))
    with pytest.raises(ProtocolError, match="truncated"):
        decode_message(blob[:-3])
