"""Pairwise-mask secure aggregation with dropout recovery (Bonawitz et al. 2017, CCS).

"Practical Secure Aggregation for Privacy-Preserving Machine Learning", §4 (protocol), Fig. 4.
The coordinator learns Σ_u x_u over the sites u that sent a masked input, and nothing else about
any individual x_u. Each site sends

    y_u = x_u + PRG(b_u) + Σ_{v ∈ U2, v ≠ u} σ(u, v) · PRG(s_uv)   (mod 2^k)

with σ(u, v) = +1 if u < v else −1 (site ids compared as strings), so the pairwise masks cancel
in the sum, and the self-masks PRG(b_u) are removed once t survivors reveal shares of each b_u.
For a site v that dropped after the key exchange, the survivors reveal shares of its mask key
s_v^SK instead, and the coordinator recomputes and removes v's pairwise masks with every
survivor. The double mask is what makes dropout recovery safe: if v's masked
input arrives *after* v was declared dropped, the coordinator knows v's pairwise masks but never
b_v, so y_v still looks uniform. An honest site therefore never reveals both kinds of share for
the same owner (:meth:`SecAggSite.unmask` refuses with :class:`CryptoError`).

Phases (one method per phase on each side, messages are frozen dataclasses with ``to_bytes`` /
``from_bytes``)::

    site                                coordinator
    advertise_keys()   ─KeyAdvertisement─▶  roster(ads)                  U1 = advertisers
    share_keys(roster) ◀──KeyRoster──────
                       ──ShareBundle────▶  route_shares(bundles)        U2 = bundle senders
    masked_input(delivery, x_u) ◀ShareDelivery─
                       ──MaskedInput────▶  collect_masked_inputs(ys)    U3 = masked senders
    unmask(survivors)  ◀─SurvivorList────
                       ─UnmaskingShares─▶  unmask(responses) → SecureSum (needs ≥ t responders)

**Cryptography.** Per round each site draws two fresh X25519 key pairs (RFC 7748): a *cipher* pair
whose agreements key the AES-GCM channels carrying Shamir shares site-to-site through the
coordinator, and a *mask* pair whose agreements seed the pairwise masks. Two pairs, as in the
paper, because the mask key of a dropped site is reconstructed and thereby revealed; had it also
been the cipher key, the coordinator could decrypt every share sent to or from that site. Shared
secrets go through HKDF-SHA256 (RFC 5869) with the purpose, run id, round and both site ids
(in sorted order) in ``info``. The PRG is AES-256-CTR over zero bytes with a zero IV (each key is
used for one stream only), read as little-endian uint32/uint64. b_u is 32 bytes from the OS
CSPRNG; Shamir shares (:mod:`fedpharma.secure.shamir`, over GF(2^256 + 297)) of s_u^SK and b_u
go to every other roster member, sealed with AES-256-GCM whose associated data binds run, round,
sender and recipient. A site commits to b_u with SHA-256 so the coordinator can check the b_u it
reconstructs; a reconstructed s_v^SK is checked against v's advertised public key.

**Cost.** A site expands one keystream per other sharing site plus its self-mask, each as long
as the vector (4 MB per 1M values in the 32-bit ring, about 1 ms each with AES-NI); this
dominates its work. The coordinator expands one self-mask per survivor and, for each site that
dropped after sharing keys, one pairwise mask per survivor. :func:`add_masks` expands them in
cache-sized blocks. SecAgg+ (Bell et al. 2020, CCS) masks only with the O(log n) neighbours of
a random graph; that pays off for hundreds of clients, while for the ten-odd sites of a
consortium neighbourhoods with the same dropout and collusion tolerance would cover most of the
roster, so it is not implemented.

**Threat model.** Honest-but-curious coordinator that follows the protocol but tries to learn
individual updates, colluding with up to t − 1 sites: it learns only the sum over U3 and the sets
U1 ⊇ U2 ⊇ U3 (Bonawitz et al. §6, honest-but-curious setting). Sites drop out at any point; the
round completes while at least t sites remain in each phase, and fails with :class:`RoundFailed`
otherwise. Thresholds must exceed half the roster: any two sets of t sites then share a member,
who reveals only one kind of share per owner, so a coordinator that claims "v dropped" to some
sites and "v survived" to others cannot collect t shares of both s_v^SK and b_v.

**Not protected (not implemented):** an *actively* malicious coordinator that substitutes public
keys in the roster (a man in the middle, which breaks everything) or otherwise deviates, e.g. by
showing different survivor lists to different sites (the majority threshold and the
one-kind-per-owner refusal stop the simple version above, not every variant). Bonawitz's active
variant (§4, ConsistencyCheck round, t > 2n/3) signs the advertised keys and the survivor list
with each site's long-term identity key; here the advertisement is only as authentic as the
channel (mutual TLS to the coordinator, which relays). Malicious *sites* can corrupt the sum by
masking a bogus x_u (no input validation inside the mask; that needs zero-knowledge range
proofs), and a site that sends its peers invalid sealed shares makes them refuse the round (denial
of service, not a privacy breach). The frame digest of each message catches truncation and
corruption, not a forger.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedpharma.errors import CryptoError, ProtocolError, RoundFailed
from fedpharma.secure import shamir
from fedpharma.secure._wire import Kind, Reader, Writer, frame, unframe
from fedpharma.secure.quantize import RING_DTYPES, RingVector

KEY_BYTES = 32
DIGEST_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SEALED_SHARE_BYTES = NONCE_BYTES + 2 * shamir.SHARE_VALUE_BYTES + TAG_BYTES
MAX_SITES = 65_535
MAX_VECTOR_LENGTH = 1 << 31
_MASK_BLOCK_BYTES = 1 << 18  # 256 KiB: a block of keystream and of the sum fit in L2 together
_AES_BLOCK_BYTES = 16

_MASK_PURPOSE = "fedpharma/secagg/pairwise-mask/v1"
_SHARE_PURPOSE = "fedpharma/secagg/share-encryption/v1"
_COMMITMENT_PURPOSE = "fedpharma/secagg/self-mask-commitment/v1"


def minimum_threshold(n_sites: int) -> int:
    """The smallest threshold this module accepts for a roster of ``n_sites``: ⌊n/2⌋ + 1."""
    return n_sites // 2 + 1


@dataclass(frozen=True)
class RoundSetup:
    """What all parties of one round agree on beforehand (from the run config and the task)."""

    run_id: str
    round: int
    threshold: int
    vector_length: int
    ring_bits: int = 32

    def __post_init__(self) -> None:
        if self.threshold < 2:
            raise CryptoError(f"threshold must be ≥ 2, got {self.threshold}")
        if not 1 <= self.vector_length <= MAX_VECTOR_LENGTH:
            raise CryptoError(f"vector_length must be in [1, 2^31], got {self.vector_length}")
        if self.ring_bits not in RING_DTYPES:
            raise CryptoError(f"ring_bits must be 32 or 64, got {self.ring_bits}")

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger]:
        return RING_DTYPES[self.ring_bits]


# ----- messages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyAdvertisement:
    """Phase 0, site → coordinator: the site's two fresh X25519 public keys (32 bytes each)."""

    run_id: str
    round: int
    site: str
    cipher_public_key: bytes
    mask_public_key: bytes

    def __post_init__(self) -> None:
        if len(self.cipher_public_key) != KEY_BYTES or len(self.mask_public_key) != KEY_BYTES:
            raise CryptoError(f"{self.site!r} advertised a public key that is not 32 bytes")

    def to_bytes(self) -> bytes:
        writer = _header(self.run_id, self.round)
        _write_advertisement(writer, self)
        return frame(Kind.KEY_ADVERTISEMENT, writer.getvalue())

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyAdvertisement:
        reader = Reader(unframe(data, Kind.KEY_ADVERTISEMENT), Kind.KEY_ADVERTISEMENT)
        run_id, rnd = reader.name(), reader.u64()
        advertisement = _read_advertisement(reader, run_id, rnd)
        reader.done()
        return advertisement


@dataclass(frozen=True)
class KeyRoster:
    """Phase 0, coordinator → every site: U1's advertisements (sorted by site) and t.

    A site's Shamir evaluation point is its 1-based position in this roster.
    """

    run_id: str
    round: int
    threshold: int
    advertisements: tuple[KeyAdvertisement, ...]

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(a.site for a in self.advertisements)

    def point_of(self, site: str) -> int:
        return self.sites.index(site) + 1

    def advertisement_of(self, site: str) -> KeyAdvertisement:
        return self.advertisements[self.sites.index(site)]

    def to_bytes(self) -> bytes:
        writer = _header(self.run_id, self.round).u32(self.threshold)
        writer.u32(len(self.advertisements))
        for advertisement in self.advertisements:
            _write_advertisement(writer, advertisement)
        return frame(Kind.KEY_ROSTER, writer.getvalue())

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyRoster:
        reader = Reader(unframe(data, Kind.KEY_ROSTER), Kind.KEY_ROSTER)
        run_id, rnd, threshold = reader.name(), reader.u64(), reader.u32()
        count = reader.count(MAX_SITES)
        ads = tuple(_read_advertisement(reader, run_id, rnd) for _ in range(count))
        reader.done()
        return cls(run_id, rnd, threshold, ads)


@dataclass(frozen=True)
class EncryptedShares:
    """Shares of ``sender``'s mask key and self-mask seed for ``recipient``, AES-GCM sealed."""

    sender: str
    recipient: str
    sealed: bytes

    def __post_init__(self) -> None:
        if len(self.sealed) != SEALED_SHARE_BYTES:
            raise CryptoError(
                f"sealed shares from {self.sender!r} to {self.recipient!r} are "
                f"{len(self.sealed)} bytes, expected {SEALED_SHARE_BYTES} (truncated or altered)"
            )


@dataclass(frozen=True)
class ShareBundle:
    """Phase 1, site → coordinator: sealed shares for every other roster member, and the
    SHA-256 commitment to the site's self-mask seed b_u."""

    run_id: str
    round: int
    site: str
    self_mask_commitment: bytes
    shares: tuple[EncryptedShares, ...]

    def __post_init__(self) -> None:
        if len(self.self_mask_commitment) != DIGEST_BYTES:
            raise CryptoError(f"self-mask commitment of {self.site!r} is not 32 bytes")
        if any(s.sender != self.site for s in self.shares):
            raise CryptoError(f"share bundle of {self.site!r} holds shares sent by another site")

    def to_bytes(self) -> bytes:
        writer = _header(self.run_id, self.round).name(self.site)
        writer.fixed(self.self_mask_commitment, DIGEST_BYTES)
        _write_encrypted_shares(writer, self.shares)
        return frame(Kind.SHARE_BUNDLE, writer.getvalue())

    @classmethod
    def from_bytes(cls, data: bytes) -> ShareBundle:
        reader = Reader(unframe(data, Kind.SHARE_BUNDLE), Kind.SHARE_BUNDLE)
        run_id, rnd, site = reader.name(), reader.u64(), reader.name()
        commitment = reader.fixed(DIGEST_BYTES)
        shares = _read_encrypted_shares(reader)
        reader.done()
        return cls(run_id, rnd, site, commitment, shares)


@dataclass(frozen=True)
class ShareDelivery:
    """Phase 1, coordinator → one site: the sealed shares every other member of U2 sent it."""

    run_id: str
    round: int
    recipient: str
    shares: tuple[EncryptedShares, ...]

    def __post_init__(self) -> None:
        if any(s.recipient != self.recipient for s in self.shares):
            raise CryptoError(f"delivery for {self.recipient!r} holds shares for another site")

    def to_bytes(self) -> bytes:
        writer = _header(self.run_id, self.round).name(self.recipient)
        _write_encrypted_shares(writer, self.shares)
        return frame(Kind.SHARE_DELIVERY, writer.getvalue())

    @classmethod
    def from_bytes(cls, data: bytes) -> ShareDelivery:
        reader = Reader(unframe(data, Kind.SHARE_DELIVERY), Kind.SHARE_DELIVERY)
        run_id, rnd, recipient = reader.name(), reader.u64(), reader.name()
        shares = _read_encrypted_shares(reader)
        reader.done()
        return cls(run_id, rnd, recipient, shares)


@dataclass(frozen=True)
class MaskedInput:
    """Phase 2, site → coordinator: y_u, little-endian ring elements (4 or 8 bytes each).

    ``masked`` is bytes or a read-only byte view: :meth:`from_bytes` does not copy the vector
    out of the frame (the coordinator receives n of them per round).
    """

    run_id: str
    round: int
    site: str
    ring_bits: int
    masked: bytes | memoryview

    def __post_init__(self) -> None:
        if self.ring_bits not in RING_DTYPES:
            raise CryptoError(f"masked input of {self.site!r} uses a {self.ring_bits}-bit ring")
        if memoryview(self.masked).nbytes % RING_DTYPES[self.ring_bits].itemsize:
            raise CryptoError(f"masked input of {self.site!r} ends inside a ring element")

    def vector(self) -> RingVector:
        """The masked vector as a read-only ring array (no copy)."""
        return np.frombuffer(self.masked, dtype=RING_DTYPES[self.ring_bits])

    def to_bytes(self) -> bytes:
        size = memoryview(self.masked).nbytes
        head = _header(self.run_id, self.round).name(self.site).u8(self.ring_bits).u64(size)
        return frame(Kind.MASKED_INPUT, b"".join([head.getvalue(), self.masked]))

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskedInput:
        data = bytes(data)  # no copy for bytes; the view must not see later changes
        reader = Reader(unframe(data, Kind.MASKED_INPUT), Kind.MASKED_INPUT)
        run_id, rnd, site, bits = reader.name(), reader.u64(), reader.name(), reader.u8()
        masked = reader.view(reader.u64())
        reader.done()
        return cls(run_id, rnd, site, bits, masked)


@dataclass(frozen=True)
class SurvivorList:
    """Phase 2, coordinator → sites in U3: who sent a masked input (everyone else dropped)."""

    run_id: str
    round: int
    survivors: tuple[str, ...]

    def to_bytes(self) -> bytes:
        writer = _header(self.run_id, self.round).names(self.survivors)
        return frame(Kind.SURVIVOR_LIST, writer.getvalue())

    @classmethod
    def from_bytes(cls, data: bytes) -> SurvivorList:
        reader = Reader(unframe(data, Kind.SURVIVOR_LIST), Kind.SURVIVOR_LIST)
        run_id, rnd, survivors = reader.name(), reader.u64(), reader.names(MAX_SITES)
        reader.done()
        return cls(run_id, rnd, survivors)


@dataclass(frozen=True)
class RevealedShare:
    """A share the responding site holds of ``owner``'s secret (its value at the responder's
    point)."""

    owner: str
    share: shamir.Share


@dataclass(frozen=True)
class UnmaskingShares:
    """Phase 3, site → coordinator: self-mask shares of survivors, mask-key shares of dropouts."""

    run_id: str
    round: int
    site: str
    self_mask_shares: tuple[RevealedShare, ...]
    mask_key_shares: tuple[RevealedShare, ...]

    def to_bytes(self) -> bytes:
        writer = _header(self.run_id, self.round).name(self.site)
        for revealed in (self.self_mask_shares, self.mask_key_shares):
            writer.u32(len(revealed))
            for item in revealed:
                writer.name(item.owner).u32(item.share.x)
                writer.fixed(item.share.value_bytes(), shamir.SHARE_VALUE_BYTES)
        return frame(Kind.UNMASKING_SHARES, writer.getvalue())

    @classmethod
    def from_bytes(cls, data: bytes) -> UnmaskingShares:
        reader = Reader(unframe(data, Kind.UNMASKING_SHARES), Kind.UNMASKING_SHARES)
        run_id, rnd, site = reader.name(), reader.u64(), reader.name()
        revealed: list[tuple[RevealedShare, ...]] = []
        for _ in range(2):
            count = reader.count(MAX_SITES)
            revealed.append(
                tuple(
                    RevealedShare(
                        reader.name(),
                        shamir.Share.from_value_bytes(
                            reader.u32(), reader.fixed(shamir.SHARE_VALUE_BYTES)
                        ),
                    )
                    for _ in range(count)
                )
            )
        reader.done()
        return cls(run_id, rnd, site, revealed[0], revealed[1])


@dataclass(frozen=True, eq=False)
class SecureSum:
    """The coordinator's result: Σ x_u over ``contributors`` (= U3) in the ring, read-only."""

    run_id: str
    round: int
    contributors: tuple[str, ...]
    total: RingVector


# ----- the site ---------------------------------------------------------------------------------


class _ShareKind(Enum):
    SELF_MASK = "self-mask seed"
    MASK_KEY = "mask key"


class SecAggSite:
    """One site's side of one round. Holds the round's secrets; create a new one every round."""

    def __init__(self, setup: RoundSetup, site: str) -> None:
        self.setup = setup
        self.site = site
        self._cipher_key = X25519PrivateKey.generate()
        self._mask_key = X25519PrivateKey.generate()
        self._roster: KeyRoster | None = None
        self._self_mask_seed: bytes | None = None
        self._own_self_mask_share: shamir.Share | None = None
        self._held: dict[str, tuple[shamir.Share, shamir.Share]] | None = None
        self._share_keys: dict[str, bytes] = {}  # AES-GCM key per peer, for both directions
        self._revealed: dict[str, _ShareKind] = {}

    def advertise_keys(self) -> KeyAdvertisement:
        """Phase 0: the two public keys of this round."""
        return KeyAdvertisement(
            self.setup.run_id,
            self.setup.round,
            self.site,
            self._cipher_key.public_key().public_bytes_raw(),
            self._mask_key.public_key().public_bytes_raw(),
        )

    def share_keys(self, roster: KeyRoster) -> ShareBundle:
        """Phase 1: check the roster, draw b_u, and seal shares of s_u^SK and b_u for the others."""
        if self._roster is not None:
            raise ProtocolError(f"{self.site!r} already shared its keys this round")
        _check_round(self.setup, roster.run_id, roster.round, "key roster")
        _check_roster(self.setup, roster)
        if roster.advertisements.count(self.advertise_keys()) != 1:
            raise CryptoError(
                f"the key roster does not carry {self.site!r}'s own keys: "
                "the coordinator altered or replayed it"
            )
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
        commitment = _self_mask_commitment(self.setup, self.site, self._self_mask_seed)
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
        _check_round(self.setup, delivery.run_id, delivery.round, "share delivery")
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
            shared = _exchange(self._mask_key, peer_key, peer)
            seed = _derive(shared, _MASK_PURPOSE, self.setup, self.site, peer)
            masks.append(Mask(seed, +1 if self.site < peer else -1))
        masked = contribution.copy()
        add_masks(masked, masks)
        self._held = held
        return MaskedInput(
            self.setup.run_id, self.setup.round, self.site, self.setup.ring_bits, masked.tobytes()
        )

    def unmask(self, survivors: SurvivorList) -> UnmaskingShares:
        """Phase 3: b-shares of survivors, s^SK-shares of sites that dropped after sharing keys.

        Refuses (:class:`CryptoError`) to reveal, for any owner, the other kind of share than it
        revealed before: with both, the coordinator could unmask that owner's input.
        """
        if self._held is None or self._roster is None or self._own_self_mask_share is None:
            raise ProtocolError(f"{self.site!r} has not sent a masked input this round")
        _check_round(self.setup, survivors.run_id, survivors.round, "survivor list")
        sharers = set(self._held) | {self.site}
        alive = set(survivors.survivors)
        if len(alive) != len(survivors.survivors) or not alive <= sharers:
            raise CryptoError("survivor list repeats sites or names sites that never shared keys")
        if self.site not in alive:
            raise CryptoError(
                f"survivor list omits {self.site!r}, which sent its masked input; refusing"
            )
        if len(alive) < self.setup.threshold:
            raise RoundFailed(
                f"{len(alive)} sites survived, the threshold is {self.setup.threshold}; "
                "the round cannot be unmasked"
            )
        kinds = {
            owner: _ShareKind.SELF_MASK if owner in alive else _ShareKind.MASK_KEY
            for owner in sharers
        }
        for owner, kind in kinds.items():
            before = self._revealed.get(owner, kind)
            if before is not kind:
                raise CryptoError(
                    f"refusing to reveal the {kind.value} share of {owner!r}: this site already "
                    f"revealed its {before.value} share, and both together unmask its input"
                )
        self._revealed.update(kinds)
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
        shared = _exchange(self._cipher_key, peer_key, peer)
        return _derive(shared, _SHARE_PURPOSE, self.setup, self.site, peer)

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


# ----- the coordinator --------------------------------------------------------------------------


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
        self._masked_sum: RingVector | None = None
        self._done = False

    def roster(self, advertisements: Sequence[KeyAdvertisement]) -> KeyRoster:
        """Phase 0: the roster U1 of the sites that advertised keys, for every one of them."""
        if self._roster is not None:
            raise ProtocolError("the key roster of this round is already fixed")
        for ad in advertisements:
            _check_round(self.setup, ad.run_id, ad.round, f"key advertisement of {ad.site!r}")
        ordered = tuple(sorted(advertisements, key=lambda a: a.site))
        sites = [a.site for a in ordered]
        if len(set(sites)) != len(sites):
            raise ProtocolError("a site advertised keys twice in one round")
        keys = [k for a in ordered for k in (a.cipher_public_key, a.mask_public_key)]
        if len(set(keys)) != len(keys):
            raise CryptoError("two advertised public keys are equal: keys must be fresh per round")
        _require_threshold(self.setup, len(ordered), "advertised keys")
        roster = KeyRoster(self.setup.run_id, self.setup.round, self.setup.threshold, ordered)
        _check_roster(self.setup, roster)
        self._roster = roster
        return roster

    def route_shares(self, bundles: Sequence[ShareBundle]) -> dict[str, ShareDelivery]:
        """Phase 1: U2 = senders of complete bundles; each member gets the shares sent to it."""
        if self._roster is None or self._commitments is not None:
            raise ProtocolError("shares are routed once, after the key roster")
        roster_sites = set(self._roster.sites)
        by_site: dict[str, ShareBundle] = {}
        for bundle in bundles:
            _check_round(self.setup, bundle.run_id, bundle.round, f"shares of {bundle.site!r}")
            if bundle.site not in roster_sites or bundle.site in by_site:
                raise ProtocolError(f"unexpected or repeated share bundle from {bundle.site!r}")
            recipients = [s.recipient for s in bundle.shares]
            if sorted(recipients) != sorted(roster_sites - {bundle.site}):
                raise CryptoError(
                    f"{bundle.site!r} must send exactly one sealed share to every other roster "
                    "member"
                )
            by_site[bundle.site] = bundle
        _require_threshold(self.setup, len(by_site), "shared keys")
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
            _check_round(self.setup, masked.run_id, masked.round, f"input of {masked.site!r}")
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
        _require_threshold(self.setup, len(senders), "sent masked inputs")
        self._masked_sum = total
        self._survivors = tuple(sorted(senders))
        return SurvivorList(self.setup.run_id, self.setup.round, self._survivors)

    def unmask(self, responses: Sequence[UnmaskingShares]) -> SecureSum:
        """Phase 3: reconstruct each survivor's b_v and each dropout's s_v^SK from t responders,
        verify them, and strip every remaining mask off the sum."""
        if self._survivors is None or self._masked_sum is None or self._done:
            raise ProtocolError("unmasking runs once, after the masked inputs were collected")
        assert self._roster is not None and self._commitments is not None
        survivors = set(self._survivors)
        dropped = sorted(set(self._commitments) - survivors)
        by_site: dict[str, UnmaskingShares] = {}
        for response in responses:
            site = response.site
            _check_round(self.setup, response.run_id, response.round, f"shares of {site!r}")
            if site not in survivors or site in by_site:
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
        _require_threshold(self.setup, len(by_site), "answered the unmasking request")
        responders = sorted(by_site)[: self.setup.threshold]
        coefficients = shamir.lagrange_at_zero([self._roster.point_of(s) for s in responders])

        masks = []
        for index, owner in enumerate(self._survivors):
            shares = [by_site[s].self_mask_shares[index].share for s in responders]
            seed = shamir.combine(shares, coefficients)
            if _self_mask_commitment(self.setup, owner, seed) != self._commitments[owner]:
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
                shared = _exchange(mask_key, survivor_key, survivor)
                seed = _derive(shared, _MASK_PURPOSE, self.setup, owner, survivor)
                # the survivor added this mask if it sorts first, so take it off; else add it
                masks.append(Mask(seed, -1 if survivor < owner else +1))
        total = self._masked_sum  # unmasked in place: only the sum is ever held
        add_masks(total, masks)
        self._done = True
        total.flags.writeable = False
        return SecureSum(self.setup.run_id, self.setup.round, self._survivors, total)


# ----- shared helpers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mask:
    """One pseudo-random mask: the keystream of ``seed``, added (``sign`` +1) or subtracted
    (−1) modulo 2^k."""

    seed: bytes
    sign: int

    def __post_init__(self) -> None:
        if self.sign not in (1, -1):
            raise ValueError(f"a mask is added (+1) or subtracted (-1), not {self.sign}")


def add_masks(total: RingVector, masks: Sequence[Mask]) -> None:
    """``total += Σ sign · PRG(seed)`` modulo 2^k, in place, over the masks given.

    The PRG is AES-256-CTR with a zero IV over zero bytes (the keystream of ``seed``), read as
    little-endian ring elements: one stream per key, each key used for one stream only. Block
    by block rather than stream by stream: each AES-CTR stream is generated
    ``_MASK_BLOCK_BYTES`` at a time into one reused buffer and added into the matching block of
    ``total`` while both are still in cache. Generating each stream whole would allocate a
    fresh buffer per peer (page faults) and pass over ``total`` once per peer; per 4 MB vector
    and ten masks this is 10 ms instead of 31 ms.
    """
    dtype = total.dtype
    step = _MASK_BLOCK_BYTES // dtype.itemsize
    zeros = memoryview(bytes(_MASK_BLOCK_BYTES))
    buffer = bytearray(_MASK_BLOCK_BYTES + _AES_BLOCK_BYTES - 1)  # update_into needs the slack
    keystream = np.frombuffer(buffer, dtype=dtype, count=step)
    streams = [
        (Cipher(algorithms.AES(mask.seed), modes.CTR(bytes(16))).encryptor(), mask.sign > 0)
        for mask in masks
    ]
    for start in range(0, total.size, step):
        block = total[start : start + step]
        size = block.size
        for encryptor, add in streams:
            encryptor.update_into(zeros[: size * dtype.itemsize], buffer)
            if add:
                np.add(block, keystream[:size], out=block)
            else:
                np.subtract(block, keystream[:size], out=block)


def _derive(shared: bytes, purpose: str, setup: RoundSetup, site_a: str, site_b: str) -> bytes:
    first, second = sorted((site_a, site_b))
    info = Writer().name(purpose).name(setup.run_id).u64(setup.round).name(first).name(second)
    return HKDF(SHA256(), KEY_BYTES, salt=None, info=info.getvalue()).derive(shared)


def _exchange(own: X25519PrivateKey, peer_public: bytes, peer: str) -> bytes:
    try:
        return own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise CryptoError(
            f"key agreement with {peer!r} failed: its advertised key is a low-order point"
        ) from exc


def _share_aad(setup: RoundSetup, sender: str, recipient: str) -> bytes:
    writer = Writer().name(_SHARE_PURPOSE).name(setup.run_id).u64(setup.round)
    return writer.name(sender).name(recipient).getvalue()


def _self_mask_commitment(setup: RoundSetup, site: str, seed: bytes) -> bytes:
    writer = Writer().name(_COMMITMENT_PURPOSE).name(setup.run_id).u64(setup.round).name(site)
    return hashlib.sha256(writer.fixed(seed, KEY_BYTES).getvalue()).digest()


def _check_round(setup: RoundSetup, run_id: str, rnd: int, what: str) -> None:
    if (run_id, rnd) != (setup.run_id, setup.round):
        raise ProtocolError(
            f"{what} is for run {run_id!r} round {rnd}, this is run {setup.run_id!r} round "
            f"{setup.round} (stale or replayed)"
        )


def _check_roster(setup: RoundSetup, roster: KeyRoster) -> None:
    sites = roster.sites
    if roster.threshold != setup.threshold:
        raise CryptoError(
            f"the roster's threshold {roster.threshold} differs from the agreed {setup.threshold}"
        )
    if list(sites) != sorted(set(sites)):
        raise CryptoError("the key roster must list distinct sites in sorted order")
    _require_threshold(setup, len(sites), "advertised keys")
    if 2 * setup.threshold <= len(sites):
        raise CryptoError(
            f"threshold {setup.threshold} does not exceed half of the {len(sites)} roster sites; "
            f"use at least {minimum_threshold(len(sites))}"
        )


def _require_threshold(setup: RoundSetup, count: int, what: str) -> None:
    if count < setup.threshold:
        raise RoundFailed(
            f"run {setup.run_id!r} round {setup.round}: only {count} site(s) {what}, "
            f"secure aggregation needs at least t = {setup.threshold}"
        )


def _header(run_id: str, rnd: int) -> Writer:
    return Writer().name(run_id).u64(rnd)


def _write_advertisement(writer: Writer, advertisement: KeyAdvertisement) -> None:
    writer.name(advertisement.site)
    writer.fixed(advertisement.cipher_public_key, KEY_BYTES)
    writer.fixed(advertisement.mask_public_key, KEY_BYTES)


def _read_advertisement(reader: Reader, run_id: str, rnd: int) -> KeyAdvertisement:
    site = reader.name()
    return KeyAdvertisement(run_id, rnd, site, reader.fixed(KEY_BYTES), reader.fixed(KEY_BYTES))


def _write_encrypted_shares(writer: Writer, shares: tuple[EncryptedShares, ...]) -> None:
    writer.u32(len(shares))
    for share in shares:
        writer.name(share.sender).name(share.recipient)
        writer.fixed(share.sealed, SEALED_SHARE_BYTES)


def _read_encrypted_shares(reader: Reader) -> tuple[EncryptedShares, ...]:
    count = reader.count(MAX_SITES)
    return tuple(
        EncryptedShares(reader.name(), reader.name(), reader.fixed(SEALED_SHARE_BYTES))
        for _ in range(count)
    )
