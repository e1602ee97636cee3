"""The secure-aggregation wire messages, one per phase, and their binary encoding.

Each message is a frozen dataclass with ``to_bytes`` / ``from_bytes`` in a
:mod:`~fedpharma.secure.frames` frame of its own kind (never pickle); malformed input raises
:class:`~fedpharma.core.errors.CryptoError`. The phases are those of Bonawitz et al. 2017, §4 (see
``docs/secure-aggregation.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedpharma.core.errors import CryptoError
from fedpharma.secure import shamir
from fedpharma.secure.frames import Kind, Reader, Writer, frame, unframe
from fedpharma.secure.identity import (
    ED25519_SIGNATURE_BYTES,
    Endorsement,
    read_endorsement,
    write_endorsement,
)
from fedpharma.secure.quantize import RING_DTYPES, RingVector

KEY_BYTES = 32
DIGEST_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SEALED_SHARE_BYTES = NONCE_BYTES + 2 * shamir.SHARE_VALUE_BYTES + TAG_BYTES
MAX_SITES = 65_535


_ADVERTISEMENT_PURPOSE = "fedpharma/secagg/key-advertisement/v1"
_CONSISTENCY_PURPOSE = "fedpharma/secagg/consistency/v1"


@dataclass(frozen=True)
class KeyAdvertisement:
    """Phase 0, site → coordinator: the site's two fresh X25519 public keys and its fresh
    Ed25519 round signing key (32 bytes each), endorsed by the site's certificate key
    (:mod:`fedpharma.secure.identity`)."""

    run_id: str
    round: int
    site: str
    cipher_public_key: bytes
    mask_public_key: bytes
    signing_public_key: bytes
    endorsement: Endorsement

    def __post_init__(self) -> None:
        keys = (self.cipher_public_key, self.mask_public_key, self.signing_public_key)
        if any(len(key) != KEY_BYTES for key in keys):
            raise CryptoError(f"{self.site!r} advertised a public key that is not 32 bytes")

    def statement(self) -> bytes:
        """What the endorsement signs: run, round, site and the three keys."""
        return advertisement_statement(
            self.run_id,
            self.round,
            self.site,
            self.cipher_public_key,
            self.mask_public_key,
            self.signing_public_key,
        )

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
class ConsistencySignature:
    """Consistency check, survivor → coordinator: the survivor's round-key (Ed25519) signature
    on the survivor list U3 it was shown (Bonawitz et al. 2017, §4, ConsistencyCheck)."""

    run_id: str
    round: int
    site: str
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.signature) != ED25519_SIGNATURE_BYTES:
            raise CryptoError(f"the consistency signature of {self.site!r} is not 64 bytes")

    def to_bytes(self) -> bytes:
        writer = _header(self.run_id, self.round).name(self.site)
        writer.fixed(self.signature, ED25519_SIGNATURE_BYTES)
        return frame(Kind.CONSISTENCY_SIGNATURE, writer.getvalue())

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsistencySignature:
        reader = Reader(unframe(data, Kind.CONSISTENCY_SIGNATURE), Kind.CONSISTENCY_SIGNATURE)
        run_id, rnd, site = reader.name(), reader.u64(), reader.name()
        signature = reader.fixed(ED25519_SIGNATURE_BYTES)
        reader.done()
        return cls(run_id, rnd, site, signature)


@dataclass(frozen=True)
class ConsistencyProof:
    """Unmasking request, coordinator → survivors: U3 and the survivors' signatures on it.
    A site reveals shares only for the U3 it signed itself, carrying at least t valid
    signatures of its members."""

    run_id: str
    round: int
    survivors: tuple[str, ...]
    signatures: tuple[ConsistencySignature, ...]

    def to_bytes(self) -> bytes:
        writer = _header(self.run_id, self.round).names(self.survivors).u32(len(self.signatures))
        for signed in self.signatures:
            writer.name(signed.site).fixed(signed.signature, ED25519_SIGNATURE_BYTES)
        return frame(Kind.CONSISTENCY_PROOF, writer.getvalue())

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsistencyProof:
        reader = Reader(unframe(data, Kind.CONSISTENCY_PROOF), Kind.CONSISTENCY_PROOF)
        run_id, rnd, survivors = reader.name(), reader.u64(), reader.names(MAX_SITES)
        signatures = tuple(
            ConsistencySignature(run_id, rnd, reader.name(), reader.fixed(ED25519_SIGNATURE_BYTES))
            for _ in range(reader.count(MAX_SITES))
        )
        reader.done()
        return cls(run_id, rnd, survivors, signatures)


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


def _header(run_id: str, rnd: int) -> Writer:
    return Writer().name(run_id).u64(rnd)


def advertisement_statement(
    run_id: str, rnd: int, site: str, cipher: bytes, mask: bytes, signing: bytes
) -> bytes:
    """The bytes a site's certificate key endorses in its key advertisement."""
    writer = Writer().name(_ADVERTISEMENT_PURPOSE).name(run_id).u64(rnd).name(site)
    for key in (cipher, mask, signing):
        writer.fixed(key, KEY_BYTES)
    return writer.getvalue()


def consistency_statement(run_id: str, rnd: int, survivors: tuple[str, ...]) -> bytes:
    """The bytes a survivor signs with its round key in the consistency check: U3."""
    return Writer().name(_CONSISTENCY_PURPOSE).name(run_id).u64(rnd).names(survivors).getvalue()


def _write_advertisement(writer: Writer, advertisement: KeyAdvertisement) -> None:
    writer.name(advertisement.site)
    writer.fixed(advertisement.cipher_public_key, KEY_BYTES)
    writer.fixed(advertisement.mask_public_key, KEY_BYTES)
    writer.fixed(advertisement.signing_public_key, KEY_BYTES)
    write_endorsement(writer, advertisement.endorsement)


def _read_advertisement(reader: Reader, run_id: str, rnd: int) -> KeyAdvertisement:
    site = reader.name()
    keys = reader.fixed(KEY_BYTES), reader.fixed(KEY_BYTES), reader.fixed(KEY_BYTES)
    return KeyAdvertisement(run_id, rnd, site, *keys, read_endorsement(reader))


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
