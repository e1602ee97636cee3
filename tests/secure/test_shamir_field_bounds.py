"""Shamir shares stay in the field, travel in a fixed layout, and a wrong share is caught at the
edge of the secret's range.

Written against the survivors of `scripts/mutation.py shamir` (README, Development notes).
"""

import os

import pytest

from fedpharma.core.errors import CryptoError
from fedpharma.secure.shamir import (
    PRIME,
    Share,
    combine,
    lagrange_at_zero,
    reconstruct,
    split,
)


@pytest.mark.parametrize(("x", "value"), [(1, 0), (PRIME - 1, PRIME - 1), (2, 1)])
def test_every_point_and_value_of_the_field_is_a_share(x, value):
    assert Share(x, value) == Share(x, value)


@pytest.mark.parametrize(
    ("x", "value"), [(0, 1), (-1, 1), (PRIME, 1), (1, -1), (1, PRIME), (0, PRIME)]
)
def test_a_share_outside_the_field_is_refused(x, value):
    with pytest.raises(
        CryptoError, match=r"^a Shamir share lies outside the field; it was altered or corrupted$"
    ):
        Share(x, value)


def test_a_share_value_travels_as_33_little_endian_bytes():
    assert Share(1, 1).value_bytes() == b"\x01" + bytes(32)
    assert Share(1, PRIME - 1).value_bytes() == (PRIME - 1).to_bytes(33, "little")
    assert Share.from_value_bytes(3, b"\x02" + bytes(32)) == Share(3, 2)
    with pytest.raises(CryptoError, match="a share value is 33 bytes, got 34"):
        Share.from_value_bytes(1, bytes(34))


def test_threshold_one_gives_every_participant_the_secret_itself():
    secret = os.urandom(32)
    shares = split(secret, 1, [1, 2, 3])
    assert {s.value for s in shares.values()} == {int.from_bytes(secret, "little")}
    assert reconstruct([shares[2]]) == secret


def test_threshold_equal_to_the_number_of_points_needs_every_share():
    secret = os.urandom(32)
    shares = split(secret, 3, [4, 7, 9])
    assert sorted(shares) == [4, 7, 9] and all(shares[x].x == x for x in shares)
    assert reconstruct(list(shares.values())) == secret


@pytest.mark.parametrize(
    ("secret", "threshold", "points", "message"),
    [
        (bytes(31), 2, [1, 2], "Shamir secrets are 32 bytes, got 31"),
        (bytes(33), 2, [1, 2], "Shamir secrets are 32 bytes, got 33"),
        (bytes(32), 0, [1, 2], "need distinct points and 1 ≤ threshold ≤ 2"),
        (bytes(32), 3, [1, 2], "need distinct points and 1 ≤ threshold ≤ 2"),
        (bytes(32), 2, [1, 2, 2], "need distinct points and 1 ≤ threshold ≤ 3"),
    ],
)
def test_an_impossible_sharing_is_refused(secret, threshold, points, message):
    with pytest.raises(CryptoError, match=message):
        split(secret, threshold, points)


@pytest.mark.parametrize("points", [[1, 1], [0, 1], [1, PRIME], [2, -3]])
def test_lagrange_needs_distinct_points_inside_the_field(points):
    with pytest.raises(
        CryptoError, match=r"^Lagrange interpolation needs distinct points in \[1, p\)$"
    ):
        lagrange_at_zero(points)


def test_lagrange_coefficients_at_zero_match_the_closed_form():
    # points 1, 2: f(0) = 2 f(1) − f(2); points 1, 2, 3: f(0) = 3 f(1) − 3 f(2) + f(3)
    assert lagrange_at_zero([1, 2]) == [2, PRIME - 1]
    assert lagrange_at_zero([1, 2, 3]) == [3, PRIME - 3, 1]
    assert lagrange_at_zero([PRIME - 1]) == [1]


def test_a_reconstruction_just_past_the_secret_range_is_refused_as_a_wrong_share():
    # with one share at x = 1 the coefficient is 1, so the share's value is the result
    assert combine([Share(1, 2**256 - 1)], [1]) == b"\xff" * 32
    with pytest.raises(
        CryptoError, match=r"^reconstructed secret is out of range: at least one share is wrong$"
    ):
        combine([Share(1, 2**256)], [1])


def test_combine_needs_one_coefficient_per_share():
    shares = list(split(os.urandom(32), 2, [1, 2, 3]).values())
    with pytest.raises(CryptoError, match="3 shares for 2 Lagrange coefficients"):
        combine(shares, lagrange_at_zero([1, 2]))
