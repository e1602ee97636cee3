"""A malformed SecAgg message is refused as it is built, naming the site it came from and what
is wrong; and a site's Shamir evaluation point is its 1-based place in the roster.

Written against the survivors of `scripts/mutation.py secagg` (README, Development notes).
"""

from __future__ import annotations

import pytest

from fedpharma.core.errors import CryptoError
from fedpharma.secure.identity import Endorsement
from fedpharma.secure.secagg.messages import (
    SEALED_SHARE_BYTES,
    ConsistencySignature,
    EncryptedShares,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    ShareBundle,
    ShareDelivery,
)

KEY = b"\7" * 32
ENDORSEMENT = Endorsement(b"certificate", b"signature")
SEALED = b"\3" * SEALED_SHARE_BYTES


def test_a_short_public_key_is_refused_naming_the_site():
    with pytest.raises(CryptoError, match="'site-q' advertised a public key that is not 32 bytes"):
        KeyAdvertisement("r", 1, "site-q", KEY, KEY[:31], KEY, ENDORSEMENT)


def test_altered_sealed_shares_are_refused_naming_both_sites_and_the_sizes():
    with pytest.raises(CryptoError) as caught:
        EncryptedShares("a", "b", SEALED[:-1])
    assert str(caught.value) == (
        f"sealed shares from 'a' to 'b' are {SEALED_SHARE_BYTES - 1} bytes, expected "
        f"{SEALED_SHARE_BYTES} (truncated or altered)"
    )


def test_a_share_bundle_with_a_bad_commitment_or_anothers_shares_is_refused():
    with pytest.raises(CryptoError, match="self-mask commitment of 'a' is not 32 bytes"):
        ShareBundle("r", 1, "a", KEY[:5], (EncryptedShares("a", "b", SEALED),))
    with pytest.raises(CryptoError, match="share bundle of 'a' holds shares sent by another site"):
        ShareBundle("r", 1, "a", KEY, (EncryptedShares("c", "b", SEALED),))


def test_a_delivery_with_shares_for_another_site_is_refused():
    with pytest.raises(CryptoError, match="delivery for 'b' holds shares for another site"):
        ShareDelivery("r", 1, "b", (EncryptedShares("a", "c", SEALED),))


def test_a_masked_input_in_another_ring_is_refused_naming_the_ring():
    with pytest.raises(CryptoError, match="masked input of 'a' uses a 16-bit ring"):
        MaskedInput("r", 1, "a", 16, b"\0" * 16)


def test_a_short_consistency_signature_is_refused():
    with pytest.raises(CryptoError, match="the consistency signature of 'a' is not 64 bytes"):
        ConsistencySignature("r", 1, "a", b"\1" * 63)


def test_a_sites_evaluation_point_is_its_1_based_place_in_the_roster():
    adverts = tuple(KeyAdvertisement("r", 1, s, KEY, KEY, KEY, ENDORSEMENT) for s in "abc")
    roster = KeyRoster("r", 1, 3, adverts)
    assert [roster.point_of(s) for s in "abc"] == [1, 2, 3]
