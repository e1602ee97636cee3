"""SecAgg against an active coordinator: each attack fails, and succeeds on a weakened build.

The coordinator deviates from the protocol against real sites (``malicious_coordinator``); the
victim is ``site-a``, the colluding site ``site-e`` unless an attack names others. Each
``weakened`` twin monkeypatches a defence away (both layers, where two each stop the attack
alone, with a test for each layer) and shows that the same attack then recovers Δ_victim (the
consistency check at t = 4: releases shares for two lists; see that twin for why the threshold
alone still protects), so the test can fail. One test recovers Δ_victim against the real
build: with c = 2t − n colluders, the limit of the threat model (README, *Threat model*).
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


# ----- split survivor lists with colluding sites --------------------------------------------


def split_views(threshold: int, x_view, y_view, colluders=(COLLUDER,)):
    """Tell the sites of ``x_view`` the victim survived (they reveal shares of its self-mask
    seed) and those of ``y_view`` it dropped (they reveal shares of its mask key); the
    ``colluders`` sign both lists and hand over their own shares of both. Returns the round and
    the victim's shares the coordinator then holds: (attack, roster, masked, self-mask shares,
    mask-key shares)."""
    sites = build_sites()
    attack = SecAggAttack(sites, threshold)
    roster = attack.roster()
    masked = attack.mask(roster, SITES)
    states = [colluder_state(sites, 1, c) for c in colluders]
    extra = [(c, state._signing_key) for c, state in zip(colluders, states, strict=True)]
    honest_x = [s for s in x_view if s not in colluders]
    honest_y = [s for s in y_view if s not in colluders and s not in x_view]
    told_survived = attack.unmask_view(x_view, honest_x, extra)
    told_dropped = attack.unmask_view(y_view, honest_y, extra)
    self_mask = shares_of(told_survived, VICTIM, "self_mask_shares")
    mask_key = shares_of(told_dropped, VICTIM, "mask_key_shares")
    self_mask += [state._held[VICTIM][1] for state in states]
    mask_key += [state._held[VICTIM][0] for state in states]
    return attack, roster, masked, self_mask, mask_key


def split_survivor_lists(threshold: int, x_view, y_view, colluders=(COLLUDER,)) -> np.ndarray:
    """The coordinator's estimate of Δ_victim from the shares of both split views."""
    attack, roster, masked, self_mask, mask_key = split_views(threshold, x_view, y_view, colluders)
    return attack.recover(roster, masked[VICTIM], self_mask, mask_key)


X_VIEW = ("site-a", "site-b", "site-e")  # the victim survived
Y_VIEW = ("site-c", "site-d", "site-e")  # the victim dropped


def test_split_survivor_lists_at_n5_t3_with_a_colluder_are_refused():
    with pytest.raises(Stopped, match="does not exceed two thirds"):
        split_survivor_lists(3, X_VIEW, Y_VIEW)


def test_weakened_split_survivor_lists_at_n5_t3_recover_the_victim(monkeypatch):
    # The consistency check stays on: each list carries t = 3 signatures (two honest sites and
    # the colluder), so it is the threshold rule alone that stops this attack.
    _majority_threshold(monkeypatch)
    assert _recovered(split_survivor_lists(3, X_VIEW, Y_VIEW))


X4_VIEW = ("site-a", "site-b", "site-c", "site-e")
Y4_VIEW = ("site-b", "site-c", "site-d", "site-e")


def test_split_survivor_lists_at_the_accepted_t4_are_stopped_at_the_second_list():
    # site-a, b and c sign X4 with the colluder and reveal for it (the round looks honest to
    # them); the list without the victim has one honest signer, so site-d reveals nothing.
    with pytest.raises(Stopped, match="site-d: only 2 survivors signed"):
        split_survivor_lists(4, X4_VIEW, Y4_VIEW)


def test_weakened_split_at_t4_without_the_consistency_check_releases_shares_for_two_lists(
    monkeypatch,
):
    """What the signed consistency check prevents, and why the threshold already protects here.

    Without the check, honest sites reveal shares for two different survivor lists of one
    round: site-a, b and c reveal the victim's self-mask shares (it survived), site-d a share of
    its mask key (it dropped); both kinds of the victim's secrets have left honest sites. Each
    honest site still signs and reveals for one list only, so the coordinator gets both kinds
    of one site's shares only from two disjoint groups, each completed to t by the c
    colluders: 2t ≤ n + c. At t = ⌊2n/3⌋ + 1 and c < 2t − n that fails whatever the lists
    (here 2 of the t = 4 mask-key shares), and the same counting bounds the signatures, so at
    the accepted thresholds the check adds no recovery the threshold does not already stop:
    it keeps the released shares to the one list t sites signed (Bonawitz et al. 2017, §4).
    """
    monkeypatch.setattr(secagg_site, "check_consistency", lambda *args: None)
    attack, roster, masked, self_mask, mask_key = split_views(4, X4_VIEW, Y4_VIEW)
    assert (len(self_mask), len(mask_key)) == (4, 2)  # honest shares of both kinds: a, b, c; d
    with pytest.raises(Stopped, match="2 mask-key shares of the victim were revealed"):
        attack.recover(roster, masked[VICTIM], self_mask, mask_key)


X4_TWO = ("site-a", "site-b", "site-d", "site-e")  # site-d and site-e collude
Y4_TWO = ("site-b", "site-c", "site-d", "site-e")


def test_weakened_split_at_t4_with_the_most_colluders_the_bound_allows_is_one_share_short(
    monkeypatch,
):
    # c = 2t − n − 1 = 2, consistency check off: site-c reveals for the list without the
    # victim, which takes the coordinator to 3 of the 4 mask-key shares, and no further.
    monkeypatch.setattr(secagg_site, "check_consistency", lambda *args: None)
    with pytest.raises(Stopped, match="3 mask-key shares of the victim were revealed"):
        split_survivor_lists(4, X4_TWO, Y4_TWO, colluders=("site-d", "site-e"))


def test_beyond_the_bound_three_colluders_at_t4_recover_the_victim_with_every_check_on():
    # c = 2t − n = 3 is outside the threat model (README, Threat model): each list then carries
    # t signatures (one honest site and the three colluders) and the victim is recovered.
    colluders = ("site-c", "site-d", "site-e")
    x_view, y_view = ("site-a", *colluders), ("site-b", *colluders)
    assert _recovered(split_survivor_lists(4, x_view, y_view, colluders=colluders))


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


# ----- replayed material: an earlier round reopened, or its messages sent again -----------


def reopened_round() -> np.ndarray:
    """After an honest round in which the victim survived (its self-mask shares revealed), the
    coordinator goes back to that round with a survivor list without the victim, signed by the
    four others, and asks them for shares of the victim's mask key: no colluder needed, t = 4."""
    sites = build_sites()
    attack = SecAggAttack(sites, threshold=4)
    roster = attack.roster()
    masked = attack.mask(roster, SITES)
    survived = attack.unmask_view(SITES, SITES)
    others = [s for s in SITES if s != VICTIM]
    dropped = attack.unmask_view(others, others)
    self_mask = shares_of(survived, VICTIM, "self_mask_shares")
    mask_key = shares_of(dropped, VICTIM, "mask_key_shares")
    return attack.recover(roster, masked[VICTIM], self_mask, mask_key)


def _sites_keep_finished_rounds(monkeypatch):
    """Weakened: a site keeps a round's state after revealing its shares."""
    answer = site_secure.SecureParticipation.answer

    def keep(self, task):
        state = self._rounds.get((task.run_id, task.round))
        reply = answer(self, task)
        if state is not None:
            self._rounds.setdefault((task.run_id, task.round), state)
        return reply

    monkeypatch.setattr(site_secure.SecureParticipation, "answer", keep)


def _sites_sign_any_number_of_lists(monkeypatch):
    """Weakened: a site signs every survivor list it is shown, not one per round."""
    consistency = SecAggSite.consistency

    def sign_again(self, survivors):
        self._signed = None
        return consistency(self, survivors)

    monkeypatch.setattr(SecAggSite, "consistency", sign_again)


def test_a_finished_round_cannot_be_reopened():
    with pytest.raises(Stopped, match=r"site-b: no secure-aggregation round 1 .* is open here"):
        reopened_round()


def test_a_reopened_round_is_refused_by_the_one_list_rule_alone(monkeypatch):
    _sites_keep_finished_rounds(monkeypatch)
    with pytest.raises(Stopped, match=r"site-b: .*already signed a survivor list"):
        reopened_round()


def test_a_reopened_round_is_refused_by_the_forgotten_state_alone(monkeypatch):
    _sites_sign_any_number_of_lists(monkeypatch)
    with pytest.raises(Stopped, match="site-b: no secure-aggregation round 1"):
        reopened_round()


def test_weakened_sites_that_keep_rounds_and_sign_again_give_the_victim_away(monkeypatch):
    # Both layers off: the four others reveal the victim's mask key for the second list, and
    # with the self-mask shares of the honest round the coordinator unmasks the victim.
    _sites_keep_finished_rounds(monkeypatch)
    _sites_sign_any_number_of_lists(monkeypatch)
    assert _recovered(reopened_round())


def test_material_of_an_earlier_round_is_refused():
    """Round 1's roster, survivor list and consistency proof sent again in round 2 are refused
    by their round tag. The tag is the outer of three layers: every round has fresh keys, and
    the advertisement endorsements, consistency signatures and share seals bind the round, so
    round-1 material verifies under no round-2 key (the replay that could gain something is
    the reopened round above, which has its own twin)."""
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


# ----- a sum smaller than the site's own min_sites ------------------------------------------

SMALL_COLLUDERS = ("site-d", "site-e")


def small_roster_round(min_sites: int) -> np.ndarray:
    """A roster of the victim and two colluding sites, n = 3 at t = 3 (the protocol's own rules
    accept it): an honest round, after which the colluders subtract their updates from the sum.
    Every site's recipe says ``min_sites``."""
    sites = build_sites((VICTIM, *SMALL_COLLUDERS), min_sites=min_sites)
    attack = SecAggAttack(sites, threshold=3)
    members = sorted(sites)
    masked = attack.mask(attack.roster(), members)
    revealed = attack.unmask_view(members, members)
    total = sum((masked[s].vector() for s in members[1:]), masked[members[0]].vector())
    seeds = [combine(shares_of(revealed, s, "self_mask_shares")) for s in members]
    add_masks(total, [Mask(seed, -1) for seed in seeds])
    mean, n_total = codec(3).decode_weighted_mean(total)
    own = sum(examples(s) * clipped(s) for s in SMALL_COLLUDERS)
    return (mean * n_total - own) / examples(VICTIM)


def test_a_roster_smaller_than_the_victims_min_sites_is_refused():
    with pytest.raises(Stopped, match=r"site-a: .*requires 5"):
        small_roster_round(min_sites=5)


def test_weakened_site_without_its_own_floor_is_read_off_a_small_sum(monkeypatch):
    # The code before issue 12: the task's t is checked against 3, not the recipe's min_sites.
    check = site_secure.SecureParticipation.check

    def without_own_floor(self, settings):
        floor, self.min_sites = self.min_sites, 1
        try:
            check(self, settings)
        finally:
            self.min_sites = floor

    monkeypatch.setattr(site_secure.SecureParticipation, "check", without_own_floor)
    assert _recovered(small_roster_round(min_sites=5))
