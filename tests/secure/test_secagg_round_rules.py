"""The rules both sides of a SecAgg round apply (``secagg.round``), each refusal saying which
rule and which value: the threshold, the vector length (1 to 2³¹ entries), the ring, a
sorted distinct roster of at least t and at least three sites.

Written against the survivors of `scripts/mutation.py secagg` (README, Development notes).
"""

from __future__ import annotations

import pytest

from fedpharma.core.errors import CryptoError, RoundFailed
from fedpharma.secure.identity import Endorsement
from fedpharma.secure.secagg import KeyRoster
from fedpharma.secure.secagg.messages import KeyAdvertisement
from fedpharma.secure.secagg.round import MAX_VECTOR_LENGTH, RoundSetup, check_roster

KEY = b"\7" * 32


def roster(sites: list[str], threshold: int) -> KeyRoster:
    endorsement = Endorsement(b"certificate", b"signature")
    adverts = tuple(KeyAdvertisement("r", 1, s, KEY, KEY, KEY, endorsement) for s in sites)
    return KeyRoster("r", 1, threshold, adverts)


@pytest.mark.parametrize("length", [1, 2, MAX_VECTOR_LENGTH])
def test_a_vector_of_one_to_2_31_entries_is_accepted(length):
    assert RoundSetup("r", 1, 2, length).vector_length == length


@pytest.mark.parametrize("length", [0, MAX_VECTOR_LENGTH + 1])
def test_a_vector_length_outside_1_to_2_31_is_refused_with_the_length(length):
    with pytest.raises(CryptoError, match=rf"vector_length must be in \[1, 2\^31\], got {length}"):
        RoundSetup("r", 1, 2, length)


def test_a_threshold_below_2_and_another_ring_are_refused_with_the_value():
    with pytest.raises(CryptoError, match="threshold must be ≥ 2, got 1"):
        RoundSetup("r", 1, 1, 10)
    with pytest.raises(CryptoError, match="ring_bits must be 32 or 64, got 16"):
        RoundSetup("r", 1, 2, 10, ring_bits=16)


def test_an_unsorted_or_repeated_roster_is_refused():
    setup = RoundSetup("r", 1, 3, 10)
    for sites in (["b", "a", "c"], ["a", "a", "b", "c"]):
        with pytest.raises(
            CryptoError, match=r"^the key roster must list distinct sites in sorted"
        ):
            check_roster(setup, roster(sites, 3))


def test_a_roster_below_t_fails_the_round_naming_the_phase():
    with pytest.raises(RoundFailed, match=r"only 2 site\(s\) advertised keys, .* t = 3"):
        check_roster(RoundSetup("r", 1, 3, 10), roster(["a", "b"], 3))


def test_a_roster_of_two_sites_is_refused_because_each_reads_the_other():
    with pytest.raises(CryptoError) as caught:
        check_roster(RoundSetup("r", 1, 2, 10), roster(["a", "b"], 2))
    assert str(caught.value) == (
        "a roster of 2 sites: secure aggregation needs at least 3, "
        "or each site reads the other's update off the sum"
    )
