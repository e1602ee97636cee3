"""A malicious coordinator attacks the chemical-space overlap (issue 15).

The coordinator runs the real overlap step against real sites (``overlap_consortium``) and
keeps everything it receives and every secure sum it computes. It then tries (a) to tell
whether a known public scaffold is at a given site and (b) to read a site's own hashed set.
Each attack runs in two worlds that differ only where the answer differs; an attack that gives
the same verdict in both fails. Its weakened twins — the coordinator holding the key (a site
colluding), or the sites' masks switched off (each vector in the clear) — run the very same
attack and succeed, so each test can fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedpharma.core.errors import CryptoError
from fedpharma.core.protocol import SecureReply
from fedpharma.data.overlap import DEPLOYED_BUCKETS, site_sets
from fedpharma.secure.quantize import FixedPoint
from fedpharma.secure.secagg import MaskedInput
from fedpharma.secure.secagg import site as secagg_site
from tests.attacks.overlap_consortium import (
    KEY,
    N_BITS,
    SCAFFOLDS,
    Observed,
    bucket,
    build_sites,
    observe,
)

VICTIM, OTHER = "site-a", "site-b"
TARGET = "c1ccc2ccccc2c1"  # a public scaffold the coordinator asks about
BACKGROUND = {
    "site-a": SCAFFOLDS[:3],
    "site-b": SCAFFOLDS[1:3] + SCAFFOLDS[5:6],
    "site-c": SCAFFOLDS[2:3] + SCAFFOLDS[6:8],
    "site-d": SCAFFOLDS[8:],
}
assert TARGET in SCAFFOLDS and all(TARGET not in held for held in BACKGROUND.values())


def world(target_at: str | None) -> dict[str, tuple[str, ...]]:
    """The consortium's holdings, with the target scaffold at ``target_at`` (or nowhere)."""
    return {
        site: tuple(held) + ((TARGET,) if site == target_at else ())
        for site, held in BACKGROUND.items()
    }


def victim_input(seen: Observed, victim: str) -> np.ndarray | None:
    """The victim's own vector as the coordinator reads it off the victim's masked input,
    decoded with the settings it sent; ``None`` unless that reads as a 0/1 vector."""
    codec = FixedPoint(bits=64, clip=1.0, max_sites=len(BACKGROUND), max_examples=1)
    for reply in seen.received:
        if isinstance(reply, SecureReply) and reply.site == victim:
            if reply.phase != "masked_input":
                continue
            ring = MaskedInput.from_bytes(reply.payload).vector()
            try:
                values, weight = codec.decode_weighted_mean(ring)
            except CryptoError:  # masked: no example count reads off it
                return None
            if weight == 1 and np.all(np.isin(np.round(values, 6), (0.0, 1.0))):
                return np.round(values).astype(np.int64)
    return None


def guess_held(seen: Observed, victim: str, key: bytes) -> bool:
    """Attack (a): is ``TARGET`` at ``victim``? Hash it with the key the coordinator has (b"":
    none) and read its bucket in the victim's own vector, if it can read one, else in the sum
    (someone holds it)."""
    b = bucket(TARGET, key)
    own = victim_input(seen, victim)
    if own is not None:
        return bool(own[b] == 1)
    (summed,) = seen.sums
    return bool(summed[b] >= 0.5)


def _verdicts(target_worlds: tuple[str | None, str | None], key: bytes) -> tuple[bool, bool]:
    first, second = (observe(build_sites(world(at))) for at in target_worlds)
    return guess_held(first, VICTIM, key), guess_held(second, VICTIM, key)


def test_without_the_key_a_coordinator_cannot_tell_whether_a_public_scaffold_is_at_a_site():
    held, absent = _verdicts((VICTIM, None), key=b"")
    assert held == absent  # the same verdict whether the victim holds it or nobody does


def test_weakened_twin_the_key_in_the_coordinators_hands_reveals_whether_anyone_holds_it():
    """A coalition of the coordinator and a key-holding site: the secure sum still shows the
    bucket of a public scaffold it hashes, so it learns whether (and how often) the consortium
    holds it — here, with no other site holding it, that the victim does."""
    held, absent = _verdicts((VICTIM, None), key=KEY)
    assert (held, absent) == (True, False)


def test_with_the_key_a_secure_sum_does_not_say_which_site_holds_a_scaffold():
    at_victim, at_other = _verdicts((VICTIM, OTHER), key=KEY)
    assert at_victim == at_other  # the sum is the same whichever of the two holds it


def test_weakened_twin_unmasked_vectors_say_which_site_holds_it(monkeypatch):
    monkeypatch.setattr(secagg_site, "add_masks", lambda total, masks: None)
    at_victim, at_other = _verdicts((VICTIM, OTHER), key=KEY)
    assert (at_victim, at_other) == (True, False)


def _own_set(seen_sites, victim: str) -> np.ndarray:
    scaffolds, bits = site_sets(seen_sites[victim].data, KEY, DEPLOYED_BUCKETS)
    return np.concatenate([scaffolds, bits]).astype(np.int64)


def test_a_sites_hashed_set_cannot_be_read_off_what_the_coordinator_holds():
    """Attack (b): the victim's vector from its own message, or the best stand-in the sum
    gives (its buckets held by at least one site): neither is the victim's set."""
    sites = build_sites(world(VICTIM))
    seen = observe(sites)
    assert seen.overlap.missing is None
    assert victim_input(seen, VICTIM) is None
    (summed,) = seen.sums
    assert not np.array_equal((summed >= 0.5).astype(np.int64), _own_set(sites, VICTIM))


def test_weakened_twin_an_unmasked_vector_is_the_sites_hashed_set(monkeypatch):
    monkeypatch.setattr(secagg_site, "add_masks", lambda total, masks: None)
    sites = build_sites(world(VICTIM))
    seen = observe(sites)
    recovered = victim_input(seen, VICTIM)
    assert recovered is not None and recovered.size == DEPLOYED_BUCKETS + N_BITS
    np.testing.assert_array_equal(recovered, _own_set(sites, VICTIM))


@pytest.mark.parametrize("key", [b"", b"a guessed key of thirty-two bytes"])
def test_a_dictionary_of_public_scaffolds_misses_every_bucket_without_the_key(key):
    """Hashing every public scaffold without the consortium's key lands on buckets the sum
    does not reflect: no scaffold's presence can be read off."""
    seen = observe(build_sites(world(VICTIM)))
    (summed,) = seen.sums
    occupied = {bucket(s, KEY) for held in world(VICTIM).values() for s in held}
    guessed = {bucket(s, key) for s in SCAFFOLDS}
    assert not guessed & occupied
    assert all(summed[b] == 0 for b in guessed)
