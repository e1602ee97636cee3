"""The secret fingerprint-bit permutation: its key, key files, and the order it derives.

Morgan / ECFP bits are hashes of atom environments anyone can recompute (Rogers & Hahn 2010),
so the partners may permute the fingerprint columns with a shared secret key, as MELLODDY-TUNER
does (Heyndrickx et al. 2023); the coordinator learns only a short public key id. Why and what
it protects: ``docs/preprocessing-check.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedpharma.core.config import FeaturesConfig
from fedpharma.core.errors import ConfigError, CryptoError, DataError
from fedpharma.core.keyfiles import read_hex_key, write_new_key_file

PERMUTATION_SCHEME = "hkdf-sha256+aes256ctr-fisher-yates/v1"
"""How :class:`FingerprintPermutation` derives its order from the key (part of the recipe)."""

NO_PERMUTATION = "none"

MIN_KEY_BYTES = 32
"""A permutation key must hold at least 256 bits: its id is public, so it must not be guessable."""

_KDF_SALT = b"fedpharma fingerprint permutation"
_KEY_ID_INFO = b"fedpharma/fingerprint-permutation/key-id/v1"
_ORDER_INFO = b"fedpharma/fingerprint-permutation/order/v1/n_bits="
_KEY_ID_BYTES = 8
_SHOWN_TEXT = 60


@dataclass(frozen=True, eq=False)
class FingerprintPermutation:
    """A secret permutation of the ``n_bits`` fingerprint columns, derived from a shared key.

    Output column ``k`` of :meth:`apply` is input fingerprint column ``order[k]``; descriptor
    columns (after the fingerprint, see :func:`fedpharma.data.molecules.feature_names`) stay put.
    The order comes from the key alone: HKDF-SHA256 (RFC 5869) of the key with ``n_bits`` in
    ``info`` keys an AES-256-CTR stream whose little-endian uint32 words drive a Fisher–Yates
    shuffle with rejection sampling (unbiased). Implemented here rather than with NumPy's
    generators, whose streams are not guaranteed stable across NumPy releases, so every site
    derives the same order from the same key forever.

    ``key_id`` (8 bytes of SHA-256 of a separate HKDF output, hex) may be published: with a key
    of ≥ 256 secret bits it reveals nothing about the key or the order. The key itself is not
    kept, and neither it nor the order appears in ``repr``.

    What it protects (as MELLODDY-TUNER's key-driven bit scrambling; Heyndrickx et al. 2023): the
    coordinator cannot map trunk input weights to hashed substructures. What it does not: the
    order is the same for every site and round, so anyone holding the key (every partner) can
    read the weights like an unpermuted model; and it hides no statistics that do not depend on
    which column is which.
    """

    n_bits: int
    key_id: str
    order: npt.NDArray[np.int64] = field(repr=False)

    @classmethod
    def from_key(cls, key: bytes, n_bits: int) -> FingerprintPermutation:
        """The permutation of ``n_bits`` columns for ``key`` (≥ :data:`MIN_KEY_BYTES` bytes)."""
        _check_key(key)
        if isinstance(n_bits, bool) or not isinstance(n_bits, int) or n_bits < 2:
            raise ConfigError(
                [f"a fingerprint permutation needs n_bits ≥ 2, got {n_bits!r}"],
                source="fingerprint permutation",
            )
        stream_key = _hkdf(key, _ORDER_INFO + str(n_bits).encode("ascii"))
        order = np.asarray(_fisher_yates(n_bits, _words(stream_key)), dtype=np.int64)
        order.setflags(write=False)
        return cls(n_bits=n_bits, key_id=permutation_key_id(key), order=order)

    @classmethod
    def from_key_file(cls, path: str | os.PathLike[str], n_bits: int) -> FingerprintPermutation:
        """The permutation for the key in a key file (see :func:`load_permutation_key`)."""
        return cls.from_key(load_permutation_key(path), n_bits)

    def apply(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """A copy of ``features`` with its first ``n_bits`` columns permuted, the rest unchanged.

        Use it on :func:`fedpharma.data.molecules.featurize`'s output for a configuration with
        ``fingerprint = "morgan"`` and this ``n_bits`` (the fingerprint comes first).
        """
        if features.ndim != 2 or features.shape[1] < self.n_bits:
            raise DataError(
                f"the fingerprint permutation needs a 2-D matrix with at least {self.n_bits} "
                f"fingerprint columns, got shape {features.shape}"
            )
        out = np.array(features, copy=True)
        out[:, : self.n_bits] = features[:, self.order]
        return out

    def __repr__(self) -> str:
        return f"FingerprintPermutation(n_bits={self.n_bits}, key_id={self.key_id!r})"


def permutation_key_id(key: bytes) -> str:
    """The public id of a permutation key: hex of 8 bytes of SHA-256(HKDF(key, key-id info))."""
    _check_key(key)
    return hashlib.sha256(_hkdf(key, _KEY_ID_INFO)).digest()[:_KEY_ID_BYTES].hex()


def new_permutation_key() -> bytes:
    """A fresh 32-byte key from the OS CSPRNG (made once per consortium, shared by partners)."""
    return secrets.token_bytes(MIN_KEY_BYTES)


def write_permutation_key(path: str | os.PathLike[str], key: bytes | None = None) -> str:
    """Write ``key`` (default: a new one) as hex text to a new file, mode 0600; return its id.

    Refuses to overwrite an existing file: re-keying silently would lock a site out.
    """
    key = new_permutation_key() if key is None else key
    key_id = permutation_key_id(key)
    write_new_key_file(path, (key.hex() + "\n").encode("ascii"))
    return key_id


def load_permutation_key(path: str | os.PathLike[str]) -> bytes:
    """Read a permutation key file: the key as hexadecimal text, whitespace ignored.

    Make one with :func:`write_permutation_key` or ``openssl rand -hex 32``. A key shorter than
    :data:`MIN_KEY_BYTES` bytes is refused: its public id would let anyone guess it.
    """
    return read_hex_key(path, "fingerprint permutation key", MIN_KEY_BYTES)


def site_permutation(
    features: FeaturesConfig, key_file: str | os.PathLike[str] | None
) -> FingerprintPermutation | None:
    """The permutation a site applies to its fingerprints, from its own secret key file.

    None when the run recipe names no key (``[features] permutation_key_id`` unset) and the site
    has no key file. Otherwise the key file's id must be the recipe's: a recipe id without a key
    file, a key file without a recipe id and a key of another id each raise
    :class:`~fedpharma.core.errors.ConfigError` saying what to set, before any data is read.
    """
    key_id = features.permutation_key_id
    if key_file is None:
        if key_id is None:
            return None
        raise ConfigError(
            [
                f"[features] permutation_key_id = {quote(key_id)} asks every site to permute its "
                "fingerprint bits with the partners' secret key, and this site holds none; set "
                "`permutation_key` in site.toml to the key file (a simulation holds no key: "
                "leave permutation_key_id unset there)"
            ],
            source="fingerprint permutation",
        )
    permutation = FingerprintPermutation.from_key_file(key_file, features.n_bits)
    if key_id is None:
        raise ConfigError(
            [
                f"this site holds a permutation key (id {permutation.key_id}) but the run recipe "
                f'permutes no bits; set [features] permutation_key_id = "{permutation.key_id}" '
                "in the consortium's recipe, or remove `permutation_key` from site.toml"
            ],
            source="fingerprint permutation",
        )
    if permutation.key_id != key_id:
        raise ConfigError(
            [
                f"the permutation key in {key_file} has id {permutation.key_id}, but the run "
                f"recipe says [features] permutation_key_id = {quote(key_id)}; use the "
                "consortium's key file"
            ],
            source="fingerprint permutation",
        )
    return permutation


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray):
        raise CryptoError(f"a fingerprint permutation key must be bytes, got {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise CryptoError(
            f"a fingerprint permutation key must have at least {MIN_KEY_BYTES} bytes of secret "
            f"randomness, got {len(key)}"
        )


def check_key_id(key_id: str) -> None:
    """Refuse (:class:`ConfigError`) a key id that is not 16 lowercase hex digits."""
    if len(key_id) != 2 * _KEY_ID_BYTES or any(c not in "0123456789abcdef" for c in key_id):
        raise ConfigError(
            [f"a permutation key id is {2 * _KEY_ID_BYTES} lowercase hex digits, got {key_id!r}"],
            source="preprocessing recipe",
        )


def check_permutation_fits(features: FeaturesConfig, permutation: FingerprintPermutation) -> None:
    """Refuse (:class:`ConfigError`) a permutation of another size or of non-Morgan bits."""
    problems = []
    if features.fingerprint != "morgan":
        problems.append('a fingerprint permutation needs [features] fingerprint = "morgan"')
    elif permutation.n_bits != features.n_bits:
        problems.append(
            f"the fingerprint permutation is for n_bits = {permutation.n_bits}, "
            f"but [features] n_bits = {features.n_bits}"
        )
    if problems:
        raise ConfigError(problems, source="fingerprint permutation")


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=_KDF_SALT, info=info).derive(bytes(key))


def _words(stream_key: bytes, block_words: int = 4096) -> Iterator[int]:
    """An endless iterator of little-endian uint32 words of AES-256-CTR(stream_key, IV 0)."""
    encryptor = Cipher(algorithms.AES(stream_key), modes.CTR(bytes(16))).encryptor()
    zeros = bytes(4 * block_words)
    while True:
        yield from np.frombuffer(encryptor.update(zeros), dtype="<u4").tolist()


def _fisher_yates(n: int, words: Iterator[int]) -> list[int]:
    """Durstenfeld's Fisher–Yates shuffle of ``range(n)``; ``j`` uniform by rejection sampling."""
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        limit = (1 << 32) - (1 << 32) % bound  # largest multiple of bound ≤ 2^32
        while True:
            word = next(words)
            if word < limit:
                break
        j = word % bound
        order[i], order[j] = order[j], order[i]
    return order


def quote(value: object) -> str:
    """A setting's value as TOML writes it, for messages: strings quoted, escaped and truncated
    (a value from the network must not inject lines or flood a log)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = json.dumps(str(value), ensure_ascii=True)
    return text if len(text) <= _SHOWN_TEXT else text[: _SHOWN_TEXT - 2] + '…"'
