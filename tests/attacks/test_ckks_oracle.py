"""CKKS without a decryption oracle: a keyless coordinator cannot get one site's update decrypted.

Five real sites hold the consortium's CKKS key; the malicious coordinator holds their signed
contributions and the public context (it can add, subtract and add plaintexts to ciphertexts,
but not decrypt). Victim: ``site-a``; no site colludes (a colluding key holder decrypts the
victim's ciphertext itself: docs/ckks.md). Each ``weakened`` twin removes one site-side check
by monkeypatch and shows that the same attack then returns Δ_victim.
"""

import numpy as np
import pytest

from fedpharma.secure import ckks
from fedpharma.secure.ckks import EncryptedUpdate
from fedpharma.secure.contributors import (
    SetSignature,
    SignedContribution,
    contribution_statement,
    update_digest,
)
from fedpharma.secure.identity import Consortium, ephemeral_consortium
from fedpharma.site import secure as site_secure
from tests.attacks.malicious_coordinator import (
    RUN,
    SITES,
    VICTIM,
    CKKSAttack,
    Stopped,
    build_sites,
    ckks_key,
    clipped,
)

RECOVERED = 1e-6
DECRYPTOR = "site-b"


def _recovered(estimate) -> bool:
    return bool(
        np.max(np.abs(np.asarray(estimate, dtype=np.float64) - clipped(VICTIM))) < RECOVERED
    )


def _trust_the_coordinator(monkeypatch):
    """The weakened build: the decrypting site adds whatever ciphertexts it is sent."""

    def unchecked(consortium, request, signed):
        return [EncryptedUpdate.from_bytes(bytes(update)) for update in request.updates]

    monkeypatch.setattr(site_secure, "check_decrypt_request", unchecked)


# ----- (a) one site's ciphertext submitted as everyone's --------------------------------


def duplicate_ciphertext() -> np.ndarray:
    attack = CKKSAttack(build_sites(ckks=True))
    contributors, signatures, _ = attack.honest_set(SITES)
    victim = attack.uploads[VICTIM].update
    decrypted = attack.decrypt(DECRYPTOR, contributors, signatures, [victim] * len(SITES))
    return decrypted.mean  # 5·n_a·Δ_a / 5·n_a


def test_one_ciphertext_submitted_for_every_contributor_is_refused():
    with pytest.raises(Stopped, match="not the one it signed"):
        duplicate_ciphertext()


def test_weakened_duplicate_ciphertext_decrypts_to_the_victims_update(monkeypatch):
    _trust_the_coordinator(monkeypatch)
    assert _recovered(duplicate_ciphertext())


def test_a_contributor_set_listing_one_ciphertext_twice_is_not_signed():
    attack = CKKSAttack(build_sites(ckks=True))
    uploads = dict(attack.uploads)
    uploads["site-c"] = uploads[VICTIM]
    with pytest.raises(Stopped, match="one ciphertext twice"):
        attack.signatures(attack.contributor_set(SITES, uploads), (DECRYPTOR,))


# ----- (b) a plaintext added to the encrypted contributor count -------------------------


def forged_count() -> np.ndarray:
    """Enc(n_a·Δ_a, n_a, 1) + (0, …, 0, 4): one update that counts as five contributors."""
    attack = CKKSAttack(build_sites(ckks=True))
    contributors, signatures, _ = attack.honest_set(SITES)
    victim = SignedContribution.from_bytes(attack.uploads[VICTIM].to_bytes()).encrypted()
    chunks = list(victim.chunks)
    last = len(chunks) - 1
    size = ckks._chunk_size(victim.length, last)
    vector = ckks._load_vector(attack.context._context, chunks[last], size)
    shift = np.zeros(size)
    shift[-1] = len(SITES) - 1
    chunks[last] = ckks._serialize(vector + shift.tolist())
    forged = EncryptedUpdate(victim.key_id, victim.length, tuple(chunks)).to_bytes()
    return attack.decrypt(DECRYPTOR, contributors, signatures, [forged]).mean


def test_a_plaintext_added_to_the_contributor_count_is_refused():
    with pytest.raises(Stopped, match="every member's contribution"):
        forged_count()


def test_weakened_forged_count_decrypts_to_the_victims_update(monkeypatch):
    _trust_the_coordinator(monkeypatch)
    assert _recovered(forged_count())


# ----- (c) differencing: two contributor sets of one round that differ in the victim -----


def differencing() -> np.ndarray:
    """Decrypt {a, b, c, d} at site-a and {b, c, d} at site-b; the difference is n_a·Δ_a.
    (The coordinator equivocates: it shows b, c and d a second set after the first.)"""
    attack = CKKSAttack(build_sites(ckks=True))
    with_victim = ("site-a", "site-b", "site-c", "site-d")
    without = ("site-b", "site-c", "site-d")
    first = attack.decrypt(VICTIM, *attack.honest_set(with_victim))
    second = attack.decrypt(DECRYPTOR, *attack.honest_set(without))
    n_victim = first.n_examples - second.n_examples
    weighted = first.mean.astype(np.float64) * first.n_examples
    return (weighted - second.mean.astype(np.float64) * second.n_examples) / n_victim


def test_a_second_contributor_set_in_one_round_is_not_signed():
    with pytest.raises(Stopped, match="signs only one"):
        differencing()


def test_weakened_differencing_recovers_the_victims_update(monkeypatch):
    monkeypatch.setattr(site_secure, "check_first_set", lambda signed_before: None)
    assert _recovered(differencing())


def test_a_site_decrypts_only_the_set_it_signed_and_only_once():
    attack = CKKSAttack(build_sites(ckks=True))
    contributors, signatures, updates = attack.honest_set(SITES)
    smaller = attack.contributor_set(SITES[1:])
    with pytest.raises(Stopped, match="another contributor set"):
        attack.decrypt(DECRYPTOR, smaller, signatures[1:], updates[1:])
    # the refused request used up site-b's one decryption of the round
    with pytest.raises(Stopped, match="no secure-aggregation round"):
        attack.decrypt(DECRYPTOR, contributors, signatures, updates)
    mean = attack.decrypt("site-c", contributors, signatures, updates).mean
    assert mean.size == clipped(VICTIM).size
    with pytest.raises(Stopped, match="one signature of every member"):
        attack.decrypt("site-d", contributors, signatures[1:], updates)


def test_a_contribution_replayed_from_an_earlier_round_is_not_signed():
    sites = build_sites(ckks=True)
    first = CKKSAttack(sites, rnd=1)
    second = CKKSAttack(sites, rnd=2)
    uploads = dict(second.uploads) | {VICTIM: first.uploads[VICTIM]}
    replayed = second.contributor_set(SITES, uploads)
    with pytest.raises(Stopped, match="not signed by 'site-a'"):
        second.signatures(replayed, (DECRYPTOR,))


def test_a_site_refuses_sums_below_its_floor():
    with pytest.raises(Stopped, match="requires 4"):
        CKKSAttack(build_sites(ckks=True, min_sites=4))
    attack = CKKSAttack(build_sites(ckks=True))
    with pytest.raises(Stopped, match="at least 3 are needed"):
        attack.signatures(attack.contributor_set(SITES[:2]), (VICTIM,))
    assert ckks_key().key_id == attack.context.key_id


# ----- (d) a contributor set padded with sites the coordinator made up ---------------------


def sybil_set() -> np.ndarray:
    """{victim, site-x, site-y}, the invented sites under certificates from a CA the coordinator
    made. From two of the victim's ciphertexts (this round's v and an earlier round's v′) the
    keyless coordinator makes their contributions Enc(v − v′) + (0, …, 1) and Enc(v′ − v) +
    (0, …, 1), which cancel in the sum: the victim decrypts its own update as a 'sum of three'."""
    sites = build_sites((VICTIM,), ckks=True)
    earlier = CKKSAttack(sites, rnd=1).uploads[VICTIM].encrypted()
    attack = CKKSAttack(sites, rnd=2)
    _, forged = ephemeral_consortium(SYBILS)
    now = attack.uploads[VICTIM].encrypted()
    uploads = dict(attack.uploads)
    for name, (first, second) in zip(SYBILS, [(now, earlier), (earlier, now)], strict=True):
        zero = _zero_but_one_contributor(attack, first, second)
        statement = contribution_statement(RUN, 2, name, update_digest(zero))
        uploads[name] = SignedContribution(RUN, 2, name, zero, forged[name].endorse(statement))
    contributors = attack.contributor_set((VICTIM, *SYBILS), uploads)
    signatures = attack.signatures(contributors, (VICTIM,))
    signatures += tuple(
        SetSignature(name, forged[name].endorse(contributors.statement())) for name in SYBILS
    )
    ordered = tuple(sorted(signatures, key=lambda s: s.site))
    updates = [uploads[s].update for s in contributors.sites]
    return attack.decrypt(VICTIM, contributors, ordered, updates).mean


def _zero_but_one_contributor(attack, first, second) -> bytes:
    """first − second + (0, …, 0, 1), by the coordinator's keyless context."""
    chunks = []
    for index, (a, b) in enumerate(zip(first.chunks, second.chunks, strict=True)):
        size = ckks._chunk_size(first.length, index)
        context = attack.context._context
        difference = ckks._load_vector(context, a, size) - ckks._load_vector(context, b, size)
        one = np.zeros(size)
        if index == len(first.chunks) - 1:
            one[-1] = 1.0
        chunks.append(ckks._serialize(difference + one.tolist()))
    return EncryptedUpdate(first.key_id, first.length, tuple(chunks)).to_bytes()


SYBILS = ("site-x", "site-y")


def test_a_contributor_set_padded_with_invented_sites_is_not_signed():
    with pytest.raises(Stopped, match="CA did not issue"):
        sybil_set()


def test_weakened_set_without_endorsement_checks_decrypts_the_victims_update(monkeypatch):
    monkeypatch.setattr(Consortium, "check", lambda self, site, statement, endorsement: None)
    assert _recovered(sybil_set())
