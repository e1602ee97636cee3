"""The fixed-point codec's limits: exactly at each bound it works, one past it is refused with why.

Written against the survivors of `scripts/mutation.py quantize` (README, Development notes).
"""

import numpy as np
import pytest

from fedpharma.core.errors import CryptoError
from fedpharma.secure.quantize import FixedPoint


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"bits": 16}, "bits must be 32 or 64, got 16"),
        ({"clip": 0.0}, "clip must be a finite number > 0, got 0.0"),
        ({"clip": -1.0}, "clip must be a finite number > 0, got -1.0"),
        ({"clip": float("nan")}, "clip must be a finite number > 0, got nan"),
        ({"max_sites": 0}, "max_sites and max_examples must be ≥ 1"),
        ({"max_examples": 0}, "max_sites and max_examples must be ≥ 1"),
        (
            {"bits": 32, "max_sites": 2, "max_examples": 2**30},
            "max_sites · max_examples = 2147483648 does not fit the 32-bit ring's example-count "
            "coordinate; use bits=64 or lower a bound",
        ),
    ],
)
def test_an_impossible_codec_is_refused_saying_why(kwargs, problem):
    with pytest.raises(CryptoError) as raised:
        FixedPoint(**kwargs)
    assert str(raised.value) == "invalid fixed-point codec: " + problem


def test_every_problem_of_a_codec_is_reported_at_once():
    with pytest.raises(CryptoError, match=r"bits must be 32 or 64, got 8; clip must be"):
        FixedPoint(bits=8, clip=0.0)


@pytest.mark.parametrize("bits", [32, 64])
def test_the_largest_example_count_the_ring_holds_is_accepted(bits):
    top = 2 ** (bits - 1) - 1  # max_sites · max_examples exactly at the ring bound
    codec = FixedPoint(bits=bits, max_sites=1, max_examples=top)
    total, count = codec.decode_weighted_mean(codec.encode_weighted(np.zeros(2), top))
    assert count == top and np.all(total == 0.0)


@pytest.mark.parametrize("n_examples", [0, -1, 101])
def test_an_example_count_outside_one_to_max_examples_is_refused(n_examples):
    codec = FixedPoint(max_examples=100)
    with pytest.raises(
        CryptoError,
        match=rf"^n_examples = {n_examples} is outside \[1, max_examples = 100\]; raise",
    ):
        codec.encode_weighted([0.5], n_examples)


def test_a_single_example_and_the_largest_count_are_encoded():
    codec = FixedPoint(max_examples=100)
    assert codec.encode_weighted([0.5], 1)[-1] == 1
    assert codec.encode_weighted([0.5], 100)[-1] == 100


def test_one_example_in_the_sum_is_a_valid_sum():
    codec = FixedPoint(max_examples=4)
    mean, count = codec.decode_weighted_mean(codec.encode_weighted([0.5, -0.25], 1))
    assert count == 1
    np.testing.assert_allclose(mean, [0.5, -0.25], atol=1 / codec.scale)


@pytest.mark.parametrize("total", [np.zeros(0, dtype=np.uint32), np.ones((2, 2), dtype=np.uint32)])
def test_a_weighted_sum_needs_one_flat_vector_with_its_count(total):
    with pytest.raises(
        CryptoError, match=r"^a weighted sum needs at least the example-count coordinate$"
    ):
        FixedPoint().decode_weighted_mean(total)


def test_an_empty_update_still_carries_its_example_count():
    codec = FixedPoint()
    mean, count = codec.decode_weighted_mean(codec.encode_weighted([], 3))
    assert mean.shape == (0,) and count == 3


def test_a_sum_whose_count_wrapped_negative_is_refused_as_corrupt():
    codec = FixedPoint()
    total = np.array([0, 2**32 - 1], dtype=np.uint32)  # the count reads as −1
    with pytest.raises(CryptoError) as raised:
        codec.decode_weighted_mean(total)
    assert str(raised.value) == (
        "decoded example count -1 is not positive: the sum is corrupt, "
        "or more than max_sites sites were summed"
    )


def test_non_finite_values_are_refused_before_quantizing():
    with pytest.raises(
        CryptoError, match=r"^cannot quantize NaN or infinite values; check the update first$"
    ):
        FixedPoint().encode_weighted([0.0, float("inf")], 1)


def test_weighted_encoding_rounds_stochastically_when_given_a_generator():
    codec = FixedPoint(bits=32, clip=1.0, max_sites=2**20, max_examples=2)
    value = 2 * 7.3 / codec.scale  # weighted by 1/2: 7.3 quanta
    draws = codec.encode_weighted(np.full(10_000, value), 1, np.random.default_rng(5))[:-1]
    assert set(draws.tolist()) == {7, 8}
    assert draws.astype(float).mean() == pytest.approx(7.3, abs=0.05)
    nearest = codec.encode_weighted(np.full(10, value), 1)[:-1]
    assert set(nearest.tolist()) == {7}


def test_quantize_keeps_the_input_shape():
    codec = FixedPoint()
    assert codec.quantize(np.zeros((2, 3))).shape == (2, 3)
    assert codec.quantize(np.zeros((2, 3))).dtype == np.dtype("<u4")


def test_a_ring_vector_of_the_other_width_is_refused_naming_both():
    with pytest.raises(CryptoError, match="ring vector has dtype uint32, this codec uses uint64"):
        FixedPoint(bits=64).dequantize(np.zeros(2, dtype=np.uint32))


def test_weighting_scales_the_clipped_value_by_n_over_max_examples():
    codec = FixedPoint(clip=1.0, max_examples=4)
    encoded = codec.encode_weighted([3.0, -0.5], 2)  # clipped to 1.0, then weighted by 1/2
    np.testing.assert_allclose(codec.dequantize(encoded[:-1]), [0.5, -0.25], atol=1 / codec.scale)
