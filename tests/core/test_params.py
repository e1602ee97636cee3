import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters, decode, encode

names = st.text(min_size=1, max_size=12)
arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    elements=st.floats(-1e6, 1e6, width=32),
)


@given(st.dictionaries(names, arrays, max_size=6))
def test_encode_decode_round_trip(named):
    params = Parameters(tuple(named), tuple(named.values()))
    decoded = decode(encode(params))
    assert decoded.names == params.names
    for a, b in zip(decoded.arrays, params.arrays, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@given(st.dictionaries(names, arrays, min_size=1, max_size=4))
def test_flatten_unflatten_round_trip(named):
    params = Parameters(tuple(named), tuple(named.values()))
    again = params.unflatten(params.flatten())
    assert again.same_structure(params)
    for a, b in zip(again.arrays, params.arrays, strict=True):
        np.testing.assert_array_equal(a, b)


@given(st.binary(max_size=200))
def test_decode_never_crashes_on_garbage(blob):
    with pytest.raises(ProtocolError):
        decode(blob)


def _sample():
    return Parameters.from_dict({"w": np.ones((2, 3)), "b": np.zeros(3)})


def test_truncated_and_trailing_payloads_are_rejected():
    blob = encode(_sample())
    with pytest.raises(ProtocolError, match="truncated"):
        decode(blob[:-1])
    with pytest.raises(ProtocolError, match="trailing"):
        decode(blob + b"\0")


def test_non_finite_values_are_rejected():
    bad = Parameters.from_dict({"w": np.array([1.0, np.nan])})
    with pytest.raises(ProtocolError, match="NaN or infinite"):
        decode(encode(bad))


def test_check_matches_names_the_wrong_shape():
    ref = _sample()
    wrong = Parameters.from_dict({"w": np.ones((3, 2)), "b": np.zeros(3)})
    with pytest.raises(ProtocolError, match="'w' has shape"):
        wrong.check_matches(ref)


def test_arrays_are_read_only():
    params = _sample()
    with pytest.raises(ValueError):
        params.arrays[0][0, 0] = 5.0


def test_non_float_dtype_cannot_be_encoded():
    params = Parameters(("i",), (np.arange(3),))
    with pytest.raises(ProtocolError, match="only float32/64"):
        encode(params)
