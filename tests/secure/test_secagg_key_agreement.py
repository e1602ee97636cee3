"""Seeds of SecAgg masks: the two sites of a pair derive the same seed, bound to purpose, run,
round and both sites (another of any gives an unrelated seed), and a peer advertising a
low-order point is named in the refusal.

Written against the survivors of `scripts/mutation.py secagg` (README, Development notes).
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fedpharma.core.errors import CryptoError
from fedpharma.secure.secagg.masks import MASK_PURPOSE, agree, derive_key, pairwise_mask
from fedpharma.secure.secagg.round import RoundSetup

SETUP = RoundSetup("run", 4, 2, 10)
SHARED = bytes(range(32))
LOW_ORDER_POINT = bytes(32)  # the identity point: every agreement with it is all zeros


def public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_a_pairs_masks_share_one_seed_and_cancel():
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    mask_a = pairwise_mask(SETUP, a, "site-a", "site-b", public(b))
    mask_b = pairwise_mask(SETUP, b, "site-b", "site-a", public(a))
    assert mask_a.seed == mask_b.seed and (mask_a.sign, mask_b.sign) == (1, -1)


def test_a_seed_is_bound_to_purpose_run_round_and_both_sites():
    seed = derive_key(SHARED, MASK_PURPOSE, SETUP, "a", "b")
    assert seed == derive_key(SHARED, MASK_PURPOSE, SETUP, "b", "a")
    others = [
        derive_key(SHARED, "another purpose", SETUP, "a", "b"),
        derive_key(SHARED, MASK_PURPOSE, RoundSetup("other", 4, 2, 10), "a", "b"),
        derive_key(SHARED, MASK_PURPOSE, RoundSetup("run", 5, 2, 10), "a", "b"),
        derive_key(SHARED, MASK_PURPOSE, SETUP, "a", "c"),
        derive_key(bytes(32), MASK_PURPOSE, SETUP, "a", "b"),
    ]
    assert len({seed, *others}) == 6 and all(len(s) == 32 for s in others)


def test_a_low_order_point_is_refused_naming_the_peer():
    own = X25519PrivateKey.generate()
    message = "key agreement with 'site-z' failed: its advertised key is a low-order point"
    with pytest.raises(CryptoError, match=message):
        agree(own, LOW_ORDER_POINT, "site-z")
    with pytest.raises(CryptoError, match=message):
        pairwise_mask(SETUP, own, "site-a", "site-z", LOW_ORDER_POINT)
