"""SecAgg against an active coordinator: each attack fails, and succeeds on a weakened build.

The coordinator deviates from the protocol against real sites (``malicious_coordinator``); the
victim is ``site-a``, the colluding site ``site-e``. Each ``weakened`` twin monkeypatches one
defence away and shows that the same attack then recovers Δ_victim, so the test can fail.
"""

import numpy as np
import pytest

from fedpharma.secure.identity import ephemeral_consortium
from fedpharma.secure.secagg import (
    ConsistencyProof,
    KeyRoster,
    MaskedInput,
    RoundSetup,
    SecAggSite,
    ShareBundle,
    ShareDelivery,
    SurvivorList,
)
from fedpharma.secure.secagg import round as secagg_round
from fedpharma.secure.secagg import site as secagg_site
from fedpharma.secure.secagg.masks import Mask, add_masks
from fedpharma.site import secure as site_secure
from tests.attacks.malicious_coordinator import (
    COLLUDER,
    LENGTH,
    RUN,
    SITES,
    VICTIM,
    SecAggAttack,
    Stopped,
    build_sites,
    clipped,
    codec,
    colluder_state,
    combine,
    examples,
    shares_of,
)

RECOVERED = 1e-6


def _recovered(estimate) -> bool:
    return bool(np.max(np.abs(estimate - clipped(VICTIM))) < RECOVERED)


def _majority_threshold(monkeypatch):
    """The weakened build: t > n/2 instead of t > 2n/3 (the code before issue 12)."""
    monkeypatch.setattr(secagg_round, "minimum_threshold", lambda n: n // 2 + 1)


# ----- split survivor lists with a colluding site ------------------------------------------


def split_survivor_lists(threshold: int, x_view, y_view) -> np.ndarray:
    """Tell the sites of ``x_view`` the victim survived (they reveal shares of its self-mask
    seed) and those of ``y_view`` it dropped (they reveal shares of its mask key); the colluder
    signs both lists and hands over its own shares of both."""
    sites = build_sites()
    attack = SecAggAttack(sites, threshold)
    roster = attack.roster()
    masked = attack.mask(roster, SITES)
    colluder = colluder_state(sites, 1)
    extra = [(COLLUDER, colluder._signing_key)]
    honest_x = [s for s in x_view if s != COLLUDER]
    honest_y = [s for s in y_view if s != COLLUDER and s not in x_view]
    told_survived = attack.unmask_view(x_view, honest_x, extra)
    told_dropped = attack.unmask_view(y_view, honest_y, extra)
    self_mask = [*shares_of(told_survived, VICTIM, "self_mask_shares"), colluder._held[VICTIM][1]]
    mask_key = [*shares_of(told_dropped, VICTIM, "mask_key_shares"), colluder._held[VICTIM][0]]
    return attack.recover(roster, masked[VICTIM], self_mask, mask_key)


X_VIEW = ("site-a", "site-b", "site-e")  # the victim survived
Y_VIEW = ("site-c", "site-d", "site-e")  # the victim dropped


def test_split_survivor_lists_at_n5_t3_with_a_colluder_are_refused():
    with pytest.raises(Stopped, match="does not exceed two thirds"):
        split_survivor_lists(3, X_VIEW, Y_VIEW)


def test_weakened_split_survivor_lists_at_n5_t3_recover_the_victim(monkeypatch):
    _majority_threshold(monkeypatch)
    assert _recovered(split_survivor_lists(3, X_VIEW, Y_VIEW))


X4_VIEW = ("site-a", "site-b", "site-c", "site-e")
Y4_VIEW = ("site-b", "site-c", "site-d", "site-e")


def test_split_survivor_lists_at_the_accepted_t4_are_stopped_before_any_share_is_revealed():
    # Four of the five must sign each list; the coordinator has one honest signer for the list
    # without the victim, so site-d refuses to reveal anything.
    with pytest.raises(Stopped, match="site-d: only 2 survivors signed"):
        split_survivor_lists(4, X4_VIEW, Y4_VIEW)


def test_weakened_split_at_t4_without_the_consistency_check_releases_shares(monkeypatch):
    # Without the signed consistency check site-d reveals its share of the victim's mask key
    # for a list that only it and the colluder signed; t > 2n/3 still leaves the coordinator
    # one share short (2 of 4), so the check is the first line and the threshold the second.
    monkeypatch.setattr(secagg_site, "check_consistency", lambda *args: None)
    with pytest.raises(Stopped, match="2 mask-key shares of the victim were revealed"):
        split_survivor_lists(4, X4_VIEW, Y4_VIEW)


# ----- forged identities: a roster of sites the coordinator made up ------------------------


def sybil_roster() -> np.ndarray:
    """Surround the victim with four sites the coordinator runs itself (their certificates
    from a CA it made); they receive the victim's shares of both secrets."""
    sites = build_sites((VICTIM,))
    attack = SecAggAttack(sites, threshold=4)
    forged_ca, forged = ephemeral_consortium(SITES)
    setup = RoundSetup(RUN, 1, 4, LENGTH + 1, 64)
    sybils = {s: SecAggSite(setup, forged[s], forged_ca) for s in SITES if s != VICTIM}
    ads = {VICTIM: attack.ads[VICTIM]} | {s: p.advertise_keys() for s, p in sybils.items()}
    roster = attack.roster(ads)
    victim_bundle = attack.coordinator.phase(VICTIM, 1, "share_keys", roster.to_bytes())
    bundles = [ShareBundle.from_bytes(victim_bundle)]
    bundles += [p.share_keys(roster) for p in sybils.values()]
    zeros = np.zeros(LENGTH + 1, dtype=np.uint64)
    for name, sybil in sybils.items():
        sybil.masked_input(_delivery(bundles, name), zeros)
    delivery = _delivery(bundles, VICTIM).to_bytes()
    masked = MaskedInput.from_bytes(attack.coordinator.phase(VICTIM, 1, "masked_input", delivery))
    self_mask = [p._held[VICTIM][1] for p in sybils.values()]
    mask_key = [p._held[VICTIM][0] for p in sybils.values()]
    return attack.recover(roster, masked, self_mask, mask_key)


def _delivery(bundles, recipient):
    shares = tuple(s for b in bundles for s in b.shares if s.recipient == recipient)
    return ShareDelivery(RUN, 1, recipient, shares)


def test_a_roster_of_forged_sites_is_refused():
    with pytest.raises(Stopped, match="CA did not issue"):
        sybil_roster()


def test_weakened_roster_without_endorsement_checks_recovers_the_victim(monkeypatch):
    monkeypatch.setattr(secagg_site, "check_endorsements", lambda *args: None)
    assert _recovered(sybil_roster())


# ----- two sites: each reads the other's update off the sum ------------------------------


def two_site_round() -> np.ndarray:
    """An honest round of the victim and the colluder; the colluder subtracts its own update."""
    sites = build_sites((VICTIM, COLLUDER))
    attack = SecAggAttack(sites, threshold=2)
    masked = attack.mask(attack.roster(), sorted(sites))
    revealed = attack.unmask_view(sorted(sites), sorted(sites))
    total = masked[VICTIM].vector() + masked[COLLUDER].vector()  # the pairwise masks cancel
    seeds = [combine(shares_of(revealed, s, "self_mask_shares")) for s in sorted(sites)]
    add_masks(total, [Mask(seed, -1) for seed in seeds])
    mean, n_total = codec(2).decode_weighted_mean(total)
    own = examples(COLLUDER) * clipped(COLLUDER)
    return (mean * n_total - own) / examples(VICTIM)


def test_two_site_rounds_are_refused():
    with pytest.raises(Stopped, match="never fewer than 3"):
        two_site_round()


def test_weakened_two_site_round_gives_the_colluder_the_victims_update(monkeypatch):
    monkeypatch.setattr(site_secure, "MIN_SITES", 2)
    monkeypatch.setattr(secagg_round, "MIN_SITES", 2)
    assert _recovered(two_site_round())


# ----- replayed material and the site's own floor -------------------------------------------


def test_material_of_an_earlier_round_is_refused():
    sites = build_sites()
    first = SecAggAttack(sites, threshold=4, rnd=1)
    roster_1 = first.roster()
    first.mask(roster_1, SITES)
    signed_1 = first.unmask_view(SITES, SITES)
    assert len(signed_1) == len(SITES)  # round 1 was honest
    second = SecAggAttack(sites, threshold=4, rnd=2)
    replayed = KeyRoster(RUN, 2, 4, roster_1.advertisements)
    with pytest.raises(Stopped, match="stale or replayed"):
        second.coordinator.phase(VICTIM, 2, "share_keys", roster_1.to_bytes())
    with pytest.raises(Stopped, match=r"stale or replayed|own keys"):
        second.coordinator.phase(VICTIM, 2, "share_keys", replayed.to_bytes())
    roster_2 = second.roster()
    second.mask(roster_2, SITES)
    old_list = SurvivorList(RUN, 1, SITES).to_bytes()
    with pytest.raises(Stopped, match="stale or replayed"):
        second.coordinator.phase(VICTIM, 2, "consistency", old_list)
    signed = second.coordinator.phase(
        VICTIM, 2, "consistency", SurvivorList(RUN, 2, SITES).to_bytes()
    )
    assert signed
    old_proof = ConsistencyProof(RUN, 1, SITES, ())
    with pytest.raises(Stopped, match="stale or replayed"):
        second.coordinator.phase(VICTIM, 2, "unmask", old_proof.to_bytes())


def test_a_site_refuses_a_threshold_below_its_own_min_sites():
    sites = build_sites(min_sites=5)
    with pytest.raises(Stopped, match="requires 5"):
        SecAggAttack(sites, threshold=4)
    assert len(SecAggAttack(sites, threshold=5).ads) == len(SITES)
