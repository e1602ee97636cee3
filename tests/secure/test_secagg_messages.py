"""Every secure-aggregation message survives its binary encoding unchanged."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from fedpharma.secure import shamir
from fedpharma.secure.identity import Endorsement
from fedpharma.secure.secagg.messages import (
    SEALED_SHARE_BYTES,
    ConsistencyProof,
    ConsistencySignature,
    EncryptedShares,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    RevealedShare,
    ShareBundle,
    ShareDelivery,
    SurvivorList,
    UnmaskingShares,
)


def wire(message):
    return type(message).from_bytes(message.to_bytes())


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
keys = st.binary(min_size=32, max_size=32)


@settings(max_examples=40, deadline=None)
@given(
    run_id=names,
    rnd=st.integers(0, 2**64 - 1),
    sites=st.lists(names, max_size=4),
    key=keys,
    values=st.binary(max_size=64).map(lambda b: b[: len(b) // 4 * 4]),
)
def test_every_message_round_trips_through_its_binary_encoding(run_id, rnd, sites, key, values):
    endorsement = Endorsement(b"certificate " + key, b"signature")
    ads = tuple(KeyAdvertisement(run_id, rnd, s, key, key, key, endorsement) for s in sites)
    signatures = tuple(ConsistencySignature(run_id, rnd, s, key + key) for s in sites)
    sealed = tuple(replace(_sealed_example(), sender="x", recipient=s) for s in sites)
    share = shamir.Share(3, int.from_bytes(key, "little"))
    messages = [
        *ads,
        KeyRoster(run_id, rnd, 2, ads),
        ShareBundle(run_id, rnd, "x", key, sealed),
        ShareDelivery(run_id, rnd, "y", tuple(replace(s, recipient="y") for s in sealed)),
        MaskedInput(run_id, rnd, "x", 32, values),
        SurvivorList(run_id, rnd, tuple(sites)),
        *signatures,
        ConsistencyProof(run_id, rnd, tuple(sites), signatures),
        UnmaskingShares(run_id, rnd, "x", tuple(RevealedShare(s, share) for s in sites), ()),
    ]
    for message in messages:
        assert wire(message) == message


def _sealed_example():
    return EncryptedShares("x", "y", bytes(SEALED_SHARE_BYTES))
