"""Fixed-point quantization: ring sums never overflow and dequantize within the stated bound."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpharma.core.errors import CryptoError
from fedpharma.secure.quantize import _BLOCK, FixedPoint

site_updates = st.lists(
    st.lists(st.floats(-3.0, 3.0), min_size=5, max_size=5), min_size=1, max_size=8
)


def _ring_sum(vectors):
    total = np.zeros_like(vectors[0])
    for vector in vectors:
        total += vector
    return total


@settings(max_examples=60, deadline=None)
@given(updates=site_updates, bits=st.sampled_from([32, 64]), stochastic=st.booleans())
def test_dequantized_ring_sum_is_within_the_documented_bound_of_the_clipped_sum(
    updates, bits, stochastic
):
    codec = FixedPoint(bits=bits, clip=2.0, max_sites=8, max_examples=1000)
    rng = np.random.default_rng(0) if stochastic else None
    total = _ring_sum([codec.quantize(u, rng) for u in updates])
    clipped_sum = np.clip(np.array(updates), -2.0, 2.0).sum(axis=0)
    per_site_error = 1.0 if stochastic else 0.5
    bound = len(updates) * per_site_error / codec.scale
    # float64 cannot resolve 64-bit levels exactly; allow its relative precision on top
    assert np.all(np.abs(codec.dequantize(total) - clipped_sum) <= bound + 1e-15 * 2.0 * 8)


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("extreme", [-1.0, 1.0])
def test_sum_of_max_sites_extreme_values_equals_the_integer_sum_without_overflow(bits, extreme):
    codec = FixedPoint(bits=bits, clip=0.5, max_sites=7)
    encoded = [codec.quantize(np.full(3, extreme * 10.0)) for _ in range(codec.max_sites)]
    signed = np.int64 if bits == 64 else np.int32
    integer_sum = sum(int(e.view(signed)[0]) for e in encoded)
    bound = codec.max_sites * codec.max_level
    assert bound * (1 - 1e-15) <= abs(integer_sum) <= bound < 2 ** (bits - 1)
    assert int(_ring_sum(encoded).view(signed)[0]) == integer_sum
    assert codec.dequantize(_ring_sum(encoded))[0] == pytest.approx(extreme * 0.5 * 7)


def test_stochastic_rounding_is_unbiased():
    codec = FixedPoint(bits=32, clip=1.0, max_sites=2**20, max_examples=1)  # 1/scale ≈ 4.9e-4
    value = 0.3 / codec.scale + 7 / codec.scale  # 7.3 quanta
    draws = codec.quantize(np.full(100_000, value), np.random.default_rng(1))
    assert codec.dequantize(draws).mean() == pytest.approx(value, rel=1e-3)
    nearest = codec.dequantize(codec.quantize(np.array([value])))[0]
    assert nearest == pytest.approx(7 / codec.scale)


def test_weighted_encoding_decodes_to_the_fedavg_mean_and_total_count():
    codec = FixedPoint(bits=32, clip=1.0, max_sites=10, max_examples=10_000)
    rng = np.random.default_rng(2)
    updates = rng.uniform(-1, 1, size=(5, 50))
    counts = [10, 200, 3000, 10_000, 1]
    total = _ring_sum([codec.encode_weighted(u, n) for u, n in zip(updates, counts, strict=True)])
    mean, total_examples = codec.decode_weighted_mean(total)
    expected = (updates * np.array(counts)[:, None]).sum(axis=0) / sum(counts)
    bound = len(counts) * codec.max_examples / (2 * codec.scale * sum(counts))
    assert total_examples == sum(counts)
    assert np.all(np.abs(mean - expected) <= bound)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bits": 16},
        {"clip": 0.0},
        {"clip": float("inf")},
        {"max_sites": 0},
        {"bits": 32, "max_sites": 1000, "max_examples": 10**7},
    ],
)
def test_invalid_codecs_are_refused(kwargs):
    with pytest.raises(CryptoError):
        FixedPoint(**kwargs)


def test_bad_inputs_are_refused():
    codec = FixedPoint()
    with pytest.raises(CryptoError, match="NaN"):
        codec.quantize([0.0, float("nan")])
    with pytest.raises(CryptoError, match="max_examples"):
        codec.encode_weighted([0.0], codec.max_examples + 1)
    with pytest.raises(CryptoError, match="dtype"):
        codec.dequantize(np.zeros(3, dtype=np.uint64))
    with pytest.raises(CryptoError, match="not positive"):
        codec.decode_weighted_mean(np.zeros(3, dtype=np.uint32))


# ----- vectors spanning several quantizer blocks -------------------------------------------

LENGTH = 3 * _BLOCK + 17  # three full blocks and a partial one


def _reference(codec: FixedPoint, values: np.ndarray, weight: float) -> np.ndarray:
    """round(clip(x) · weight · scale), clamped to ±L, in two's complement: the whole vector at
    once, in Python integers for the clamp (no float64 limit on L)."""
    scaled = np.rint(np.clip(values, -codec.clip, codec.clip) * (weight * codec.scale))
    integers = [max(-codec.max_level, min(codec.max_level, int(v))) for v in scaled]
    return np.array([i % codec.modulus for i in integers], dtype=np.uint64).astype(codec.dtype)


@pytest.mark.parametrize("bits", [32, 64])
def test_blockwise_encoding_equals_the_whole_vector_reference(bits):
    codec = FixedPoint(bits=bits, clip=0.5, max_sites=7, max_examples=1000)
    values = np.random.default_rng(1).normal(0.0, 0.4, LENGTH)  # about 20 % beyond the clip
    np.testing.assert_array_equal(codec.quantize(values), _reference(codec, values, 1.0))
    encoded = codec.encode_weighted(values, 250)
    assert encoded.shape == (LENGTH + 1,) and encoded[-1] == 250
    np.testing.assert_array_equal(encoded[:-1], _reference(codec, values, 0.25))


def test_stochastic_rounding_is_unbiased_and_within_one_step_across_blocks():
    codec = FixedPoint(bits=32, clip=1.0, max_sites=10)
    values = np.random.default_rng(2).uniform(-1.0, 1.0, LENGTH)
    quantized = codec.quantize(values, np.random.default_rng(3)).view(np.int32)
    error = quantized - values * codec.scale
    assert np.all((error > -1.0) & (error < 1.0))
    # E[q] = x · scale; the rounding error's mean over ~10^5 values has σ ≤ 0.5 / √10^5 ≈ 0.0016
    assert abs(float(error.mean())) < 0.01
    again = codec.quantize(values, np.random.default_rng(3)).view(np.int32)
    np.testing.assert_array_equal(quantized, again)


@pytest.mark.parametrize("bits", [32, 64])
def test_the_largest_value_encodes_as_plus_l_even_when_float64_cannot_hold_l(bits):
    # bits=64, max_sites=1: L = 2^63 − 1 rounds up to 2^63 in float64, which overflowed int64
    codec = FixedPoint(bits=bits, clip=1.0, max_sites=1, max_examples=1)
    signed = np.int64 if bits == 64 else np.int32
    top, bottom = codec.quantize([1.0, -1.0]).view(signed)
    assert 0 < top <= codec.max_level and top == -bottom
    assert codec.max_level - top < 2 ** (bits - 53)  # at most float64's spacing below L
    np.testing.assert_allclose(codec.dequantize(codec.quantize([1.0, -1.0])), [1.0, -1.0])


def test_decoding_a_sum_gives_the_weighted_mean_over_several_blocks():
    codec = FixedPoint(bits=32, clip=1.0, max_sites=4, max_examples=10_000)
    rng = np.random.default_rng(4)
    updates, counts = rng.uniform(-1.0, 1.0, (4, LENGTH)), (10, 200, 3_000, 10_000)
    total = np.zeros(LENGTH + 1, dtype=np.uint32)
    for update, count in zip(updates, counts, strict=True):
        total += codec.encode_weighted(update, count)
    mean, n_examples = codec.decode_weighted_mean(total)
    weights = np.array(counts, dtype=float)
    expected = (updates * weights[:, None]).sum(axis=0) / weights.sum()
    assert n_examples == sum(counts)
    bound = len(counts) * codec.max_examples / (2 * codec.scale * n_examples)
    assert np.max(np.abs(mean - expected)) <= bound
