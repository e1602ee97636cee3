"""The binary frame every secure-aggregation message and key blob travels in (never pickle).

Frame layout (all integers little-endian)::

    magic b"FPS1" | u8 kind | u16 format version | u32 body length | body | SHA-256(all before)

``kind`` names the message type, so bytes of one type can never be parsed as another. The SHA-256
trailer catches truncation and corruption in transit or on disk; it is *not* authentication (anyone
can recompute it): who sent a frame is established by the channel's mutual TLS, and the secret
parts of a round (Shamir shares) are additionally sealed with AES-GCM for their recipient.

Bodies are written with :class:`Writer` and read with :class:`Reader`, which checks every length
against what is left and against a stated maximum, so a hostile frame cannot make the reader
allocate or read beyond the bytes it was given.
"""

from __future__ import annotations

import hashlib
import struct
from enum import IntEnum

from fedpharma.core.errors import CryptoError

MAGIC = b"FPS1"
FORMAT_VERSION = 1
DIGEST_BYTES = 32
MAX_FRAME_BODY_BYTES = (1 << 32) - 1
MAX_NAME_BYTES = 256
_HEADER = struct.Struct("<4sBHI")


class Kind(IntEnum):
    """The message or blob type a frame holds."""

    KEY_ADVERTISEMENT = 1
    KEY_ROSTER = 2
    SHARE_BUNDLE = 3
    SHARE_DELIVERY = 4
    MASKED_INPUT = 5
    SURVIVOR_LIST = 6
    UNMASKING_SHARES = 7
    CONSISTENCY_SIGNATURE = 8
    CONSISTENCY_PROOF = 9
    CKKS_PUBLIC_CONTEXT = 16
    CKKS_SECRET_CONTEXT = 17
    CKKS_UPDATE = 18
    CKKS_DECRYPTED_MEAN = 19
    CKKS_CONTRIBUTION = 20
    CKKS_CONTRIBUTOR_SET = 21
    CKKS_SET_SIGNATURE = 22
    CKKS_DECRYPT_REQUEST = 23


def frame(kind: Kind, body: bytes) -> bytes:
    """Wrap ``body`` in the versioned, length-prefixed, digest-terminated frame."""
    if len(body) > MAX_FRAME_BODY_BYTES:
        raise CryptoError(f"{kind.name} body of {len(body)} bytes exceeds the 4 GiB frame limit")
    head = _HEADER.pack(MAGIC, kind, FORMAT_VERSION, len(body))
    digest = hashlib.sha256(head)
    digest.update(body)
    return b"".join([head, body, digest.digest()])


def unframe(data: bytes, kind: Kind) -> memoryview:
    """The body of a frame of type ``kind``; :class:`CryptoError` for anything else."""
    what = kind.name
    if len(data) < _HEADER.size + DIGEST_BYTES:
        raise CryptoError(f"{what}: {len(data)} bytes is too short to be a frame (truncated?)")
    magic, found_kind, version, body_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CryptoError(f"{what}: bytes do not start with the {MAGIC!r} magic")
    if version != FORMAT_VERSION:
        raise CryptoError(
            f"{what}: format version {version}, this side reads {FORMAT_VERSION}; "
            "upgrade the older side"
        )
    if found_kind != kind:
        found = Kind(found_kind).name if found_kind in Kind._value2member_map_ else found_kind
        raise CryptoError(f"expected a {what} frame, got {found}")
    end = _HEADER.size + body_len
    if len(data) != end + DIGEST_BYTES:
        raise CryptoError(
            f"{what}: frame announces {body_len} body bytes but holds "
            f"{len(data) - _HEADER.size - DIGEST_BYTES} (truncated or padded)"
        )
    view = memoryview(data)
    digest = hashlib.sha256(view[:end]).digest()
    if digest != bytes(view[end:]):
        raise CryptoError(f"{what}: digest mismatch, the bytes were altered or corrupted")
    return view[_HEADER.size : end]


class Writer:
    """Appends little-endian fields; the counterpart of :class:`Reader`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        self._parts.append(struct.pack("<B", value))
        return self

    def u16(self, value: int) -> Writer:
        self._parts.append(struct.pack("<H", value))
        return self

    def u32(self, value: int) -> Writer:
        self._parts.append(struct.pack("<I", value))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(struct.pack("<Q", value))
        return self

    def fixed(self, value: bytes, size: int) -> Writer:
        """Exactly ``size`` bytes, no length prefix (keys, digests)."""
        if len(value) != size:
            raise CryptoError(f"field must be {size} bytes, got {len(value)}")
        self._parts.append(bytes(value))
        return self

    def blob(self, value: bytes) -> Writer:
        """Bytes with a u32 length prefix."""
        return self.u32(len(value)).fixed(value, len(value))

    def name(self, value: str) -> Writer:
        """A UTF-8 identifier (site, run) with a u16 length prefix."""
        raw = value.encode()
        if len(raw) > MAX_NAME_BYTES:
            raise CryptoError(f"identifier {value[:40]!r}… exceeds {MAX_NAME_BYTES} bytes")
        return self.u16(len(raw)).fixed(raw, len(raw))

    def names(self, values: tuple[str, ...]) -> Writer:
        self.u32(len(values))
        for value in values:
            self.name(value)
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads the fields of a frame body, never past its end; errors name the message type."""

    def __init__(self, body: memoryview, kind: Kind) -> None:
        self._body = body
        self._offset = 0
        self._what = kind.name

    def _take(self, size: int) -> memoryview:
        if size > len(self._body) - self._offset:
            raise CryptoError(f"{self._what}: body is truncated at byte {self._offset}")
        chunk = self._body[self._offset : self._offset + size]
        self._offset += size
        return chunk

    def _unpack(self, fmt: str) -> int:
        value: int = struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]
        return value

    def u8(self) -> int:
        return self._unpack("<B")

    def u16(self) -> int:
        return self._unpack("<H")

    def u32(self) -> int:
        return self._unpack("<I")

    def u64(self) -> int:
        return self._unpack("<Q")

    def fixed(self, size: int) -> bytes:
        return bytes(self._take(size))

    def view(self, size: int) -> memoryview:
        """``size`` bytes without copying (large vectors)."""
        return self._take(size)

    def blob(self, max_bytes: int) -> bytes:
        size = self.u32()
        if size > max_bytes:
            raise CryptoError(f"{self._what}: field of {size} bytes exceeds its {max_bytes} limit")
        return self.fixed(size)

    def name(self) -> str:
        size = self.u16()
        if size > MAX_NAME_BYTES:
            raise CryptoError(f"{self._what}: identifier of {size} bytes is too long")
        try:
            return self.fixed(size).decode()
        except UnicodeDecodeError as exc:
            raise CryptoError(f"{self._what}: identifier is not valid UTF-8") from exc

    def count(self, max_items: int) -> int:
        """A u32 item count, bounded so a hostile count cannot drive a huge loop."""
        items = self.u32()
        if items > max_items:
            raise CryptoError(f"{self._what}: {items} items exceeds the limit of {max_items}")
        return items

    def names(self, max_items: int) -> tuple[str, ...]:
        return tuple(self.name() for _ in range(self.count(max_items)))

    def done(self) -> None:
        if self._offset != len(self._body):
            raise CryptoError(f"{self._what}: {len(self._body) - self._offset} trailing bytes")
