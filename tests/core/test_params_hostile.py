"""``params.decode`` on crafted payloads: a header that lies about shapes must never make the
decoder read bytes that are not the array's own (the header, another array's data)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import MAGIC, Parameters, decode, encode


def crafted(entries: list[dict[str, object]], data: bytes) -> bytes:
    header = json.dumps(entries).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + data


@pytest.mark.parametrize("shape", [[-1], [2, -3], [-2, -2], [0, -1], [-(2**40)]])
def test_a_negative_dimension_is_refused_with_the_array_named(shape):
    # With 16 bytes of data present, a decoder that multiplied the dimensions (-2·-2 = 4) or
    # stepped its offset back by a negative byte count would find "enough" data to read.
    entries = [{"name": "w", "dtype": "<f4", "shape": shape}]
    payload = crafted(entries, np.arange(4, dtype="<f4").tobytes())
    with pytest.raises(ProtocolError, match=r"'w' in parameter payload has a negative dimension"):
        decode(payload, require_finite=False)


def test_a_negative_dimension_cannot_make_the_next_array_read_the_header():
    # "a" claims -1 elements (-4 bytes): a decoder that trusted it would step back into the
    # header and serve its last 4 bytes as the values of "b", with nothing left over.
    entries = [
        {"name": "a", "dtype": "<f4", "shape": [-1]},
        {"name": "b", "dtype": "<f4", "shape": [1]},
    ]
    with pytest.raises(ProtocolError, match="negative dimension"):
        decode(crafted(entries, b""), require_finite=False)


@pytest.mark.parametrize("shape", [[2**62, 2**62], [10**30], [2**31, 2**31, 4]])
def test_a_dimension_too_large_for_the_payload_is_refused_as_truncated(shape):
    # The products overflow a 64-bit integer (to 0 or a small number): they must not wrap.
    entries = [{"name": "w", "dtype": "<f8", "shape": shape}]
    with pytest.raises(ProtocolError, match="truncated inside array 'w'"):
        decode(crafted(entries, b"\0" * 64), require_finite=False)


@pytest.mark.parametrize("shape", [[1.0], [True], ["2"], [None], 3])
def test_a_dimension_that_is_not_an_integer_is_refused(shape):
    entries = [{"name": "w", "dtype": "<f4", "shape": shape}]
    with pytest.raises(ProtocolError, match="malformed array descriptor"):
        decode(crafted(entries, b"\0" * 4), require_finite=False)


def test_empty_arrays_are_legitimate_and_round_trip():
    params = Parameters.from_dict({"none": np.zeros((0,)), "rows": np.zeros((3, 0)), "x": [1.5]})
    decoded = decode(encode(params))
    assert decoded.shapes == ((0,), (3, 0), (1,))
    assert decoded.arrays[2].tolist() == [1.5]


def test_each_array_reads_exactly_its_own_bytes():
    entries = [
        {"name": "a", "dtype": "<f4", "shape": [2]},
        {"name": "b", "dtype": ">f8", "shape": [1]},
    ]
    with pytest.raises(ProtocolError, match="malformed"):  # big-endian never travels
        decode(crafted(entries, b"\0" * 16))
    entries[1]["dtype"] = "<f8"
    data = np.array([1, 2], "<f4").tobytes() + np.array([3], "<f8").tobytes()
    decoded = decode(crafted(entries, data))
    assert decoded.to_dict()["a"].tolist() == [1.0, 2.0]
    assert decoded.to_dict()["b"].tolist() == [3.0]
