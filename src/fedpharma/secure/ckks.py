"""CKKS homomorphic aggregation with TenSEAL (Cheon et al. 2017; Benaissa et al. 2021).

Kept whole (under 400 lines): the two contexts and the two messages they make and read are one
job, CKKS aggregation.

Every site holds the consortium's CKKS secret key (:class:`SecretContext`); the coordinator holds
only the parameters (:class:`PublicContext`). Sites encrypt n_k·Δ_k, n_k and 1
(:class:`EncryptedUpdate`); a decrypting site adds the agreed contributions itself
(:mod:`fedpharma.secure.contributors`) and decrypts the weighted mean (:class:`DecryptedMean`).
Fixed parameters: N = 8192, primes [60, 40, 40], scale 2^40, 128-bit secure (Albrecht et al.
2018). A site colluding with the coordinator learns everything (use secagg for that).
Parameters, weighting, error and threat model: ``docs/ckks.md``.
"""

from __future__ import annotations

import math
import os
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedpharma.core.errors import CryptoError
from fedpharma.secure.frames import Kind, Reader, Writer, frame, unframe

POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = (60, 40, 40)
GLOBAL_SCALE = 2.0**40
SLOTS = POLY_MODULUS_DEGREE // 2
KEY_ID_BYTES = 16
MAX_ABS_VALUE = 2.0**30
MAX_CONTEXT_BYTES = 1 << 26
MAX_CHUNK_BYTES = 1 << 20
MAX_CHUNKS = 1 << 20

_TENSEAL_ERRORS = (ValueError, RuntimeError, TypeError)
_CHUNK_SIZE = struct.Struct("<I")


def _tenseal() -> Any:
    """TenSEAL, imported on first use so that ``import fedpharma.secure`` stays light."""
    try:
        import tenseal
    except ImportError as exc:
        raise CryptoError("CKKS aggregation needs TenSEAL: pip install 'tenseal>=0.3.14'") from exc
    return tenseal


@dataclass(frozen=True)
class EncryptedUpdate:
    """A CKKS-encrypted vector of ``length`` values: serialized ciphertexts of ≤ 4,096 each.

    Wire body: key id (16 bytes) | u64 length | u32 chunk count | per chunk u32 size + bytes.
    :meth:`from_bytes` does not copy the ciphertexts out of the frame: ``chunks`` are read-only
    views of it (the coordinator holds n uploads of 64 MB per 1M values, and copying them would
    cost as much as adding them).
    """

    key_id: bytes
    length: int
    chunks: tuple[bytes | memoryview, ...]

    def __post_init__(self) -> None:
        if len(self.key_id) != KEY_ID_BYTES:
            raise CryptoError(f"a CKKS key id is {KEY_ID_BYTES} bytes, got {len(self.key_id)}")
        if self.length < 1 or len(self.chunks) != math.ceil(self.length / SLOTS):
            raise CryptoError(
                f"encrypted update of {self.length} values must have "
                f"{math.ceil(self.length / SLOTS)} chunks of {SLOTS}, has {len(self.chunks)}"
            )

    def to_bytes(self) -> bytes:
        head = Writer().fixed(self.key_id, KEY_ID_BYTES).u64(self.length).u32(len(self.chunks))
        parts: list[bytes | memoryview] = [head.getvalue()]
        for chunk in self.chunks:
            parts += [_CHUNK_SIZE.pack(memoryview(chunk).nbytes), chunk]
        return frame(Kind.CKKS_UPDATE, b"".join(parts))

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedUpdate:
        data = bytes(data)  # no copy for bytes; the chunk views must not see later changes
        reader = Reader(unframe(data, Kind.CKKS_UPDATE), Kind.CKKS_UPDATE)
        key_id, length = reader.fixed(KEY_ID_BYTES), reader.u64()
        chunks = []
        for index in range(reader.count(MAX_CHUNKS)):
            size = reader.u32()
            if size > MAX_CHUNK_BYTES:
                raise CryptoError(
                    f"CKKS_UPDATE: chunk {index} of {size} bytes exceeds the limit of "
                    f"{MAX_CHUNK_BYTES}"
                )
            chunks.append(reader.view(size))
        reader.done()
        return cls(key_id, length, tuple(chunks))


class PublicContext:
    """The coordinator's CKKS context: parameters only, no key material. It can add, not read."""

    __slots__ = ("_context", "key_id")

    def __init__(self, context: Any, key_id: bytes) -> None:
        _check_parameters(context)
        if context.has_secret_key() or context.has_galois_keys():
            raise CryptoError(
                "a coordinator's CKKS context must carry neither the secret key nor Galois keys; "
                "export it with SecretContext.public_context()"
            )
        self._context = context
        self.key_id = key_id

    def to_bytes(self) -> bytes:
        """The framed context: key id | TenSEAL bytes (no secret, Galois, relin or public key)."""
        return _frame_context(Kind.CKKS_PUBLIC_CONTEXT, self.key_id, _public_bytes(self._context))

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicContext:
        key_id, context = _load_context(data, Kind.CKKS_PUBLIC_CONTEXT)
        return cls(context, key_id)

    def aggregate(self, updates: Sequence[EncryptedUpdate]) -> EncryptedUpdate:
        """The encrypted sum of ``updates`` (each n_k·Δ_k, n_k), computed without decrypting."""
        return _aggregate(self._context, self.key_id, updates)


class SecretContext:
    """A site's CKKS context with the consortium's secret key.

    Secure by default (as in TenSEAL): :meth:`to_bytes` drops the secret key; only
    :meth:`to_bytes_including_secret_key` keeps it, for provisioning a site's key file.
    """

    __slots__ = ("_context", "key_id")

    def __init__(self, context: Any, key_id: bytes) -> None:
        _check_parameters(context)
        if not context.has_secret_key():
            raise CryptoError(
                "this CKKS context has no secret key; a site needs the provisioned secret key file"
            )
        self._context = context
        self.key_id = key_id

    def public_context(self) -> PublicContext:
        """The coordinator's view of this key: parameters only."""
        return PublicContext.from_bytes(self.to_bytes())

    def to_bytes(self) -> bytes:
        """The *public* context (the secret key is dropped): same as ``public_context()``."""
        return _frame_context(Kind.CKKS_PUBLIC_CONTEXT, self.key_id, _public_bytes(self._context))

    def to_bytes_including_secret_key(self) -> bytes:
        """The secret key and parameters. For a site's key file only; never send it anywhere."""
        raw = _serialize_context(self._context, secret=True)
        return _frame_context(Kind.CKKS_SECRET_CONTEXT, self.key_id, raw)

    @classmethod
    def from_bytes_including_secret_key(cls, data: bytes) -> SecretContext:
        key_id, context = _load_context(data, Kind.CKKS_SECRET_CONTEXT)
        return cls(context, key_id)

    def encrypt_update(self, update: npt.ArrayLike, n_examples: int) -> EncryptedUpdate:
        """Encrypt n_k·Δ_k, n_k and 1 (a contributor count), 4,096 values per ciphertext."""
        flat = np.asarray(update, dtype=np.float64).ravel()
        if n_examples < 1:
            raise CryptoError(f"n_examples must be ≥ 1, got {n_examples}")
        values = np.empty(flat.size + 2, dtype=np.float64)
        np.multiply(flat, n_examples, out=values[:-2])
        values[-2:] = (n_examples, 1.0)
        # min and max propagate NaN, so one bound check also catches non-finite values
        if not (values.min() >= -MAX_ABS_VALUE and values.max() <= MAX_ABS_VALUE):
            raise CryptoError(
                "an update value times n_examples is NaN, infinite or beyond ±2^30; "
                "clip the update before encrypting it"
            )
        ts = _tenseal()
        chunks = tuple(
            _serialize(ts.ckks_vector(self._context, values[start : start + SLOTS]))
            for start in range(0, values.size, SLOTS)
        )
        return EncryptedUpdate(self.key_id, int(values.size), chunks)

    def aggregate(self, updates: Sequence[EncryptedUpdate]) -> EncryptedUpdate:
        """The encrypted sum of ``updates``, added by the decrypting site itself."""
        return _aggregate(self._context, self.key_id, updates)

    def decrypt(self, encrypted: EncryptedUpdate) -> npt.NDArray[np.float64]:
        """All values of an encrypted vector (a site's own update or a sum)."""
        _check_key(encrypted, self.key_id)
        values = np.empty(encrypted.length, dtype=np.float64)
        for index, chunk in enumerate(encrypted.chunks):
            size = _chunk_size(encrypted.length, index)
            vector = _load_vector(self._context, chunk, size)
            try:
                values[index * SLOTS : index * SLOTS + size] = vector.decrypt()
            except _TENSEAL_ERRORS as exc:
                raise CryptoError(f"CKKS chunk {index} cannot be decrypted: {exc}") from exc
        return values

    def decrypt_weighted_mean(
        self, encrypted_sum: EncryptedUpdate, *, min_contributors: int = 2
    ) -> DecryptedMean:
        """Σ n_k Δ_k / Σ n_k from the coordinator's encrypted sum, as float32 (rounding hides
        most of the CKKS error, which would otherwise leak key information; Li & Micciancio
        2021). Refuses a sum of fewer than ``min_contributors`` updates."""
        values = self.decrypt(encrypted_sum)
        if values.size < 3:
            raise CryptoError("an encrypted sum holds at least a value, Σ n_k and K")
        total_examples, contributors = round(float(values[-2])), round(float(values[-1]))
        if total_examples < 1 or contributors < 1:
            raise CryptoError(
                f"decrypted example count {values[-2]:.3g} or contributor count "
                f"{values[-1]:.3g} is not positive: the sum is corrupt or was encrypted "
                "under another key"
            )
        if contributors < max(min_contributors, 2):
            raise CryptoError(
                f"refusing to decrypt a sum of {contributors} update(s): at least "
                f"{max(min_contributors, 2)} are needed, or one site's update would be revealed"
            )
        mean = (values[:-2] / total_examples).astype(np.float32)
        return DecryptedMean(mean, total_examples, contributors)


@dataclass(frozen=True)
class DecryptedMean:
    """What a site returns after decrypting a sum: the mean update, Σ n_k and K, nothing else.

    Wire body: u64 Σ n_k | u32 K | u64 length | length float32 values (little-endian).
    """

    mean: npt.NDArray[np.float32]
    n_examples: int
    contributors: int

    def to_bytes(self) -> bytes:
        values = np.ascontiguousarray(self.mean, dtype="<f4")
        writer = Writer().u64(self.n_examples).u32(self.contributors).u64(values.size)
        return frame(
            Kind.CKKS_DECRYPTED_MEAN, writer.fixed(values.tobytes(), values.nbytes).getvalue()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> DecryptedMean:
        reader = Reader(unframe(data, Kind.CKKS_DECRYPTED_MEAN), Kind.CKKS_DECRYPTED_MEAN)
        n_examples, contributors, length = reader.u64(), reader.u32(), reader.u64()
        if length > MAX_CHUNKS * SLOTS:
            raise CryptoError(f"CKKS_DECRYPTED_MEAN: {length} values exceeds the limit")
        mean = np.frombuffer(reader.view(4 * length), dtype="<f4").astype(np.float32)
        reader.done()
        if not np.all(np.isfinite(mean)) or n_examples < 1 or contributors < 2:
            raise CryptoError(
                "CKKS_DECRYPTED_MEAN: non-finite values, no examples or fewer than 2 contributors"
            )
        return cls(mean, n_examples, contributors)


def create_secret_context() -> SecretContext:
    """A fresh CKKS key with this module's parameters (once per consortium, at provisioning)."""
    ts = _tenseal()
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=POLY_MODULUS_DEGREE,
        coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES),
        encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
    )
    context.global_scale = GLOBAL_SCALE
    return SecretContext(context, secrets.token_bytes(KEY_ID_BYTES))


def provision(secret_path: Path, public_path: Path) -> SecretContext:
    """Create the consortium's CKKS key; write the sites' key file (mode 0600) and the
    coordinator's public context. Refuses to overwrite either file."""
    context = create_secret_context()
    _write_new(secret_path, context.to_bytes_including_secret_key(), mode=0o600)
    _write_new(public_path, context.to_bytes(), mode=0o644)
    return context


def load_secret_context(path: Path) -> SecretContext:
    return SecretContext.from_bytes_including_secret_key(path.read_bytes())


def load_public_context(path: Path) -> PublicContext:
    return PublicContext.from_bytes(path.read_bytes())


# ----- helpers ------------------------------------------------------------------------------


def _aggregate(context: Any, key_id: bytes, updates: Sequence[EncryptedUpdate]) -> EncryptedUpdate:
    if not updates:
        raise CryptoError("nothing to aggregate: no encrypted updates were given")
    length = updates[0].length
    for update in updates:
        _check_key(update, key_id)
        if update.length != length:
            raise CryptoError(
                f"encrypted updates differ in length ({update.length} vs {length} values); "
                "all sites must encrypt the same model"
            )
    summed = []
    for index in range(len(updates[0].chunks)):
        size = _chunk_size(length, index)
        total = _load_vector(context, updates[0].chunks[index], size)
        for update in updates[1:]:
            total.add_(_load_vector(context, update.chunks[index], size))
        summed.append(_serialize(total))
    return EncryptedUpdate(key_id, length, tuple(summed))


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise CryptoError(f"refusing to overwrite key file {path}; remove it to re-key") from exc
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _serialize_context(context: Any, *, secret: bool) -> bytes:
    raw: bytes = context.serialize(
        save_public_key=False,
        save_secret_key=secret,
        save_galois_keys=False,
        save_relin_keys=False,
    )
    return raw


def _public_bytes(context: Any) -> bytes:
    return _serialize_context(context, secret=False)


def _frame_context(kind: Kind, key_id: bytes, raw: bytes) -> bytes:
    return frame(kind, Writer().fixed(key_id, KEY_ID_BYTES).blob(raw).getvalue())


def _load_context(data: bytes, kind: Kind) -> tuple[bytes, Any]:
    reader = Reader(unframe(data, kind), kind)
    key_id, raw = reader.fixed(KEY_ID_BYTES), reader.blob(MAX_CONTEXT_BYTES)
    reader.done()
    try:
        context = _tenseal().context_from(raw)
    except _TENSEAL_ERRORS as exc:
        raise CryptoError(f"{kind.name} is not a valid TenSEAL context: {exc}") from exc
    return key_id, context


def _check_parameters(context: Any) -> None:
    try:
        seal = context.seal_context().data
        degree = seal.key_context_data().parms().poly_modulus_degree()
        key_bits = seal.key_context_data().total_coeff_modulus_bit_count()
        data_bits = seal.first_context_data().total_coeff_modulus_bit_count()
        scale = context.global_scale
    except _TENSEAL_ERRORS as exc:
        raise CryptoError(f"not a CKKS context: {exc}") from exc
    expected = (POLY_MODULUS_DEGREE, sum(COEFF_MOD_BIT_SIZES), sum(COEFF_MOD_BIT_SIZES[:-1]))
    if (degree, key_bits, data_bits) != expected or scale != GLOBAL_SCALE:
        raise CryptoError(
            f"CKKS context has N={degree}, {key_bits}-bit modulus, scale {scale:.3g}; expected "
            f"N={POLY_MODULUS_DEGREE}, primes {list(COEFF_MOD_BIT_SIZES)}, scale 2^40"
        )


def _check_key(update: EncryptedUpdate, key_id: bytes) -> None:
    if update.key_id != key_id:
        raise CryptoError(
            f"update was encrypted under CKKS key {update.key_id.hex()[:8]}…, this context "
            f"holds key {key_id.hex()[:8]}…; provision every party from the same key"
        )


def _chunk_size(length: int, index: int) -> int:
    return min(SLOTS, length - index * SLOTS)


def _load_vector(context: Any, chunk: bytes | memoryview, size: int) -> Any:
    try:
        vector = _tenseal().ckks_vector_from(context, bytes(chunk))
    except _TENSEAL_ERRORS as exc:
        raise CryptoError(
            f"CKKS ciphertext is corrupt, truncated or made with other parameters: {exc}"
        ) from exc
    if vector.size() != size:
        raise CryptoError(f"CKKS ciphertext holds {vector.size()} values, expected {size}")
    return vector


def _serialize(vector: Any) -> bytes:
    raw: bytes = vector.serialize()
    return raw
