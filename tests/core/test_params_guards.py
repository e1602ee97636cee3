"""The parameter codec's guards, each with the message it gives, and the wire format pinned.

Written against the survivors of `scripts/mutation.py params` (README, Development notes).
"""

import json
import re
import struct

import numpy as np
import pytest

from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import MAGIC, MAX_ARRAYS, MAX_HEADER_BYTES, Parameters, decode, encode


def _payload(entries, data=b"", header_len=None):
    header = json.dumps(entries).encode() if not isinstance(entries, bytes) else entries
    length = len(header) if header_len is None else header_len
    return MAGIC + struct.pack("<I", length) + header + data


def test_the_wire_format_is_pinned_byte_for_byte():
    # a change here breaks every site that runs an older fedpharma: bump the magic instead
    params = Parameters.from_dict({"w": [1.0, -2.0]})
    header = b'[{"name":"w","dtype":"<f4","shape":[2]}]'
    values = np.array([1.0, -2.0], dtype="<f4").tobytes()
    assert encode(params) == MAGIC + struct.pack("<I", len(header)) + header + values


def test_big_endian_arrays_travel_little_endian():
    big = np.array([[1.5, -3.0]], dtype=">f8")
    decoded = decode(encode(Parameters(("w",), (big,))))
    assert decoded.arrays[0].dtype == np.dtype("<f8")
    np.testing.assert_array_equal(decoded.arrays[0], big)


def test_a_scalar_parameter_round_trips():
    scalar = np.array(0.25, dtype=np.float32)
    decoded = decode(encode(Parameters(("temperature",), (scalar,))))
    assert decoded.arrays[0].shape == () and decoded.arrays[0] == scalar


def test_decoded_arrays_are_views_of_the_payload_not_copies():
    blob = bytearray(encode(Parameters.from_dict({"w": np.arange(4.0)})))
    decoded = decode(blob)
    assert np.shares_memory(decoded.arrays[0], np.frombuffer(blob, dtype=np.uint8))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"FPP2" + bytes(8), "parameter payload does not start with the FPP1 magic bytes"),
        (MAGIC + b"\0\0\0", "parameter payload does not start with the FPP1 magic bytes"),
        (
            MAGIC + struct.pack("<I", 0),
            "parameter payload header is not valid JSON",
        ),  # exactly 8 bytes
        (_payload(b"[]", header_len=3), "parameter payload header is truncated or oversized"),
        (
            _payload(b"[]", header_len=0xFFFFFFFF),
            "parameter payload header is truncated or oversized",
        ),
        (_payload(b"[}"), "parameter payload header is not valid JSON"),
        (_payload(b"\xff\xfe"), "parameter payload header is not valid JSON"),
        (_payload({"w": 1}), "parameter payload header must be a list of array descriptors"),
        (
            _payload([{"dtype": "<f4", "shape": [1]}], bytes(4)),
            "malformed array descriptor in parameter payload: ",
        ),
        (
            _payload([{"name": 5, "dtype": "<f4", "shape": [1]}], bytes(4)),
            "malformed array descriptor in parameter payload: ",
        ),
        (
            _payload([{"name": "w", "dtype": "<i8", "shape": [1]}], bytes(8)),
            "malformed array descriptor in parameter payload: ",
        ),
        (
            _payload([{"name": "w", "dtype": "<f4", "shape": 3}], bytes(12)),
            "malformed array descriptor in parameter payload: ",
        ),
        (
            _payload([{"name": "w", "dtype": "<f4", "shape": {}}], bytes(4)),
            "malformed array descriptor in parameter payload: ",
        ),
        (_payload(["w"]), "malformed array descriptor in parameter payload: "),
        (
            _payload([{"name": "w", "dtype": "<f4", "shape": [2]}], bytes(4)),
            "parameter payload is truncated inside array 'w'",
        ),
        (
            _payload([{"name": "w", "dtype": "<f4", "shape": [1]}], bytes(7)),
            "parameter payload has 3 trailing bytes",
        ),
        (
            _payload([{"name": "w", "dtype": "<f4", "shape": [1]}] * 2, bytes(8)),
            "invalid parameter payload: parameter names must be unique",
        ),
        (
            _payload([{"name": "w", "dtype": "<f4", "shape": [1]}], b"\0\0\xc0\x7f"),
            "parameter payload: parameter 'w' holds NaN or infinite values",
        ),
    ],
)
def test_each_malformed_payload_is_refused_with_what_is_wrong(payload, message):
    with pytest.raises(ProtocolError, match=r"^" + re.escape(message)):
        decode(payload)


@pytest.mark.parametrize("dimension", [-1, True, 1.0])
def test_array_dimensions_must_be_non_negative_integers(dimension):
    # a negative dimension would let a crafted payload read header bytes as data
    entry = {"name": "w", "dtype": "<f4", "shape": [dimension, 1]}
    with pytest.raises(
        ProtocolError, match=r"^(malformed array descriptor|array 'w') in parameter payload"
    ):
        decode(_payload([entry], bytes(4)))


def test_an_oversized_header_is_refused_even_when_the_bytes_are_there():
    payload = _payload(b" " * (MAX_HEADER_BYTES + 1))
    with pytest.raises(ProtocolError, match=r"^parameter payload header is truncated or oversized"):
        decode(payload)


def test_a_header_of_exactly_the_largest_size_is_read():
    header = b"[]".ljust(MAX_HEADER_BYTES, b" ")
    assert len(decode(_payload(header))) == 0


def test_the_largest_number_of_arrays_is_read_and_one_more_is_refused():
    entries = [{"name": f"p{i}", "dtype": "<f4", "shape": [0]} for i in range(MAX_ARRAYS)]
    assert len(decode(_payload(entries))) == MAX_ARRAYS
    entries.append({"name": "one-more", "dtype": "<f4", "shape": [0]})
    with pytest.raises(ProtocolError, match=r"^parameter payload header must be a list of array"):
        decode(_payload(entries))


def test_structure_errors_say_what_differs():
    with pytest.raises(ValueError, match=r"^names and arrays differ in length$"):
        Parameters(("a", "b"), (np.zeros(1),))
    with pytest.raises(ValueError, match=r"^parameter names must be unique$"):
        Parameters(("a", "a"), (np.zeros(1), np.zeros(1)))
    with pytest.raises(ValueError, match=r"^vector has shape \(2,\), expected \(3,\)$"):
        Parameters.from_dict({"w": np.zeros(3)}).unflatten(np.zeros(2))


def test_from_dict_stores_float32_whatever_the_input():
    params = Parameters.from_dict({"w": [1, 2], "b": np.zeros(2)})
    assert [a.dtype for a in params.arrays] == [np.float32, np.float32]
    decode(encode(params))  # integers would not travel


def test_to_dict_maps_each_name_to_its_array():
    w, b = np.ones((2, 2), dtype=np.float32), np.zeros(2, dtype=np.float32)
    out = Parameters(("w", "b"), (w, b)).to_dict()
    assert list(out) == ["w", "b"] and out["w"] is w and out["b"] is b


def test_flatten_of_no_parameters_is_an_empty_vector():
    assert Parameters((), ()).flatten().shape == (0,)


def test_unflatten_restores_each_arrays_dtype():
    params = Parameters(("a", "b"), (np.zeros(2, np.float32), np.zeros(1, np.float64)))
    again = params.unflatten(np.arange(3.0))
    assert [a.dtype for a in again.arrays] == [np.float32, np.float64]
    np.testing.assert_array_equal(again.arrays[0], [0.0, 1.0])


def test_minus_is_the_elementwise_difference_in_the_same_dtype():
    local = Parameters(("w", "b"), (np.array([3.0, 5.0], np.float32), np.array([1.0])))
    base = Parameters(("w", "b"), (np.array([1.0, 1.0], np.float32), np.array([4.0])))
    delta = local.minus(base)
    assert delta.names == ("w", "b")
    assert delta.arrays[0].dtype == np.float32
    np.testing.assert_array_equal(delta.arrays[0], [2.0, 4.0])
    np.testing.assert_array_equal(delta.arrays[1], [-3.0])


def test_minus_refuses_parameters_of_another_structure():
    a = Parameters.from_dict({"w": np.zeros(2)})
    with pytest.raises(ValueError, match=r"^parameters differ in names or shapes$"):
        a.minus(Parameters.from_dict({"w": np.zeros(3)}))
    with pytest.raises(ValueError, match=r"^parameters differ in names or shapes$"):
        a.minus(Parameters.from_dict({"v": np.zeros(2)}))


def test_same_names_with_other_shapes_are_not_the_same_structure():
    a = Parameters.from_dict({"w": np.zeros(2)})
    assert not a.same_structure(Parameters.from_dict({"w": np.zeros((2, 1))}))
    assert not a.same_structure(Parameters.from_dict({"v": np.zeros(2)}))
    assert a.same_structure(Parameters.from_dict({"w": np.ones(2)}))


def test_check_matches_names_missing_and_unexpected_parameters():
    reference = Parameters.from_dict({"w": np.zeros(2), "b": np.zeros(1)})
    update = Parameters.from_dict({"w": np.zeros(2), "c": np.zeros(1)})
    with pytest.raises(ProtocolError) as raised:
        update.check_matches(reference)
    assert str(raised.value) == (
        "update has different parameter names (missing ['b'], unexpected ['c']); "
        "the site must train the model the coordinator sent"
    )


def test_check_matches_refuses_non_finite_values_in_the_callers_words():
    reference = Parameters.from_dict({"w": np.zeros(2)})
    update = Parameters.from_dict({"w": [0.0, np.inf]})
    with pytest.raises(ProtocolError, match=r"^update from 'a': parameter 'w' holds NaN"):
        update.check_matches(reference, what="update from 'a'")
    with pytest.raises(ProtocolError, match=r"^update: parameter 'w' holds NaN"):
        update.check_matches(reference)
