"""One signed contributor set per CKKS round, so the coordinator holds no decryption oracle.

Under CKKS every site holds the key, and the coordinator can add, subtract, repeat and shift
ciphertexts without one. The wire messages here keep it from turning a site's decryption into
one site's update (design and threat model: ``docs/ckks.md``):

- :class:`SignedContribution` (train reply): the site's encrypted update and its identity's
  endorsement of (run, round, site, SHA-256 of the ciphertext);
- :class:`ContributorSet` (phase ``sign_contributors``, coordinator → each contributor): every
  contribution's site, digest and endorsement; :class:`SetSignature` (the answer): the site's
  endorsement of exactly that set, given once per round;
- :class:`DecryptRequest` (phase ``decrypt``): the set, every member's signature on it and the
  contributions themselves. The decrypting site checks all of it and adds the ciphertexts
  itself (:func:`check_decrypt_request`); the coordinator's arithmetic is never trusted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fedpharma.core.errors import CryptoError
from fedpharma.secure.ckks import EncryptedUpdate
from fedpharma.secure.frames import Kind, Reader, Writer, frame, unframe
from fedpharma.secure.identity import (
    Consortium,
    Endorsement,
    read_endorsement,
    write_endorsement,
)

DIGEST_BYTES = 32
MAX_SITES = 65_535
MAX_UPDATE_BYTES = (1 << 32) - 1
_CONTRIBUTION_PURPOSE = "fedpharma/ckks/contribution/v1"
_SET_PURPOSE = "fedpharma/ckks/contributor-set/v1"


def contribution_statement(run_id: str, rnd: int, site: str, digest: bytes) -> bytes:
    """What a contributor endorses: its ciphertext's digest in this run and round."""
    writer = Writer().name(_CONTRIBUTION_PURPOSE).name(run_id).u64(rnd).name(site)
    return writer.fixed(digest, DIGEST_BYTES).getvalue()


def update_digest(update: bytes | memoryview) -> bytes:
    return hashlib.sha256(update).digest()


@dataclass(frozen=True)
class SignedContribution:
    """A site's CKKS contribution: the framed :class:`EncryptedUpdate` and its endorsement."""

    run_id: str
    round: int
    site: str
    update: bytes | memoryview
    endorsement: Endorsement

    @property
    def digest(self) -> bytes:
        return update_digest(self.update)

    def statement(self) -> bytes:
        return contribution_statement(self.run_id, self.round, self.site, self.digest)

    def to_bytes(self) -> bytes:
        writer = Writer().name(self.run_id).u64(self.round).name(self.site)
        write_endorsement(writer, self.endorsement)
        size = memoryview(self.update).nbytes
        return frame(Kind.CKKS_CONTRIBUTION, b"".join([writer.u64(size).getvalue(), self.update]))

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedContribution:
        data = bytes(data)
        reader = Reader(unframe(data, Kind.CKKS_CONTRIBUTION), Kind.CKKS_CONTRIBUTION)
        run_id, rnd, site = reader.name(), reader.u64(), reader.name()
        endorsement = read_endorsement(reader)
        update = reader.view(_bounded(reader.u64()))
        reader.done()
        return cls(run_id, rnd, site, update, endorsement)

    def encrypted(self) -> EncryptedUpdate:
        return EncryptedUpdate.from_bytes(bytes(self.update))


@dataclass(frozen=True)
class Member:
    """One entry of a contributor set: who contributed which ciphertext, and their word on it."""

    site: str
    digest: bytes
    endorsement: Endorsement


@dataclass(frozen=True)
class ContributorSet:
    """The round's contributors (sorted, distinct) and their endorsed ciphertext digests."""

    run_id: str
    round: int
    members: tuple[Member, ...]

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(m.site for m in self.members)

    def statement(self) -> bytes:
        """What every member endorses: run, round and each (site, digest)."""
        writer = Writer().name(_SET_PURPOSE).name(self.run_id).u64(self.round)
        writer.u32(len(self.members))
        for member in self.members:
            writer.name(member.site).fixed(member.digest, DIGEST_BYTES)
        return writer.getvalue()

    def to_bytes(self) -> bytes:
        writer = Writer()
        self._write(writer)
        return frame(Kind.CKKS_CONTRIBUTOR_SET, writer.getvalue())

    def _write(self, writer: Writer) -> None:
        writer.name(self.run_id).u64(self.round).u32(len(self.members))
        for member in self.members:
            writer.name(member.site).fixed(member.digest, DIGEST_BYTES)
            write_endorsement(writer, member.endorsement)

    @classmethod
    def _read(cls, reader: Reader) -> ContributorSet:
        run_id, rnd = reader.name(), reader.u64()
        members = tuple(
            Member(reader.name(), reader.fixed(DIGEST_BYTES), read_endorsement(reader))
            for _ in range(reader.count(MAX_SITES))
        )
        return cls(run_id, rnd, members)

    @classmethod
    def from_bytes(cls, data: bytes) -> ContributorSet:
        reader = Reader(unframe(data, Kind.CKKS_CONTRIBUTOR_SET), Kind.CKKS_CONTRIBUTOR_SET)
        contributor_set = cls._read(reader)
        reader.done()
        return contributor_set


@dataclass(frozen=True)
class SetSignature:
    """A member's endorsement of a :class:`ContributorSet`'s statement."""

    site: str
    endorsement: Endorsement

    def to_bytes(self) -> bytes:
        writer = Writer().name(self.site)
        write_endorsement(writer, self.endorsement)
        return frame(Kind.CKKS_SET_SIGNATURE, writer.getvalue())

    @classmethod
    def from_bytes(cls, data: bytes) -> SetSignature:
        reader = Reader(unframe(data, Kind.CKKS_SET_SIGNATURE), Kind.CKKS_SET_SIGNATURE)
        signed = cls(reader.name(), read_endorsement(reader))
        reader.done()
        return signed


@dataclass(frozen=True)
class DecryptRequest:
    """The set, every member's signature on it, and every member's contribution (in order)."""

    contributors: ContributorSet
    signatures: tuple[SetSignature, ...]
    updates: tuple[bytes | memoryview, ...]

    def to_bytes(self) -> bytes:
        writer = Writer()
        self.contributors._write(writer)
        writer.u32(len(self.signatures))
        for signed in self.signatures:
            writer.name(signed.site)
            write_endorsement(writer, signed.endorsement)
        parts: list[bytes | memoryview] = [writer.u32(len(self.updates)).getvalue()]
        for update in self.updates:
            parts += [Writer().u64(memoryview(update).nbytes).getvalue(), update]
        return frame(Kind.CKKS_DECRYPT_REQUEST, b"".join(parts))

    @classmethod
    def from_bytes(cls, data: bytes) -> DecryptRequest:
        data = bytes(data)
        reader = Reader(unframe(data, Kind.CKKS_DECRYPT_REQUEST), Kind.CKKS_DECRYPT_REQUEST)
        contributors = ContributorSet._read(reader)
        signatures = tuple(
            SetSignature(reader.name(), read_endorsement(reader))
            for _ in range(reader.count(MAX_SITES))
        )
        updates = tuple(reader.view(_bounded(reader.u64())) for _ in range(reader.count(MAX_SITES)))
        reader.done()
        return cls(contributors, signatures, updates)


def check_contributor_set(
    consortium: Consortium,
    contributors: ContributorSet,
    run_id: str,
    rnd: int,
    own: tuple[str, bytes],
    threshold: int,
) -> None:
    """Refuse a set of another round, unsorted or repeated members, fewer than ``threshold``
    members, without this site's own (site, digest), or with a member its site did not endorse."""
    if (contributors.run_id, contributors.round) != (run_id, rnd):
        raise CryptoError(
            f"the contributor set is for run {contributors.run_id!r} round {contributors.round}, "
            f"this is run {run_id!r} round {rnd} (stale or replayed)"
        )
    sites = contributors.sites
    if list(sites) != sorted(set(sites)):
        raise CryptoError("the contributor set must list distinct sites in sorted order")
    digests = [m.digest for m in contributors.members]
    if len(set(digests)) != len(digests):
        raise CryptoError("the contributor set holds one ciphertext twice")
    if len(sites) < threshold:
        raise CryptoError(
            f"the contributor set has {len(sites)} member(s), at least {threshold} are needed "
            "before any sum is decrypted"
        )
    site, digest = own
    if (site, digest) not in {(m.site, m.digest) for m in contributors.members}:
        raise CryptoError(
            f"the contributor set does not carry {site!r}'s own contribution: altered or replayed"
        )
    for member in contributors.members:
        statement = contribution_statement(run_id, rnd, member.site, member.digest)
        consortium.check(member.site, statement, member.endorsement)


def check_decrypt_request(
    consortium: Consortium, request: DecryptRequest, signed: ContributorSet
) -> list[EncryptedUpdate]:
    """The contributions of a decrypt request for the set ``signed`` (the one this site
    endorsed), once every member's signature on it and every ciphertext's digest check out."""
    contributors = request.contributors
    if contributors.statement() != signed.statement():
        raise CryptoError(
            "the decrypt request is for another contributor set than the one this site signed: "
            "the coordinator showed different sites different sets"
        )
    by_site = {s.site: s for s in request.signatures}
    if len(by_site) != len(request.signatures) or set(by_site) != set(contributors.sites):
        raise CryptoError("the decrypt request must carry one signature of every member")
    statement = contributors.statement()
    for member in contributors.members:
        consortium.check(member.site, statement, by_site[member.site].endorsement)
    if len(request.updates) != len(contributors.members):
        raise CryptoError("the decrypt request must carry every member's contribution")
    for member, update in zip(contributors.members, request.updates, strict=True):
        if update_digest(update) != member.digest:
            raise CryptoError(
                f"the contribution forwarded for {member.site!r} is not the one it signed"
            )
    return [EncryptedUpdate.from_bytes(bytes(update)) for update in request.updates]


def _bounded(size: int) -> int:
    if size > MAX_UPDATE_BYTES:
        raise CryptoError(f"an encrypted update of {size} bytes exceeds the 4 GiB limit")
    return size
