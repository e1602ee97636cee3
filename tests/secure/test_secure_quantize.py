"""Fixed-point quantization: ring sums never overflow and dequantize within the stated bound."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpharma.errors import CryptoError
from fedpharma.secure.quantize import FixedPoint

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
