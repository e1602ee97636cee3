"""The pseudo-random masks of secure aggregation and the key agreement that seeds them.

Seeds come from X25519 agreements (RFC 7748) through HKDF-SHA256 (RFC 5869) bound to purpose,
run, round and both sites; a seed's mask is its AES-256-CTR keystream read as ring elements
(Bonawitz et al. 2017, §4; see ``docs/secure-aggregation.md``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedpharma.core.errors import CryptoError
from fedpharma.secure.frames import Writer
from fedpharma.secure.quantize import RingVector
from fedpharma.secure.secagg.messages import KEY_BYTES
from fedpharma.secure.secagg.round import RoundSetup

_MASK_BLOCK_BYTES = 1 << 18  # 256 KiB: a block of keystream and of the sum fit in L2 together
_AES_BLOCK_BYTES = 16

MASK_PURPOSE = "fedpharma/secagg/pairwise-mask/v1"
COMMITMENT_PURPOSE = "fedpharma/secagg/self-mask-commitment/v1"


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


def pairwise_mask(
    setup: RoundSetup, key: X25519PrivateKey, site: str, peer: str, peer_public: bytes
) -> Mask:
    """The mask ``site`` (holding mask key ``key``) adds for ``peer``: PRG(s_uv), added if
    ``site`` sorts first, else subtracted, so the two sites' masks cancel in the sum.

    The coordinator, holding a dropped site's rebuilt key, takes the dropped site's place: the
    mask it gets cancels the one the surviving ``peer`` left in the sum.
    """
    seed = derive_key(agree(key, peer_public, peer), MASK_PURPOSE, setup, site, peer)
    return Mask(seed, +1 if site < peer else -1)


def derive_key(shared: bytes, purpose: str, setup: RoundSetup, site_a: str, site_b: str) -> bytes:
    """HKDF-SHA256 of an agreed secret, bound to purpose, run, round and both sites (sorted)."""
    first, second = sorted((site_a, site_b))
    info = Writer().name(purpose).name(setup.run_id).u64(setup.round).name(first).name(second)
    return HKDF(SHA256(), KEY_BYTES, salt=None, info=info.getvalue()).derive(shared)


def agree(own: X25519PrivateKey, peer_public: bytes, peer: str) -> bytes:
    """The X25519 shared secret with ``peer``; :class:`CryptoError` for a low-order point."""
    try:
        return own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise CryptoError(
            f"key agreement with {peer!r} failed: its advertised key is a low-order point"
        ) from exc


def self_mask_commitment(setup: RoundSetup, site: str, seed: bytes) -> bytes:
    """SHA-256 commitment to ``site``'s self-mask seed b_u, bound to run and round."""
    writer = Writer().name(COMMITMENT_PURPOSE).name(setup.run_id).u64(setup.round).name(site)
    return hashlib.sha256(writer.fixed(seed, KEY_BYTES).getvalue()).digest()
