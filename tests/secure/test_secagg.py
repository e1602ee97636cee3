"""Pairwise-mask secure aggregation (Bonawitz et al. 2017): sums, dropouts, refusals, tampering.

Every message crosses a simulated wire (``to_bytes`` → ``from_bytes``), as over gRPC.
"""

from dataclasses import dataclass, field, replace

import numpy as np
import pytest

from fedpharma.core.errors import CryptoError, ProtocolError, RoundFailed
from fedpharma.secure import shamir
from fedpharma.secure.identity import ephemeral_consortium
from fedpharma.secure.quantize import FixedPoint
from fedpharma.secure.secagg import (
    MaskedInput,
    RoundSetup,
    SecAggServer,
    SecAggSite,
    ShareDelivery,
    SurvivorList,
    minimum_threshold,
)
from fedpharma.secure.secagg.messages import RevealedShare

SITES = ("site-a", "site-b", "site-c", "site-d", "site-e", "site-f", "site-g")
MORE = ("site-h", "site-i", "site-j")
LENGTH = 2_000
CODEC = FixedPoint(bits=32, clip=1.0, max_sites=len(SITES + MORE), max_examples=1_000)
CONSORTIUM, IDENTITIES = ephemeral_consortium(SITES + MORE)


def wire(message):
    return type(message).from_bytes(message.to_bytes())


@dataclass
class Round:
    """One round driven phase by phase; ``masked`` records what the server received."""

    threshold: int = 5
    sites: tuple[str, ...] = SITES
    setup: RoundSetup = field(init=False)
    parties: dict[str, SecAggSite] = field(init=False)
    server: SecAggServer = field(init=False)
    contributions: dict[str, np.ndarray] = field(init=False)
    updates: dict[str, np.ndarray] = field(init=False)
    masked: dict[str, MaskedInput] = field(default_factory=dict)

    def __post_init__(self):
        self.setup = RoundSetup("run-1", 4, self.threshold, LENGTH + 1, CODEC.bits)
        self.parties = {s: SecAggSite(self.setup, IDENTITIES[s], CONSORTIUM) for s in self.sites}
        self.server = SecAggServer(self.setup)
        rng = np.random.default_rng(7)
        self.updates = {s: rng.uniform(-1.2, 1.2, LENGTH) for s in self.sites}
        self.counts = {s: 100 * (i + 1) for i, s in enumerate(self.sites)}
        self.contributions = {
            s: CODEC.encode_weighted(self.updates[s], self.counts[s]) for s in self.sites
        }

    def run(self, *, drop_before_sharing=(), drop_before_masking=(), drop_before_unmasking=()):
        ads = [wire(p.advertise_keys()) for p in self.parties.values()]
        roster = wire(self.server.roster(ads))
        alive = [s for s in self.sites if s not in drop_before_sharing]
        bundles = [wire(self.parties[s].share_keys(roster)) for s in alive]
        deliveries = self.server.route_shares(bundles)
        alive = [s for s in alive if s not in drop_before_masking]
        for s in alive:
            self.masked[s] = wire(
                self.parties[s].masked_input(wire(deliveries[s]), self.contributions[s])
            )
        survivors = wire(self.server.collect_masked_inputs(list(self.masked.values())))
        alive = [s for s in alive if s not in drop_before_unmasking]
        signatures = [wire(self.parties[s].consistency(survivors)) for s in alive]
        proof = wire(self.server.collect_signatures(signatures))
        responses = [wire(self.parties[s].unmask(proof)) for s in alive]
        return self.server.unmask(responses)

    def expected_ring_sum(self, contributors):
        total = np.zeros(LENGTH + 1, dtype=np.uint32)
        for s in contributors:
            total += self.contributions[s]
        return total

    def expected_mean(self, contributors):
        weights = np.array([self.counts[s] for s in contributors], dtype=float)
        stacked = np.clip(np.array([self.updates[s] for s in contributors]), -1, 1)
        return (stacked * weights[:, None]).sum(axis=0) / weights.sum()


def test_seven_sites_sum_exactly_in_the_ring_and_to_the_fedavg_mean_in_floats():
    rnd = Round()
    result = rnd.run()
    assert result.contributors == SITES
    np.testing.assert_array_equal(result.total, rnd.expected_ring_sum(SITES))
    mean, total_examples = CODEC.decode_weighted_mean(result.total)
    assert total_examples == sum(rnd.counts.values())
    bound = len(SITES) * CODEC.max_examples / (2 * CODEC.scale * total_examples)
    assert np.max(np.abs(mean - rnd.expected_mean(SITES))) <= bound


@pytest.mark.parametrize("dropped", [("site-b",), ("site-a", "site-e")])
def test_sites_dropping_after_sharing_keys_are_unmasked_out_of_the_sum(dropped):
    rnd = Round()
    result = rnd.run(drop_before_masking=dropped)
    contributors = tuple(s for s in SITES if s not in dropped)
    assert result.contributors == contributors
    np.testing.assert_array_equal(result.total, rnd.expected_ring_sum(contributors))


@pytest.mark.parametrize("dropped", [("site-c",), ("site-b", "site-d")])
def test_sites_dropping_after_sending_masked_input_still_count_in_the_sum(dropped):
    rnd = Round()
    result = rnd.run(drop_before_unmasking=dropped)
    assert result.contributors == SITES
    np.testing.assert_array_equal(result.total, rnd.expected_ring_sum(SITES))


def test_sites_dropping_in_every_phase_at_once():
    rnd = Round(threshold=7, sites=SITES + MORE)
    result = rnd.run(
        drop_before_sharing=("site-j",),
        drop_before_masking=("site-a",),
        drop_before_unmasking=("site-i",),
    )
    contributors = ("site-b", "site-c", "site-d", "site-e", "site-f", "site-g", "site-h", "site-i")
    assert result.contributors == contributors
    np.testing.assert_array_equal(result.total, rnd.expected_ring_sum(contributors))


@pytest.mark.parametrize(
    "drops",
    [
        {"drop_before_sharing": ("site-a", "site-b", "site-c")},
        {"drop_before_masking": ("site-a", "site-b", "site-c")},
        {"drop_before_masking": ("site-a",), "drop_before_unmasking": ("site-b", "site-c")},
    ],
)
def test_fewer_than_threshold_survivors_fail_the_round_cleanly(drops):
    with pytest.raises(RoundFailed, match="at least t = 5"):
        Round().run(**drops)


def test_server_only_ever_receives_uniform_looking_masked_vectors_and_keeps_none():
    rnd = Round()
    result = rnd.run()
    for site, masked in rnd.masked.items():
        vector = masked.vector()
        assert np.mean(vector == rnd.contributions[site]) < 0.01
        top_bits = np.bincount((vector >> 28).astype(np.int64), minlength=16)
        expected = vector.size / 16
        chi_square = float(((top_bits - expected) ** 2 / expected).sum())
        assert chi_square < 50  # 15 degrees of freedom: p ≈ 1e-5
    held = [v for v in vars(rnd.server).values() if isinstance(v, np.ndarray)]
    assert len(held) == 1  # the running masked sum, nothing per site
    for contribution in rnd.contributions.values():
        assert np.mean(held[0] == contribution) < 0.01
    assert not result.total.flags.writeable


def test_a_late_masked_input_is_refused_after_the_survivor_list():
    rnd = Round()
    rnd.run(drop_before_masking=("site-b",))
    late = rnd.masked["site-a"]
    with pytest.raises(ProtocolError, match="late"):
        rnd.server.collect_masked_inputs([late])


def _masked(rnd, sites=SITES):
    """Run a round up to the masked inputs; the survivor list the server would send."""
    roster = rnd.server.roster([p.advertise_keys() for p in rnd.parties.values()])
    deliveries = rnd.server.route_shares([p.share_keys(roster) for p in rnd.parties.values()])
    inputs = [rnd.parties[s].masked_input(deliveries[s], rnd.contributions[s]) for s in sites]
    return rnd.server.collect_masked_inputs(inputs)


def test_a_survivor_signs_one_survivor_list_and_reveals_shares_only_for_it():
    rnd = Round()
    survivors = _masked(rnd)
    signatures = [rnd.parties[s].consistency(survivors) for s in SITES]
    site = rnd.parties["site-a"]
    lying = SurvivorList("run-1", 4, SITES[1:])
    with pytest.raises(CryptoError, match="signs only one"):
        site.consistency(lying)
    proof = rnd.server.collect_signatures(signatures)
    assert [r.owner for r in site.unmask(proof).self_mask_shares] == list(SITES)
    other = replace(proof, survivors=SITES[:6], signatures=proof.signatures[:6])
    with pytest.raises(CryptoError, match="another survivor list"):
        site.unmask(other)


def test_shares_are_revealed_only_with_t_valid_signatures_on_the_signed_list():
    rnd = Round()
    survivors = _masked(rnd)
    signatures = [rnd.parties[s].consistency(survivors) for s in SITES]
    proof = rnd.server.collect_signatures(signatures)
    site = rnd.parties["site-a"]
    with pytest.raises(CryptoError, match="only 4 survivors signed"):
        site.unmask(replace(proof, signatures=proof.signatures[:4]))
    forged = replace(proof.signatures[1], signature=bytes(64))
    with pytest.raises(CryptoError, match="does not verify"):
        site.unmask(replace(proof, signatures=(proof.signatures[0], forged, *proof.signatures[2:])))
    stranger = replace(proof.signatures[1], site="site-z")
    with pytest.raises(CryptoError, match="non-survivors"):
        site.unmask(replace(proof, signatures=(*proof.signatures, stranger)))


def test_the_server_refuses_a_forged_consistency_signature():
    rnd = Round()
    survivors = _masked(rnd)
    signed = rnd.parties["site-b"].consistency(survivors)
    with pytest.raises(CryptoError, match="does not verify"):
        rnd.server.collect_signatures([replace(signed, signature=bytes(64))])


def test_survivor_lists_that_omit_the_site_or_name_strangers_are_refused():
    rnd = Round()
    roster = rnd.server.roster([p.advertise_keys() for p in rnd.parties.values()])
    deliveries = rnd.server.route_shares([p.share_keys(roster) for p in rnd.parties.values()])
    site = rnd.parties["site-a"]
    site.masked_input(deliveries["site-a"], rnd.contributions["site-a"])
    with pytest.raises(CryptoError, match="omits"):
        site.consistency(SurvivorList("run-1", 4, SITES[1:]))
    with pytest.raises(CryptoError, match="never shared keys"):
        site.consistency(SurvivorList("run-1", 4, (*SITES, "site-z")))
    with pytest.raises(ProtocolError, match="stale or replayed"):
        site.consistency(SurvivorList("run-1", 3, SITES))
    with pytest.raises(RoundFailed, match="threshold is 5"):
        site.consistency(SurvivorList("run-1", 4, SITES[:4]))


def _flip(data: bytes, position: int) -> bytes:
    altered = bytearray(data)
    altered[position] ^= 0x01
    return bytes(altered)


def test_tampered_or_truncated_masked_vectors_are_rejected():
    rnd = Round()
    rnd.run()
    data = rnd.masked["site-a"].to_bytes()
    with pytest.raises(CryptoError, match="digest"):
        MaskedInput.from_bytes(_flip(data, len(data) // 2))
    with pytest.raises(CryptoError, match="truncated"):
        MaskedInput.from_bytes(data[:-100])
    with pytest.raises(CryptoError, match="expected a MASKED_INPUT"):
        MaskedInput.from_bytes(SurvivorList("r", 1, ("a",)).to_bytes())
    with pytest.raises(CryptoError, match="format version"):
        MaskedInput.from_bytes(data[:5] + b"\x09\x00" + data[7:])
    with pytest.raises(CryptoError, match="ends inside a ring element"):
        replace(rnd.masked["site-a"], masked=b"\x00" * 7)


def test_a_parsed_masked_input_is_a_read_only_view_unaffected_by_later_changes_to_its_bytes():
    rnd = Round()
    rnd.run()
    sent = rnd.masked["site-a"]
    received = bytearray(sent.to_bytes())
    parsed = MaskedInput.from_bytes(received)
    received[-40] ^= 0xFF  # inside the vector
    np.testing.assert_array_equal(parsed.vector(), sent.vector())
    assert not parsed.vector().flags.writeable
    assert parsed == sent and parsed.to_bytes() == sent.to_bytes()


def test_masked_vectors_of_the_wrong_length_or_ring_are_rejected_by_the_server():
    rnd = Round()
    roster = rnd.server.roster([p.advertise_keys() for p in rnd.parties.values()])
    rnd.server.route_shares([p.share_keys(roster) for p in rnd.parties.values()])
    short = MaskedInput("run-1", 4, "site-a", 32, bytes(4 * LENGTH))
    with pytest.raises(CryptoError, match="the round expects"):
        rnd.server.collect_masked_inputs([short])
    wide = MaskedInput("run-1", 4, "site-a", 64, bytes(8 * (LENGTH + 1)))
    with pytest.raises(CryptoError, match="the round expects"):
        rnd.server.collect_masked_inputs([wide])


def test_tampered_sealed_shares_are_rejected_by_their_recipient():
    rnd = Round()
    roster = rnd.server.roster([p.advertise_keys() for p in rnd.parties.values()])
    deliveries = rnd.server.route_shares([p.share_keys(roster) for p in rnd.parties.values()])
    delivery = deliveries["site-c"]
    first = delivery.shares[0]
    altered = replace(first, sealed=_flip(first.sealed, 40))
    tampered = replace(delivery, shares=(altered, *delivery.shares[1:]))
    with pytest.raises(CryptoError, match="fail authentication"):
        rnd.parties["site-c"].masked_input(tampered, rnd.contributions["site-c"])
    redirected = ShareDelivery(
        "run-1",
        4,
        "site-d",
        tuple(replace(s, recipient="site-d") for s in delivery.shares if s.sender != "site-d"),
    )
    with pytest.raises(CryptoError, match="fail authentication"):
        rnd.parties["site-d"].masked_input(redirected, rnd.contributions["site-d"])
    with pytest.raises(CryptoError, match="truncated"):
        ShareDelivery.from_bytes(delivery.to_bytes()[:-40])


@pytest.mark.parametrize("kind", ["self_mask_shares", "mask_key_shares"])
def test_tampered_revealed_shares_are_caught_by_the_commitment_or_public_key(kind):
    rnd = Round()
    alive = SITES[:6]  # site-g drops after sharing: its mask key is revealed
    survivors = _masked(rnd, alive)
    proof = rnd.server.collect_signatures([rnd.parties[s].consistency(survivors) for s in alive])
    responses = [rnd.parties[s].unmask(proof) for s in alive]
    revealed = getattr(responses[0], kind)
    share = revealed[0].share
    # (a change of the low 3 bits of an X25519 key can be harmless: clamping clears them)
    altered = shamir.Share(share.x, (share.value + (1 << 100)) % shamir.PRIME)
    bad = RevealedShare(revealed[0].owner, altered)
    responses[0] = replace(responses[0], **{kind: (bad, *revealed[1:])})
    with pytest.raises(CryptoError, match=r"share was altered|share is wrong"):
        rnd.server.unmask(responses)


def test_a_response_revealing_the_wrong_kind_of_share_is_rejected():
    rnd = Round()
    survivors = _masked(rnd)
    proof = rnd.server.collect_signatures([rnd.parties[s].consistency(survivors) for s in SITES])
    responses = [rnd.parties[s].unmask(proof) for s in SITES]
    responses[1] = replace(responses[1], mask_key_shares=responses[1].self_mask_shares[:1])
    with pytest.raises(CryptoError, match="exactly the dropped sites"):
        rnd.server.unmask(responses)


def test_rosters_are_checked_by_sites_and_server():
    rnd = Round()
    ads = [p.advertise_keys() for p in rnd.parties.values()]
    roster = rnd.server.roster(ads)
    impostor = SecAggSite(rnd.setup, IDENTITIES["site-a"], CONSORTIUM).advertise_keys()
    swapped = replace(roster, advertisements=(impostor, *roster.advertisements[1:]))
    with pytest.raises(CryptoError, match="own keys"):
        rnd.parties["site-a"].share_keys(swapped)
    # site-b's keys endorsed by site-c's identity, or altered after endorsement
    borrowed = replace(roster.advertisements[1], endorsement=roster.advertisements[2].endorsement)
    with pytest.raises(CryptoError, match="endorsed by the certificate of 'site-c'"):
        rnd.parties["site-a"].share_keys(_with(roster, 1, borrowed))
    altered = replace(roster.advertisements[1], mask_public_key=impostor.mask_public_key)
    with pytest.raises(CryptoError, match="not signed by 'site-b'"):
        rnd.parties["site-a"].share_keys(_with(roster, 1, altered))
    stranger, _ = ephemeral_consortium(["site-b"])
    outsider = SecAggSite(rnd.setup, IDENTITIES["site-a"], stranger)
    with pytest.raises(CryptoError, match="CA did not issue"):
        outsider.share_keys(_with(roster, 0, outsider.advertise_keys()))
    with pytest.raises(CryptoError, match="threshold 2 differs"):
        rnd.parties["site-b"].share_keys(replace(roster, threshold=2))
    with pytest.raises(CryptoError, match="fresh per round"):
        SecAggServer(rnd.setup).roster([ads[0], replace(ads[0], site="site-z")])
    with pytest.raises(CryptoError, match="does not exceed two thirds"):
        SecAggServer(RoundSetup("run-1", 4, 4, LENGTH + 1)).roster(ads)
    with pytest.raises(CryptoError, match="at least 3"):
        SecAggServer(RoundSetup("run-1", 4, 2, LENGTH + 1)).roster(ads[:2])
    assert [minimum_threshold(n) for n in (3, 4, 5, 6, 7, 10)] == [3, 3, 4, 5, 5, 7]


def _with(roster, index, advertisement):
    ads = list(roster.advertisements)
    ads[index] = advertisement
    return replace(roster, advertisements=tuple(ads))


def test_phases_run_in_order_and_once():
    rnd = Round()
    with pytest.raises(ProtocolError, match="after the key roster"):
        rnd.server.route_shares([])
    with pytest.raises(ProtocolError, match="must share its keys"):
        rnd.parties["site-a"].masked_input(ShareDelivery("run-1", 4, "site-a", ()), np.zeros(1))
    rnd.run()
    with pytest.raises(ProtocolError, match="once"):
        rnd.server.unmask([])
