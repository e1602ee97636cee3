"""What a SecAgg site refuses when it masks its input, and what each refusal says: a second
masked input, a delivery of another round or for another site, a contribution of another shape,
a delivery that repeats senders, names strangers or claims the site sent shares to itself, too
few sharers for the threshold; and no survivor list is signed nor share revealed by a site
that has not sent its masked input.

Written against the survivors of `scripts/mutation.py secagg` (README, Development notes).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from fedpharma.core.errors import CryptoError, ProtocolError, RoundFailed
from fedpharma.secure.secagg import ConsistencyProof, ShareDelivery, SurvivorList
from fedpharma.secure.secagg.messages import SEALED_SHARE_BYTES, EncryptedShares
from tests.secure.test_secagg import Round, wire


def shared_round() -> tuple[Round, dict[str, ShareDelivery]]:
    """A round of seven sites (t = 5) up to the share deliveries."""
    rnd = Round()
    roster = wire(rnd.server.roster([wire(p.advertise_keys()) for p in rnd.parties.values()]))
    bundles = [wire(p.share_keys(roster)) for p in rnd.parties.values()]
    return rnd, rnd.server.route_shares(bundles)


def fake_delivery(senders: list[str]) -> ShareDelivery:
    sealed = b"\3" * SEALED_SHARE_BYTES
    return ShareDelivery(
        "run-1", 4, "site-a", tuple(EncryptedShares(s, "site-a", sealed) for s in senders)
    )


def test_a_second_masked_input_is_refused():
    rnd, deliveries = shared_round()
    site = rnd.parties["site-a"]
    site.masked_input(deliveries["site-a"], rnd.contributions["site-a"])
    with pytest.raises(ProtocolError, match="'site-a' already sent its masked input this round"):
        site.masked_input(deliveries["site-a"], rnd.contributions["site-a"])


def test_a_delivery_of_another_round_or_for_another_site_is_refused():
    rnd, deliveries = shared_round()
    site, contribution = rnd.parties["site-a"], rnd.contributions["site-a"]
    stale = dataclasses.replace(deliveries["site-a"], round=3)
    with pytest.raises(ProtocolError, match=r"^share delivery is for run 'run-1' round 3"):
        site.masked_input(stale, contribution)
    with pytest.raises(ProtocolError, match="'site-a' received shares meant for 'site-b'"):
        site.masked_input(deliveries["site-b"], contribution)


def test_a_contribution_of_another_length_is_refused_naming_both_shapes():
    rnd, deliveries = shared_round()
    short = np.zeros(5, dtype=np.uint32)
    message = "contribution is uint32[5], the round expects uint32[2001]; quantize it first"
    with pytest.raises(CryptoError, match=re.escape(message)):
        rnd.parties["site-a"].masked_input(deliveries["site-a"], short)


@pytest.mark.parametrize(
    "senders",
    [
        ["site-b", "site-b", "site-c", "site-d", "site-e"],  # a sender twice
        ["site-b", "site-c", "site-d", "site-e", "site-z"],  # a stranger
    ],
)
def test_a_delivery_repeating_senders_or_naming_strangers_is_refused(senders):
    rnd, _ = shared_round()
    with pytest.raises(CryptoError) as caught:
        rnd.parties["site-a"].masked_input(fake_delivery(senders), rnd.contributions["site-a"])
    assert str(caught.value) == "share delivery repeats senders or names sites outside the roster"


def test_a_delivery_claiming_the_site_sent_shares_to_itself_is_refused():
    rnd, _ = shared_round()
    every_site = list(rnd.sites)  # the whole roster, the recipient included
    with pytest.raises(CryptoError, match="share delivery claims 'site-a' sent shares to itself"):
        rnd.parties["site-a"].masked_input(fake_delivery(every_site), rnd.contributions["site-a"])


def test_too_few_sharers_for_the_threshold_fail_the_round():
    rnd, _ = shared_round()
    three = fake_delivery(["site-b", "site-c", "site-d"])  # with site-a: 4 sites, t = 5
    with pytest.raises(RoundFailed) as caught:
        rnd.parties["site-a"].masked_input(three, rnd.contributions["site-a"])
    assert str(caught.value) == (
        "only 4 sites shared keys, the threshold is 5; the round cannot complete"
    )


def test_no_survivor_list_is_signed_nor_share_revealed_before_the_masked_input():
    rnd, _ = shared_round()
    site = rnd.parties["site-a"]
    with pytest.raises(ProtocolError, match="'site-a' has not sent a masked input this round"):
        site.consistency(SurvivorList("run-1", 4, rnd.sites))
    with pytest.raises(ProtocolError, match="'site-a' has not sent a masked input this round"):
        site.unmask(ConsistencyProof("run-1", 4, rnd.sites, ()))
