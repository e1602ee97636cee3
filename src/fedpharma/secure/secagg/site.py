"""One site's side of a secure-aggregation round (Bonawitz et al. 2017, §4, the client).

A :class:`SecAggSite` holds the round's secrets: two fresh X25519 key pairs, a fresh Ed25519
round signing key, the self-mask seed b_u and the Shamir shares it received, sealed site-to-site
with AES-256-GCM through the coordinator. Against an active coordinator it accepts only key
advertisements endorsed by the consortium PKI and reveals shares only for the one survivor set
U3 it signed, carrying t signatures (the ConsistencyCheck round). See
``docs/secure-aggregation.md`` for the protocol and its threat model.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedpharma.core.errors import CryptoError, ProtocolError, RoundFailed
from fedpharma.secure import shamir
from fedpharma.secure.frames import Writer
from fedpharma.secure.identity import Consortium, SiteIdentity, verify_ed25519
from fedpharma.secure.quantize import RingVector
from fedpharma.secure.secagg.masks import (
    Mask,
    add_masks,
    agree,
    derive_key,
    pairwise_mask,
    self_mask_commitment,
)
from fedpharma.secure.secagg.messages import (
    KEY_BYTES,
    NONCE_BYTES,
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
    advertisement_statement,
    consistency_statement,
)
from fedpharma.secure.secagg.round import RoundSetup, check_roster, check_round

_SHARE_PURPOSE = "fedpharma/secagg/share-encryption/v1"


class SecAggSite:
    """One site's side of one round. Holds the round's secrets; create a new one every round.

    ``identity`` endorses this site's advertisement; ``consortium`` checks everyone else's.
    """

    def __init__(self, setup: RoundSetup, identity: SiteIdentity, consortium: Consortium) -> None:
        self.setup = setup
        self.site = identity.name
        self.consortium = consortium
        self._cipher_key = X25519PrivateKey.generate()
        self._mask_key = X25519PrivateKey.generate()
        self._signing_key = Ed25519PrivateKey.generate()
        cipher = self._cipher_key.public_key().public_bytes_raw()
        mask = self._mask_key.public_key().public_bytes_raw()
        signing = self._signing_key.public_key().public_bytes_raw()
        statement = advertisement_statement(
            setup.run_id, setup.round, self.site, cipher, mask, signing
        )
        self._advertisement = KeyAdvertisement(
            setup.run_id,
            setup.round,
            self.site,
            cipher,
            mask,
            signing,
            identity.endorse(statement),
        )
        self._signed: tuple[str, ...] | None = None
        self._roster: KeyRoster | None = None
        self._self_mask_seed: bytes | None = None
        self._own_self_mask_share: shamir.Share | None = None
        self._held: dict[str, tuple[shamir.Share, shamir.Share]] | None = None
        self._share_keys: dict[str, bytes] = {}  # AES-GCM key per peer, for both directions

    def advertise_keys(self) -> KeyAdvertisement:
        """Phase 0: the three public keys of this round, endorsed by this site's identity."""
        return self._advertisement

    def share_keys(self, roster: KeyRoster) -> ShareBundle:
        """Phase 1: check the roster, draw b_u, and seal shares of s_u^SK and b_u for the others."""
        if self._roster is not None:
            raise ProtocolError(f"{self.site!r} already shared its keys this round")
        check_round(self.setup, roster.run_id, roster.round, "key roster")
        check_roster(self.setup, roster)
        if roster.advertisements.count(self.advertise_keys()) != 1:
            raise CryptoError(
                f"the key roster does not carry {self.site!r}'s own keys: "
                "the coordinator altered or replayed it"
            )
        check_endorsements(self.consortium, roster)
        self._roster = roster
        self._self_mask_seed = os.urandom(KEY_BYTES)
        points = [roster.point_of(site) for site in roster.sites]
        threshold = self.setup.threshold
        mask_key_shares = shamir.split(self._mask_key.private_bytes_raw(), threshold, points)
        self_mask_shares = shamir.split(self._self_mask_seed, threshold, points)
        self._own_self_mask_share = self_mask_shares[roster.point_of(self.site)]
        sealed = []
        for peer in roster.sites:
            if peer == self.site:
                continue
            point = roster.point_of(peer)
            plaintext = mask_key_shares[point].value_bytes() + self_mask_shares[point].value_bytes()
            key = self._share_keys[peer] = self._share_key(peer)
            nonce = os.urandom(NONCE_BYTES)
            aad = _share_aad(self.setup, self.site, peer)
            ciphertext = AESGCM(key).encrypt(nonce, plaintext, aad)
            sealed.append(EncryptedShares(self.site, peer, nonce + ciphertext))
        commitment = self_mask_commitment(self.setup, self.site, self._self_mask_seed)
        return ShareBundle(
            self.setup.run_id, self.setup.round, self.site, commitment, tuple(sealed)
        )

    def masked_input(self, delivery: ShareDelivery, contribution: RingVector) -> MaskedInput:
        """Phase 2: open the shares addressed to this site and mask ``contribution``.

        ``contribution`` is the quantized update (e.g. :meth:`FixedPoint.encode_weighted`), of
        the setup's ring dtype and length.
        """
        if self._roster is None or self._self_mask_seed is None:
            raise ProtocolError(f"{self.site!r} must share its keys before masking its input")
        if self._held is not None:
            raise ProtocolError(f"{self.site!r} already sent its masked input this round")
        check_round(self.setup, delivery.run_id, delivery.round, "share delivery")
        if delivery.recipient != self.site:
            raise ProtocolError(f"{self.site!r} received shares meant for {delivery.recipient!r}")
        expected = (self.setup.vector_length,)
        if contribution.dtype != self.setup.dtype or contribution.shape != expected:
            raise CryptoError(
                f"contribution is {contribution.dtype}{list(contribution.shape)}, the round "
                f"expects {self.setup.dtype}[{self.setup.vector_length}]; quantize it first"
            )
        senders = [s.sender for s in delivery.shares]
        if len(set(senders)) != len(senders) or not set(senders) <= set(self._roster.sites):
            raise CryptoError("share delivery repeats senders or names sites outside the roster")
        if self.site in senders:
            raise CryptoError(f"share delivery claims {self.site!r} sent shares to itself")
        if len(senders) + 1 < self.setup.threshold:
            raise RoundFailed(
                f"only {len(senders) + 1} sites shared keys, the threshold is "
                f"{self.setup.threshold}; the round cannot complete"
            )
        held = {s.sender: self._open(s) for s in delivery.shares}
        masks = [Mask(self._self_mask_seed, +1)]
        for peer in senders:
            peer_key = self._roster.advertisement_of(peer).mask_public_key
            masks.append(pairwise_mask(self.setup, self._mask_key, self.site, peer, peer_key))
        masked = contribution.copy()
        add_masks(masked, masks)
        self._held = held
        return MaskedInput(
            self.setup.run_id, self.setup.round, self.site, self.setup.ring_bits, masked.tobytes()
        )

    def consistency(self, survivors: SurvivorList) -> ConsistencySignature:
        """Consistency check: sign the survivor list U3 with the round key, once per round.

        Refuses lists that omit this site, name sites that never shared keys, or hold fewer than
        t sites.
        """
        if self._held is None or self._roster is None:
            raise ProtocolError(f"{self.site!r} has not sent a masked input this round")
        if self._signed is not None:
            raise CryptoError(
                f"{self.site!r} already signed a survivor list this round; it signs only one"
            )
        check_round(self.setup, survivors.run_id, survivors.round, "survivor list")
        sharers = set(self._held) | {self.site}
        alive = set(survivors.survivors)
        if list(survivors.survivors) != sorted(alive) or not alive <= sharers:
            raise CryptoError(
                "survivor list is unsorted, repeats sites or names sites that never shared keys"
            )
        if self.site not in alive:
            raise CryptoError(
                f"survivor list omits {self.site!r}, which sent its masked input; refusing"
            )
        if len(alive) < self.setup.threshold:
            raise RoundFailed(
                f"{len(alive)} sites survived, the threshold is {self.setup.threshold}; "
                "the round cannot be unmasked"
            )
        self._signed = survivors.survivors
        statement = consistency_statement(self.setup.run_id, self.setup.round, self._signed)
        signature = self._signing_key.sign(statement)
        return ConsistencySignature(self.setup.run_id, self.setup.round, self.site, signature)

    def unmask(self, proof: ConsistencyProof) -> UnmaskingShares:
        """Phase 3: b-shares of survivors, s^SK-shares of sites that dropped after sharing keys,
        for the survivor list this site signed and only with t of its members' signatures.

        Because it signs one list per round, it never reveals both kinds of share of one owner
        (with both, the coordinator could unmask that owner's input).
        """
        if self._held is None or self._roster is None or self._own_self_mask_share is None:
            raise ProtocolError(f"{self.site!r} has not sent a masked input this round")
        if self._signed is None:
            raise ProtocolError(f"{self.site!r} reveals shares only after the consistency check")
        check_round(self.setup, proof.run_id, proof.round, "unmasking request")
        check_consistency(self.setup, self._roster, self._signed, proof)
        sharers = set(self._held) | {self.site}
        alive = set(self._signed)
        self_mask_shares = {o: held[1] for o, held in self._held.items()}
        self_mask_shares[self.site] = self._own_self_mask_share
        self_mask = [RevealedShare(o, self_mask_shares[o]) for o in sorted(alive)]
        mask_key = [RevealedShare(o, self._held[o][0]) for o in sorted(sharers - alive)]
        return UnmaskingShares(
            self.setup.run_id, self.setup.round, self.site, tuple(self_mask), tuple(mask_key)
        )

    def _share_key(self, peer: str) -> bytes:
        assert self._roster is not None
        peer_key = self._roster.advertisement_of(peer).cipher_public_key
        shared = agree(self._cipher_key, peer_key, peer)
        return derive_key(shared, _SHARE_PURPOSE, self.setup, self.site, peer)

    def _open(self, sealed: EncryptedShares) -> tuple[shamir.Share, shamir.Share]:
        assert self._roster is not None
        key = self._share_keys[sealed.sender]
        aad = _share_aad(self.setup, sealed.sender, self.site)
        try:
            plaintext = AESGCM(key).decrypt(
                sealed.sealed[:NONCE_BYTES], sealed.sealed[NONCE_BYTES:], aad
            )
        except InvalidTag as exc:
            raise CryptoError(
                f"shares from {sealed.sender!r} fail authentication: altered in transit or "
                "sealed for another site, run or round"
            ) from exc
        point = self._roster.point_of(self.site)
        half = shamir.SHARE_VALUE_BYTES
        return (
            shamir.Share.from_value_bytes(point, plaintext[:half]),
            shamir.Share.from_value_bytes(point, plaintext[half:]),
        )


def check_endorsements(consortium: Consortium, roster: KeyRoster) -> None:
    """Refuse a roster holding an advertisement its site's identity did not endorse, or a
    round signing key used twice (the coordinator inventing or altering sites)."""
    signing_keys = [ad.signing_public_key for ad in roster.advertisements]
    if len(set(signing_keys)) != len(signing_keys):
        raise CryptoError("two roster sites advertise the same signing key")
    for ad in roster.advertisements:
        consortium.check(ad.site, ad.statement(), ad.endorsement)


def check_consistency(
    setup: RoundSetup, roster: KeyRoster, signed: tuple[str, ...], proof: ConsistencyProof
) -> None:
    """Refuse an unmasking request for another survivor list than the one this site signed,
    or one without t valid signatures of its members on it (Bonawitz et al. 2017, §4)."""
    if proof.survivors != signed:
        raise CryptoError(
            "the unmasking request names another survivor list than the one this site signed: "
            "the coordinator showed different sites different lists"
        )
    signers = [s.site for s in proof.signatures]
    if len(set(signers)) != len(signers) or not set(signers) <= set(signed):
        raise CryptoError("the consistency proof repeats signers or names non-survivors")
    statement = consistency_statement(setup.run_id, setup.round, signed)
    for signature in proof.signatures:
        key = roster.advertisement_of(signature.site).signing_public_key
        verify_ed25519(
            key, signature.signature, statement, f"consistency signature of {signature.site!r}"
        )
    if len(signers) < setup.threshold:
        raise CryptoError(
            f"only {len(signers)} survivors signed the survivor list, t = {setup.threshold} "
            "are needed before any share is revealed"
        )


def _share_aad(setup: RoundSetup, sender: str, recipient: str) -> bytes:
    writer = Writer().name(_SHARE_PURPOSE).name(setup.run_id).u64(setup.round)
    return writer.name(sender).name(recipient).getvalue()
