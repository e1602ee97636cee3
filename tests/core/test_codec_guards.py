"""The message codec's guards, each with the message it gives; secure messages; the header format.

Written against the survivors of `scripts/mutation.py codec` (README, Development notes).
"""

import json
import struct

import numpy as np
import pytest

from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    PROTOCOL_VERSION,
    EvaluateResult,
    Refusal,
    SecureReply,
    SecureTask,
    TrainResult,
    TrainTask,
)
from fedpharma.core.protocol.codec import MAX_HEADER_BYTES, decode_message, encode_message

REFUSAL = {"type": "Refusal", "run_id": "r", "round": 1, "site": "s", "kind": "k", "reason": "x"}


def _forge(header, tail=b"", header_len=None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(raw) if header_len is None else header_len
    return b"FPM1" + struct.pack("<I", length) + raw + tail


def _versioned(**fields):
    return {"version": PROTOCOL_VERSION} | fields


def test_the_header_format_is_pinned_byte_for_byte():
    # a change here breaks every peer that runs an older fedpharma: bump PROTOCOL_VERSION
    raw = (
        b'{"type":"Refusal","version":2,"run_id":"r","round":2,"site":"s",'
        b'"kind":"policy","reason":"no"}'
    )
    assert encode_message(Refusal("r", 2, "s", "policy", "no")) == (
        b"FPM1" + struct.pack("<I", len(raw)) + raw
    )


@pytest.mark.parametrize(
    "message",
    [
        SecureTask("run", 4, "share_keys", b"\x00roster\xff"),
        SecureReply("run", 4, "site-a", "masked_input", bytes(range(256))),
        SecureReply("run", 4, "site-a", "advertise", b""),
    ],
)
def test_secure_messages_carry_their_payload_bytes_exactly(message):
    assert decode_message(encode_message(message)) == message


def test_a_task_without_settings_is_refused_and_metrics_default_to_empty():
    params = Parameters.from_dict({"w": np.zeros(1)})
    tail = encode_message(TrainTask("r", 1, params))
    header_len = struct.unpack("<I", tail[4:8])[0]
    header = json.loads(tail[8 : 8 + header_len])
    del header["settings"]
    with pytest.raises(ProtocolError, match=r"^TrainTask lacks field 'settings'"):
        decode_message(_forge(header, tail[8 + header_len :]))
    result = decode_message(
        _forge(_versioned(type="EvaluateResult", run_id="r", round=1, site="s", n_examples=2))
    )
    assert result == EvaluateResult("r", 1, "s", 2, {})


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"FPM2" + bytes(8), "^message does not start with the FPM1 magic bytes"),
        (b"XXXXXXXXXXXX", "^message does not start with the FPM1 magic bytes"),
        (b"FPM1\0\0\0", "^message does not start with the FPM1 magic bytes"),
        (b"FPM1" + struct.pack("<I", 0), "^message header is not valid JSON"),  # exactly 8 bytes
        (_forge(b"{}", header_len=3), "^message header is truncated or oversized"),
        (_forge(b"{}", header_len=0xFFFFFFFF), "^message header is truncated or oversized"),
        (_forge(b"{]"), "^message header is not valid JSON"),
        (_forge(b"\xff\xfe"), "^message header is not valid JSON"),
        (_forge([1, 2]), "^message header must be a JSON object"),
        (
            _forge({"type": "Refusal"}),
            f"^message uses protocol version None, this side speaks {PROTOCOL_VERSION}; "
            "upgrade the older side$",
        ),
        (_forge(_versioned(site="s")), "^unknown message type; expected one of "),
        (_forge(_versioned(**REFUSAL) | {"run_id": 7}), "^Refusal.run_id must be a string$"),
        (_forge(_versioned(**REFUSAL) | {"round": "3"}), "^Refusal.round must be a non-negative"),
        (_forge(_versioned(**REFUSAL) | {"round": True}), "^Refusal.round must be a non-negative"),
        (_forge(_versioned(**REFUSAL), b"\0"), "^Refusal carries unexpected trailing bytes$"),
        (
            _forge(_versioned(type="SecureTask", run_id="r", round=1, phase="gossip")),
            r"^SecureTask.phase must be one of \('advertise'",
        ),
        (
            _forge(_versioned(type="SecureTask", run_id="r", round=1, phase=3)),
            "^SecureTask.phase must be a string$",
        ),
    ],
)
def test_each_malformed_message_is_refused_with_what_is_wrong(blob, message):
    with pytest.raises(ProtocolError, match=message):
        decode_message(blob)


def test_an_oversized_header_is_refused_even_when_the_bytes_are_there():
    with pytest.raises(ProtocolError, match=r"^message header is truncated or oversized$"):
        decode_message(_forge(b" " * (MAX_HEADER_BYTES + 1)))


def test_a_header_of_exactly_the_largest_size_is_read():
    raw = json.dumps(_versioned(**REFUSAL)).encode().ljust(MAX_HEADER_BYTES, b" ")
    assert decode_message(_forge(raw)) == Refusal("r", 1, "s", "k", "x")


@pytest.mark.parametrize(
    "settings", [[], {"local": [1]}, {"local": {"epochs": None}}, {"locale": {"epochs": 1}}]
)
def test_task_settings_that_are_not_the_typed_settings_are_refused(settings):
    params = Parameters.from_dict({"w": np.zeros(1)})
    encoded = encode_message(TrainTask("r", 1, params))
    header_len = struct.unpack("<I", encoded[4:8])[0]
    header = json.loads(encoded[8 : 8 + header_len]) | {"settings": settings}
    with pytest.raises(ProtocolError, match=r"^TrainTask.settings: "):
        decode_message(_forge(header, encoded[8 + header_len :]))


def test_metrics_name_the_field_that_is_wrong():
    params = Parameters.from_dict({"w": np.zeros(1)})
    encoded = encode_message(TrainResult("r", 1, "s", params, 3))
    header_len = struct.unpack("<I", encoded[4:8])[0]
    header = json.loads(encoded[8 : 8 + header_len]) | {"metrics": {"auc": True}}
    with pytest.raises(ProtocolError, match=r"^TrainResult.metrics must map names to finite"):
        decode_message(_forge(header, encoded[8 + header_len :]))
