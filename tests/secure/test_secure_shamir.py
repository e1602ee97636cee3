"""Shamir secret sharing over GF(2^256 + 297)."""

import itertools
import os

import pytest

from fedpharma.core.errors import CryptoError
from fedpharma.secure import shamir


def test_field_prime_is_prime_and_holds_every_32_byte_secret():
    assert shamir.PRIME > 2**256
    assert all(pow(base, shamir.PRIME - 1, shamir.PRIME) == 1 for base in (2, 3, 5, 7, 11, 13))


def test_any_threshold_subset_reconstructs_and_fewer_shares_do_not():
    secret = os.urandom(32)
    shares = shamir.split(secret, 3, [1, 2, 3, 4, 5])
    for subset in itertools.combinations(shares.values(), 3):
        assert shamir.reconstruct(subset) == secret
    for subset in itertools.combinations(shares.values(), 2):  # t − 1 shares: a random value
        assert shamir.reconstruct(subset) != secret


def test_share_values_travel_in_33_bytes_and_out_of_field_values_are_refused():
    share = shamir.split(b"\xff" * 32, 2, [1, 2])[2]
    assert shamir.Share.from_value_bytes(2, share.value_bytes()) == share
    with pytest.raises(CryptoError, match="outside the field"):
        shamir.Share.from_value_bytes(1, (shamir.PRIME).to_bytes(33, "little"))
    with pytest.raises(CryptoError):
        shamir.Share.from_value_bytes(1, b"\x00" * 32)


def test_invalid_sharings_are_refused():
    with pytest.raises(CryptoError):
        shamir.split(b"short", 2, [1, 2])
    with pytest.raises(CryptoError):
        shamir.split(os.urandom(32), 3, [1, 2])
    with pytest.raises(CryptoError):
        shamir.lagrange_at_zero([1, 1])
