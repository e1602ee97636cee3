"""The coordinator's side of a secure-aggregation round (Bonawitz et al. 2017, §4, the server).

:class:`SecAggServer` relays keys and sealed shares, adds masked inputs into one running sum,
and strips the masks off with the shares the survivors reveal; it learns only the sum
(:class:`SecureSum`). See ``docs/secure-aggregation.md`` for the protocol and its threat model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedpharma.core.errors import CryptoError, ProtocolError
from fedpharma.secure import shamir
from fedpharma.secure.identity import verify_ed25519
from fedpharma.secure.quantize import RingVector
from fedpharma.secure.secagg.masks import Mask, add_masks, pairwise_mask, self_mask_commitment
from fedpharma.secure.secagg.messages import (
    ConsistencyProof,
    ConsistencySignature,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    ShareBundle,
    ShareDelivery,
    SurvivorList,
    UnmaskingShares,
    consistency_statement,
)
from fedpharma.secure.secagg.round import (
    RoundSetup,
    check_roster,
    check_round,
    require_threshold,
)


@dataclass(frozen=True, eq=False)
class SecureSum:
    """The coordinator's result: Σ x_u over ``contributors`` (= U3) in the ring, read-only."""

    run_id: str
    round: int
    contributors: tuple[str, ...]
    total: RingVector


class SecAggServer:
    """The coordinator's side of one round.

    It only ever receives public keys, sealed shares, masked vectors and revealed shares; masked
    vectors are added into one running sum as they arrive and not kept, so the object never holds
    an individual site's vector, masked or not.
    """

    def __init__(self, setup: RoundSetup) -> None:
        self.setup = setup
        self._roster: KeyRoster | None = None
        self._commitments: dict[str, bytes] | None = None
        self._survivors: tuple[str, ...] | None = None
        self._signers: frozenset[str] | None = None
        self._masked_sum: RingVector | None = None
        self._done = False

    def roster(self, advertisements: Sequence[KeyAdvertisement]) -> KeyRoster:
        """Phase 0: the roster U1 of the sites that advertised keys, for every one of them."""
        if self._roster is not None:
            raise ProtocolError("the key roster of this round is already fixed")
        for ad in advertisements:
            check_round(self.setup, ad.run_id, ad.round, f"key advertisement of {ad.site!r}")
        ordered = tuple(sorted(advertisements, key=lambda a: a.site))
        sites = [a.site for a in ordered]
        if len(set(sites)) != len(sites):
            raise ProtocolError("a site advertised keys twice in one round")
        keys = [
            k
            for a in ordered
            for k in (a.cipher_public_key, a.mask_public_key, a.signing_public_key)
        ]
        if len(set(keys)) != len(keys):
            raise CryptoError("two advertised public keys are equal: keys must be fresh per round")
        require_threshold(self.setup, len(ordered), "advertised keys")
        roster = KeyRoster(self.setup.run_id, self.setup.round, self.setup.threshold, ordered)
        check_roster(self.setup, roster)
        self._roster = roster
        return roster

    def route_shares(self, bundles: Sequence[ShareBundle]) -> dict[str, ShareDelivery]:
        """Phase 1: U2 = senders of complete bundles; each member gets the shares sent to it."""
        if self._roster is None or self._commitments is not None:
            raise ProtocolError("shares are routed once, after the key roster")
        roster_sites = set(self._roster.sites)
        by_site: dict[str, ShareBundle] = {}
        for bundle in bundles:
            check_round(self.setup, bundle.run_id, bundle.round, f"shares of {bundle.site!r}")
            if bundle.site not in roster_sites or bundle.site in by_site:
                raise ProtocolError(f"unexpected or repeated share bundle from {bundle.site!r}")
            recipients = [s.recipient for s in bundle.shares]
            if sorted(recipients) != sorted(roster_sites - {bundle.site}):
                raise CryptoError(
                    f"{bundle.site!r} must send exactly one sealed share to every other roster "
                    "member"
                )
            by_site[bundle.site] = bundle
        require_threshold(self.setup, len(by_site), "shared keys")
        self._commitments = {site: b.self_mask_commitment for site, b in by_site.items()}
        return {
            recipient: ShareDelivery(
                self.setup.run_id,
                self.setup.round,
                recipient,
                tuple(
                    share
                    for sender in sorted(by_site)
                    for share in by_site[sender].shares
                    if share.recipient == recipient
                ),
            )
            for recipient in sorted(by_site)
        }

    def collect_masked_inputs(self, inputs: Sequence[MaskedInput]) -> SurvivorList:
        """Phase 2: add the masked inputs into the running sum; U3 = their senders.

        Called once: a masked input arriving after the survivor list is out is refused.
        """
        if self._commitments is None or self._survivors is not None:
            raise ProtocolError(
                "masked inputs are collected once, after the shares were routed; "
                "a late masked input is not accepted"
            )
        total = np.zeros(self.setup.vector_length, dtype=self.setup.dtype)
        senders: list[str] = []
        for masked in inputs:
            check_round(self.setup, masked.run_id, masked.round, f"input of {masked.site!r}")
            if masked.site not in self._commitments or masked.site in senders:
                raise ProtocolError(f"unexpected or repeated masked input from {masked.site!r}")
            vector = masked.vector()
            if masked.ring_bits != self.setup.ring_bits or vector.size != self.setup.vector_length:
                raise CryptoError(
                    f"masked input of {masked.site!r} has {vector.size} {masked.ring_bits}-bit "
                    f"elements, the round expects {self.setup.vector_length} "
                    f"{self.setup.ring_bits}-bit ones"
                )
            total += vector
            senders.append(masked.site)
        require_threshold(self.setup, len(senders), "sent masked inputs")
        self._masked_sum = total
        self._survivors = tuple(sorted(senders))
        return SurvivorList(self.setup.run_id, self.setup.round, self._survivors)

    def collect_signatures(self, signatures: Sequence[ConsistencySignature]) -> ConsistencyProof:
        """Consistency check: the survivors' valid signatures on U3, at least t of them; the
        unmasking request every signer receives."""
        if self._survivors is None or self._signers is not None:
            raise ProtocolError("signatures are collected once, after the survivor list")
        assert self._roster is not None
        statement = consistency_statement(self.setup.run_id, self.setup.round, self._survivors)
        valid: dict[str, ConsistencySignature] = {}
        for signed in signatures:
            check_round(self.setup, signed.run_id, signed.round, f"signature of {signed.site!r}")
            if signed.site not in self._survivors or signed.site in valid:
                raise ProtocolError(f"unexpected or repeated signature from {signed.site!r}")
            key = self._roster.advertisement_of(signed.site).signing_public_key
            verify_ed25519(key, signed.signature, statement, f"signature of {signed.site!r}")
            valid[signed.site] = signed
        require_threshold(self.setup, len(valid), "signed the survivor list")
        self._signers = frozenset(valid)
        ordered = tuple(valid[site] for site in sorted(valid))
        return ConsistencyProof(self.setup.run_id, self.setup.round, self._survivors, ordered)

    def unmask(self, responses: Sequence[UnmaskingShares]) -> SecureSum:
        """Phase 3: reconstruct each survivor's b_v and each dropout's s_v^SK from t responders,
        verify them, and strip every remaining mask off the sum."""
        if self._signers is None or self._masked_sum is None or self._done:
            raise ProtocolError("unmasking runs once, after the consistency check")
        assert self._roster is not None and self._commitments is not None
        assert self._survivors is not None
        survivors = set(self._survivors)
        dropped = sorted(set(self._commitments) - survivors)
        by_site: dict[str, UnmaskingShares] = {}
        for response in responses:
            site = response.site
            check_round(self.setup, response.run_id, response.round, f"shares of {site!r}")
            if site not in self._signers or site in by_site:
                raise ProtocolError(f"unexpected or repeated unmasking shares from {site!r}")
            self_owners = [r.owner for r in response.self_mask_shares]
            key_owners = [r.owner for r in response.mask_key_shares]
            if self_owners != list(self._survivors) or key_owners != dropped:
                raise CryptoError(
                    f"{site!r} must reveal self-mask shares of exactly the survivors and "
                    "mask-key shares of exactly the dropped sites"
                )
            point = self._roster.point_of(site)
            if any(
                r.share.x != point for r in (*response.self_mask_shares, *response.mask_key_shares)
            ):
                raise CryptoError(f"{site!r} revealed shares at another site's point")
            by_site[site] = response
        require_threshold(self.setup, len(by_site), "answered the unmasking request")
        responders = sorted(by_site)[: self.setup.threshold]
        coefficients = shamir.lagrange_at_zero([self._roster.point_of(s) for s in responders])

        masks = []
        for index, owner in enumerate(self._survivors):
            shares = [by_site[s].self_mask_shares[index].share for s in responders]
            seed = shamir.combine(shares, coefficients)
            if self_mask_commitment(self.setup, owner, seed) != self._commitments[owner]:
                raise CryptoError(
                    f"the self-mask seed of {owner!r} rebuilt from shares of {responders} does "
                    "not match its commitment: a revealed share was altered"
                )
            masks.append(Mask(seed, -1))
        for index, owner in enumerate(dropped):
            shares = [by_site[s].mask_key_shares[index].share for s in responders]
            mask_key = X25519PrivateKey.from_private_bytes(shamir.combine(shares, coefficients))
            advertised = self._roster.advertisement_of(owner).mask_public_key
            if mask_key.public_key().public_bytes_raw() != advertised:
                raise CryptoError(
                    f"the mask key of dropped site {owner!r} rebuilt from shares of {responders} "
                    "does not match its public key: a revealed share was altered"
                )
            for survivor in self._survivors:
                survivor_key = self._roster.advertisement_of(survivor).mask_public_key
                # the mask the dropped owner would have added cancels the survivor's
                masks.append(pairwise_mask(self.setup, mask_key, owner, survivor, survivor_key))
        total = self._masked_sum  # unmasked in place: only the sum is ever held
        add_masks(total, masks)
        self._done = True
        total.flags.writeable = False
        return SecureSum(self.setup.run_id, self.setup.round, self._survivors, total)
