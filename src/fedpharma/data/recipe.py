"""The preprocessing recipe: proof, at join, that every partner prepares molecules identically.

A federated model is only one model if every site turns a molecule into the same input vector.
A site with a different fingerprint radius, fingerprint size, standardization or RDKit build
trains the shared trunk on inputs that mean something else, and nothing downstream notices: the
losses still go down. MELLODDY therefore ran one preprocessing package, MELLODDY-TUNER, at every
partner, and each partner hashed TUNER's output on a public reference set together with its
parameters, to be compared with a reference hash before any training (Heyndrickx et al. 2023,
"MELLODDY: cross-pharma federated learning at unprecedented scale unlocks benefits in QSAR
without compromising proprietary information", J. Chem. Inf. Model. 64(7), 2331–2344, 2024;
github.com/melloddy/MELLODDY-TUNER, ``utils/hash_reference_set.py``). This module is that check:

1. :class:`PreprocessingRecipe` — every setting that shapes the features (the
   :class:`~fedpharma.config.FeaturesConfig` settings, the version of the fixed standardization of
   :func:`fedpharma.data.molecules.standardize`, the descriptor normalization constants, the RDKit
   version, and whether a secret fingerprint-bit permutation is in use), versioned, with a SHA-256
   digest of its canonical JSON.
2. :func:`reference_digest` — the SHA-256 of the features of a fixed *public* reference set (the
   first parsable NCI molecules that ship inside RDKit). Equal settings are necessary but not
   sufficient: a different RDKit build or an altered featurizer changes the digest even when every
   setting agrees. The reference molecules are public, so the digest reveals nothing of a site.
3. :class:`SiteDescription` (what a site sends at join) and :class:`JoinCheck` /
   :func:`check_join` (what the coordinator compares). A mismatch raises
   :class:`PreprocessingMismatch`, whose message names every differing setting and says how to
   fix it.
4. :class:`FingerprintPermutation` — optionally, the partners share a secret key that permutes the
   fingerprint bits. Morgan / ECFP bits (Rogers & Hahn 2010, J. Chem. Inf. Model. 50(5), 742–754,
   §2) are hashes of atom environments that anyone can recompute for a chosen substructure, so
   without the permutation the coordinator could read from the trunk's input-layer weights which
   substructures the partners' data make important. With it, input column ``k`` is bit
   ``order[k]`` for a key only the partners hold (MELLODDY-TUNER likewise scrambles the folded
   ECFP bits with a permutation derived from the partners' shared secret key,
   ``utils/descriptor_calculator.py``). The coordinator learns only a short key id, so it can
   refuse a site with the wrong key.

Light to import: RDKit loads (through :mod:`fedpharma.data.molecules`) only when a recipe is built
or a reference digest computed; the comparison functions are pure.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import secrets
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedpharma.config import FeaturesConfig
from fedpharma.errors import ConfigError, CryptoError, DataError, ProtocolError

if TYPE_CHECKING:
    from rdkit import Chem

Scalar: TypeAlias = str | int | float | bool
"""The only value types a recipe holds (JSON scalars)."""

RECIPE_VERSION = 1
"""Format version of :class:`PreprocessingRecipe`; bump when a field is added or changes meaning."""

STANDARDIZATION = "rdMolStandardize:Cleanup;LargestFragmentChooser(preferOrganic);Uncharger"
"""The fixed steps of :func:`fedpharma.data.molecules.standardize`, in order."""

STANDARDIZATION_VERSION = 1
"""Bump whenever :func:`fedpharma.data.molecules.standardize` changes what it produces."""

PERMUTATION_SCHEME = "hkdf-sha256+aes256ctr-fisher-yates/v1"
"""How :class:`FingerprintPermutation` derives its order from the key (part of the recipe)."""

NO_PERMUTATION = "none"

REFERENCE_MOLECULES = 256
"""Default size of the public reference set of :func:`reference_digest`.

256 molecules exercise every fingerprint bit position that matters for a mismatch (a different
radius or size changes almost every row) and cost about half a second, once per process.
"""

MIN_KEY_BYTES = 32
"""A permutation key must hold at least 256 bits: its id is public, so it must not be guessable."""

_KDF_SALT = b"fedpharma fingerprint permutation"
_KEY_ID_INFO = b"fedpharma/fingerprint-permutation/key-id/v1"
_ORDER_INFO = b"fedpharma/fingerprint-permutation/order/v1/n_bits="
_KEY_ID_BYTES = 8
_DIGEST_DOMAIN = b"fedpharma reference features v1\x00"
_MAX_DESCRIPTION_BYTES = 64 * 1024
_MAX_RECIPE_ENTRIES = 64
_MAX_TEXT = 256
_SHOWN_TEXT = 60


# ----- the recipe ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PreprocessingRecipe:
    """Every setting that decides what a molecule's feature vector is, and nothing secret.

    The ``FeaturesConfig`` settings are configurable (``[features]`` of the run recipe); the
    others are fixed in code or by the installed RDKit, and differ only between fedpharma
    releases or RDKit builds. The descriptor normalization constants are included even with
    ``descriptors = false`` (they then mark the fedpharma release, conservatively).
    ``permutation_key_id`` is a public fingerprint of the shared permutation key (never the key)
    or ``""`` without a permutation.
    """

    recipe_version: int
    fingerprint: str
    radius: int
    n_bits: int
    counts: bool
    descriptors: bool
    standardization: str
    standardization_version: int
    descriptor_reference_size: int
    descriptor_clip: float
    rdkit_version: str
    fingerprint_permutation: bool
    permutation_scheme: str
    permutation_key_id: str

    @classmethod
    def from_features(
        cls,
        features: FeaturesConfig,
        permutation: FingerprintPermutation | None = None,
        *,
        permutation_key_id: str | None = None,
    ) -> PreprocessingRecipe:
        """The recipe of ``features`` at this site (loads RDKit on first use).

        A site passes its ``permutation``. The coordinator, which must not hold the key, passes
        only the consortium's published ``permutation_key_id`` to build the expected recipe.
        """
        from fedpharma.data import molecules  # RDKit: only when a recipe is actually built

        if permutation is not None:
            _check_permutation_fits(features, permutation)
            if permutation_key_id is not None and permutation_key_id != permutation.key_id:
                raise ConfigError(
                    [
                        f"the permutation key's id is {permutation.key_id}, "
                        f"but permutation_key_id = {permutation_key_id!r} was given"
                    ],
                    source="preprocessing recipe",
                )
            permutation_key_id = permutation.key_id
        if permutation_key_id is not None:
            if features.fingerprint != "morgan":
                raise ConfigError(
                    ['a fingerprint permutation needs [features] fingerprint = "morgan"'],
                    source="preprocessing recipe",
                )
            _check_key_id(permutation_key_id)
        permuted = permutation_key_id is not None
        return cls(
            recipe_version=RECIPE_VERSION,
            fingerprint=features.fingerprint,
            radius=features.radius,
            n_bits=features.n_bits,
            counts=features.counts,
            descriptors=features.descriptors,
            standardization=STANDARDIZATION,
            standardization_version=STANDARDIZATION_VERSION,
            descriptor_reference_size=molecules.REFERENCE_SET_SIZE,
            descriptor_clip=float(molecules.DESCRIPTOR_CLIP),
            rdkit_version=rdkit_version(),
            fingerprint_permutation=permuted,
            permutation_scheme=PERMUTATION_SCHEME if permuted else NO_PERMUTATION,
            permutation_key_id=permutation_key_id or "",
        )

    def to_dict(self) -> dict[str, Scalar]:
        """Field name → value; JSON scalars only (str, int, float, bool)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def digest(self) -> str:
        """SHA-256 (hex) of the recipe's canonical JSON: sorted keys, no whitespace, ASCII."""
        return hashlib.sha256(canonical_json(self.to_dict()).encode("ascii")).hexdigest()


def canonical_json(recipe: Mapping[str, Scalar]) -> str:
    """The canonical JSON text of a recipe dict, the input of :meth:`PreprocessingRecipe.digest`."""
    return json.dumps(
        dict(recipe), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def rdkit_version() -> str:
    """The installed RDKit's version, read from package metadata (does not import RDKit)."""
    for distribution in ("rdkit", "rdkit-pypi"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


# ----- the public reference set and its digest -----------------------------------------------


def reference_digest(
    features: FeaturesConfig,
    permutation: FingerprintPermutation | None = None,
    n_molecules: int = REFERENCE_MOLECULES,
) -> str:
    """SHA-256 (hex) of the features of the first ``n_molecules`` public reference molecules.

    The molecules are the first parsable rows of RDKit's ``Data/NCI/first_5k.tpsa.csv``
    (:func:`fedpharma.data.molecules.reference_smiles_path`), standardized and featurized exactly
    like site data, then permuted by ``permutation`` if given. The hash covers a domain tag, the
    matrix shape and its little-endian float32 bytes (``-0.0`` folded into ``0.0``). The
    unpermuted matrix is cached per ``(features, n_molecules)`` for the life of the process.

    With ``descriptors = true`` the first call also computes the descriptor statistics
    (:func:`fedpharma.data.molecules.reference_descriptor_statistics`, ~10 s once per process),
    which featurizing site data needs anyway.
    """
    matrix = _reference_features(features, n_molecules)
    if permutation is not None:
        _check_permutation_fits(features, permutation)
        matrix = permutation.apply(matrix)
    return feature_digest(matrix)


def feature_digest(matrix: npt.NDArray[np.floating[Any]]) -> str:
    """SHA-256 (hex) of a 2-D feature matrix as canonical little-endian float32 bytes + shape."""
    if matrix.ndim != 2:
        raise DataError(f"a feature matrix must be 2-D, got {matrix.ndim}-D")
    canonical = np.ascontiguousarray(matrix, dtype="<f4") + np.float32(0.0)  # -0.0 → 0.0
    hasher = hashlib.sha256(_DIGEST_DOMAIN)
    hasher.update(struct.pack("<QQ", *canonical.shape))
    hasher.update(canonical.tobytes())
    return hasher.hexdigest()


def reference_molecules(n_molecules: int = REFERENCE_MOLECULES) -> tuple[Chem.Mol, ...]:
    """The first ``n_molecules`` parsable public reference molecules, standardized."""
    return _reference_molecules(n_molecules)


@functools.lru_cache(maxsize=4)
def _reference_molecules(n_molecules: int) -> tuple[Chem.Mol, ...]:
    from fedpharma.data import molecules

    if n_molecules < 1:
        raise ConfigError(
            [f"the reference set needs at least 1 molecule, got {n_molecules}"],
            source="preprocessing recipe",
        )
    path = molecules.reference_smiles_path()
    try:
        with open(path, encoding="utf-8") as handle:
            smiles = [row[0] for row in csv.reader(handle) if row and not row[0].startswith("#")]
    except OSError as exc:
        raise DataError(f"RDKit's public reference molecules are missing: {path}") from exc
    found: list[Chem.Mol] = []
    start = 0
    while len(found) < n_molecules and start < len(smiles):
        chunk = smiles[start : start + n_molecules - len(found)]
        found += molecules.parse_smiles(chunk).mols
        start += len(chunk)
    if len(found) < n_molecules:
        raise DataError(
            f"RDKit's reference file {path} has only {len(found)} usable molecules, "
            f"{n_molecules} are needed"
        )
    return tuple(found)


@functools.lru_cache(maxsize=8)
def _reference_features(features: FeaturesConfig, n_molecules: int) -> npt.NDArray[np.float32]:
    from fedpharma.data import molecules

    matrix = molecules.featurize(_reference_molecules(n_molecules), features)
    matrix.setflags(write=False)
    return matrix


# ----- the secret fingerprint-bit permutation ------------------------------------------------


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
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise CryptoError(f"refusing to overwrite key file {path}; remove it to re-key") from exc
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key.hex() + "\n")
    return key_id


def load_permutation_key(path: str | os.PathLike[str]) -> bytes:
    """Read a permutation key file: the key as hexadecimal text, whitespace ignored.

    Make one with :func:`write_permutation_key` or ``openssl rand -hex 32``. A key shorter than
    :data:`MIN_KEY_BYTES` bytes is refused: its public id would let anyone guess it.
    """
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise CryptoError(f"fingerprint permutation key file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CryptoError(
            f"cannot read fingerprint permutation key file {path}: it must hold the key as "
            "hexadecimal text (e.g. made by `openssl rand -hex 32`)"
        ) from exc
    digits = "".join(text.split())
    try:
        key = bytes.fromhex(digits)
    except ValueError as exc:
        raise CryptoError(
            f"fingerprint permutation key file {path} is not hexadecimal text; make one with "
            "`openssl rand -hex 32`"
        ) from exc
    if len(key) < MIN_KEY_BYTES:
        raise CryptoError(
            f"fingerprint permutation key in {path} has {len(key)} bytes; at least "
            f"{MIN_KEY_BYTES} ({2 * MIN_KEY_BYTES} hex digits) are required, e.g. "
            "`openssl rand -hex 32`"
        )
    return key


def site_permutation(
    features: FeaturesConfig, key_file: str | os.PathLike[str] | None
) -> FingerprintPermutation | None:
    """The permutation a site applies to its fingerprints, from its own secret key file.

    None when the run recipe names no key (``[features] permutation_key_id`` unset) and the site
    has no key file. Otherwise the key file's id must be the recipe's: a recipe id without a key
    file, a key file without a recipe id and a key of another id each raise
    :class:`~fedpharma.errors.ConfigError` saying what to set, before any data is read.
    """
    key_id = features.permutation_key_id
    if key_file is None:
        if key_id is None:
            return None
        raise ConfigError(
            [
                f"[features] permutation_key_id = {_show(key_id)} asks every site to permute its "
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
                f"recipe says [features] permutation_key_id = {_show(key_id)}; use the "
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


def _check_key_id(key_id: str) -> None:
    if len(key_id) != 2 * _KEY_ID_BYTES or any(c not in "0123456789abcdef" for c in key_id):
        raise ConfigError(
            [f"a permutation key id is {2 * _KEY_ID_BYTES} lowercase hex digits, got {key_id!r}"],
            source="preprocessing recipe",
        )


def _check_permutation_fits(features: FeaturesConfig, permutation: FingerprintPermutation) -> None:
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


# ----- what a site sends at join, and what the coordinator checks ----------------------------


@dataclass(frozen=True)
class SiteDescription:
    """A site's preprocessing, as sent at join: recipe, reference digests, reference size.

    ``reference_digest`` is of the *unpermuted* reference features, so the coordinator (which has
    no permutation key) can recompute and compare it. ``permuted_reference_digest`` is of the
    permuted features when a permutation is in use (else ``None``); the coordinator can only
    compare it between sites (or with a value a key holder computed for the consortium).
    """

    recipe: Mapping[str, Scalar]
    reference_digest: str
    permuted_reference_digest: str | None = None
    reference_molecules: int = REFERENCE_MOLECULES

    @classmethod
    def of_site(
        cls,
        features: FeaturesConfig,
        permutation: FingerprintPermutation | None = None,
        n_molecules: int = REFERENCE_MOLECULES,
    ) -> SiteDescription:
        """What a site sends: computed from its own settings and, if any, its permutation."""
        recipe = PreprocessingRecipe.from_features(features, permutation)
        return cls(
            recipe=recipe.to_dict(),
            reference_digest=reference_digest(features, None, n_molecules),
            permuted_reference_digest=(
                None
                if permutation is None
                else reference_digest(features, permutation, n_molecules)
            ),
            reference_molecules=n_molecules,
        )

    @classmethod
    def expected(
        cls,
        features: FeaturesConfig,
        permutation_key_id: str | None = None,
        permuted_reference_digest: str | None = None,
        n_molecules: int = REFERENCE_MOLECULES,
    ) -> SiteDescription:
        """The coordinator's expectation from the run recipe's ``[features]`` and, if the
        consortium permutes bits, the key's public id (and optionally the permuted digest a key
        holder computed). Never needs the key."""
        if permuted_reference_digest is not None and permutation_key_id is None:
            raise ConfigError(
                ["a permuted reference digest needs the permutation key id"],
                source="preprocessing recipe",
            )
        recipe = PreprocessingRecipe.from_features(features, permutation_key_id=permutation_key_id)
        return cls(
            recipe=recipe.to_dict(),
            reference_digest=reference_digest(features, None, n_molecules),
            permuted_reference_digest=permuted_reference_digest,
            reference_molecules=n_molecules,
        )

    @property
    def recipe_digest(self) -> str:
        """SHA-256 (hex) of the recipe's canonical JSON (for logs and the audit trail)."""
        return hashlib.sha256(canonical_json(self.recipe).encode("ascii")).hexdigest()

    def to_json(self) -> str:
        """Canonical JSON, for the join message."""
        return json.dumps(
            {
                "recipe": dict(self.recipe),
                "reference_digest": self.reference_digest,
                "permuted_reference_digest": self.permuted_reference_digest,
                "reference_molecules": self.reference_molecules,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SiteDescription:
        """Parse and validate a description received from the network (hostile input).

        Raises :class:`~fedpharma.errors.ProtocolError` on anything malformed: too large, not
        JSON, missing or unknown fields, non-scalar recipe values, malformed digests.
        """
        if len(text) > _MAX_DESCRIPTION_BYTES:
            raise ProtocolError(
                f"preprocessing description too large: {len(text)} > {_MAX_DESCRIPTION_BYTES}"
            )
        try:
            raw = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError("preprocessing description is not valid JSON") from exc
        expected_keys = {
            "recipe",
            "reference_digest",
            "permuted_reference_digest",
            "reference_molecules",
        }
        if not isinstance(raw, dict) or set(raw) != expected_keys:
            raise ProtocolError(
                "preprocessing description must be an object with exactly the keys "
                + ", ".join(sorted(expected_keys))
            )
        recipe = raw["recipe"]
        if not isinstance(recipe, dict) or len(recipe) > _MAX_RECIPE_ENTRIES:
            raise ProtocolError(
                f"preprocessing recipe must be an object of at most {_MAX_RECIPE_ENTRIES} settings"
            )
        for name, value in recipe.items():
            if len(name) > _MAX_TEXT or not isinstance(value, str | int | float | bool):
                raise ProtocolError(
                    f"preprocessing recipe setting {_show(name)} must be a string, number or "
                    "boolean with a short name"
                )
            if isinstance(value, str) and len(value) > _MAX_TEXT:
                raise ProtocolError(f"preprocessing recipe setting {_show(name)} is too long")
        permuted = raw["permuted_reference_digest"]
        n = raw["reference_molecules"]
        if not _is_digest(raw["reference_digest"]) or not (
            permuted is None or _is_digest(permuted)
        ):
            raise ProtocolError("preprocessing reference digests must be 64 lowercase hex digits")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ProtocolError("reference_molecules must be a positive integer")
        return cls(recipe, raw["reference_digest"], permuted, n)


@dataclass(frozen=True)
class SettingDifference:
    """One setting on which a site's recipe differs from the consortium's.

    ``expected`` / ``found`` are ``None`` where the setting is missing on that side (a site on
    another fedpharma release).
    """

    name: str
    expected: Scalar | None
    found: Scalar | None

    def describe(self, site: str) -> str:
        """One sentence naming the setting, both values, and what the site should do."""
        who = f"site {_show(site)}"
        if self.found is None:
            return (
                f"{who} sends no {_show(self.name)} setting (the consortium's recipe says "
                f"{_show(self.expected)}); run the consortium's fedpharma release"
            )
        if self.expected is None:
            return (
                f"{who} sends a setting {_show(self.name)} = {_show(self.found)} that the "
                "consortium's recipe does not have; run the consortium's fedpharma release"
            )
        label = _LABELS.get(self.name, f"setting {_show(self.name)}")
        return (
            f"{who} uses {label} {_show(self.found)}, the consortium's recipe says "
            f"{_show(self.expected)}; {self._fix()}"
        )

    def _fix(self) -> str:
        name, expected = self.name, self.expected
        if name == "permutation_key_id":  # a [features] setting, but the key is what differs
            return f"load the consortium's permutation key (key id {_show(expected)})"
        if name in _FEATURES_FIELDS:
            return f"set [features] {name} = {_show(expected)}"
        if name == "rdkit_version":
            return f"install RDKit {expected} (the coordinator's build)"
        if name == "fingerprint_permutation":
            if expected is True:
                return "load the consortium's fingerprint permutation key"
            return "remove the fingerprint permutation key: this consortium does not permute bits"
        return "run the consortium's fedpharma release (this setting is fixed in code)"


_FEATURES_FIELDS = frozenset(f.name for f in dataclasses.fields(FeaturesConfig))

_LABELS = {
    "recipe_version": "recipe format version (recipe_version)",
    "fingerprint": "fingerprint kind (fingerprint)",
    "radius": "fingerprint radius (radius)",
    "n_bits": "fingerprint size (n_bits)",
    "counts": "count fingerprints (counts)",
    "descriptors": "RDKit descriptors (descriptors)",
    "standardization": "standardization steps (standardization)",
    "standardization_version": "standardization version (standardization_version)",
    "descriptor_reference_size": "descriptor reference set size (descriptor_reference_size)",
    "descriptor_clip": "descriptor clip (descriptor_clip)",
    "rdkit_version": "RDKit version (rdkit_version)",
    "fingerprint_permutation": "fingerprint permutation (fingerprint_permutation)",
    "permutation_scheme": "permutation scheme (permutation_scheme)",
    "permutation_key_id": "permutation key id (permutation_key_id)",
}


class PreprocessingMismatch(ConfigError):
    """A site's preprocessing differs from the consortium's recipe; the site is refused at join.

    ``problems`` holds one sentence per differing setting (or per digest mismatch), each naming
    the setting and the fix; ``differences`` holds the settings themselves.
    """

    def __init__(
        self, site: str, problems: Sequence[str], differences: Sequence[SettingDifference] = ()
    ) -> None:
        self.site = site
        self.differences = tuple(differences)
        super().__init__(problems, source=f"preprocessing of site {_show(site)}")


def recipe_differences(
    expected: Mapping[str, Scalar], found: Mapping[str, Scalar]
) -> list[SettingDifference]:
    """Every setting whose value (and JSON type: ``1``, ``1.0`` and ``true`` all differ) is not
    the same in both recipes, expected recipe order first, then settings only the site has."""
    differences = [
        SettingDifference(name, value, found.get(name))
        for name, value in expected.items()
        if not _same(value, found.get(name))
    ]
    differences += [
        SettingDifference(name, None, value)
        for name, value in found.items()
        if name not in expected
    ]
    return differences


def check_join(site: str, expected: SiteDescription, found: SiteDescription) -> None:
    """Refuse (raise :class:`PreprocessingMismatch`) unless ``found`` matches ``expected``.

    Order of checks: every differing setting is reported at once; if all settings agree, the
    reference set size, then the unpermuted reference digest (settings agree but features differ:
    a different RDKit build or altered code), then the permuted digest when the expectation
    knows it, else only its presence.
    """
    differences = recipe_differences(expected.recipe, found.recipe)
    if differences:
        raise PreprocessingMismatch(
            site, [d.describe(site) for d in differences], differences=differences
        )
    who = f"site {_show(site)}"
    if found.reference_molecules != expected.reference_molecules:
        raise PreprocessingMismatch(
            site,
            [
                f"{who} computed its reference digest over {found.reference_molecules} public "
                f"molecules, the coordinator over {expected.reference_molecules}; run the "
                "consortium's fedpharma release"
            ],
        )
    if found.reference_digest != expected.reference_digest:
        rdkit = _show(found.recipe.get("rdkit_version"))
        ours = _show(expected.recipe.get("rdkit_version"))
        raise PreprocessingMismatch(
            site,
            [
                f"{who} reports the same preprocessing settings, but its features of the "
                f"{expected.reference_molecules} public reference molecules differ (digest "
                f"{found.reference_digest[:12]}…, expected {expected.reference_digest[:12]}…): "
                f"its RDKit build (version {rdkit}) or its featurization code differs from the "
                f"coordinator's (RDKit {ours}); install the same RDKit build and an unmodified "
                "fedpharma release"
            ],
        )
    permuted = expected.recipe.get("fingerprint_permutation") is True
    if permuted and found.permuted_reference_digest is None:
        raise PreprocessingMismatch(
            site,
            [f"{who} declares a fingerprint permutation but sends no permuted reference digest"],
        )
    if not permuted and found.permuted_reference_digest is not None:
        raise PreprocessingMismatch(
            site, [f"{who} sends a permuted reference digest but the consortium does not permute"]
        )
    if (
        expected.permuted_reference_digest is not None
        and found.permuted_reference_digest != expected.permuted_reference_digest
    ):
        raise PreprocessingMismatch(
            site,
            [
                f"{who} has the consortium's permutation key id, but its permuted reference "
                f"features differ (digest {str(found.permuted_reference_digest)[:12]}…, expected "
                f"{expected.permuted_reference_digest[:12]}…): its permutation code differs; run "
                "the consortium's fedpharma release"
            ],
        )


class JoinCheck:
    """The coordinator's join check: :func:`check_join` against one expectation.

    With a permutation and no known permuted digest, the first admitted site's permuted digest
    becomes the consortium's (trust on first use): later sites with the same key id but another
    permuted digest are refused. Pass ``permuted_reference_digest`` to
    :meth:`SiteDescription.expected` (computed by a key holder) to avoid trusting the first site.
    """

    def __init__(self, expected: SiteDescription) -> None:
        self.expected = expected

    def check(self, site: str, found: SiteDescription) -> None:
        """Admit ``site`` or raise :class:`PreprocessingMismatch` (see :func:`check_join`)."""
        check_join(site, self.expected, found)
        if (
            self.expected.permuted_reference_digest is None
            and found.permuted_reference_digest is not None
        ):
            self.expected = dataclasses.replace(
                self.expected, permuted_reference_digest=found.permuted_reference_digest
            )


def _refuse_constant(name: str) -> None:
    raise ValueError(f"non-finite number {name} in JSON")


def _same(a: Scalar | None, b: Scalar | None) -> bool:
    return type(a) is type(b) and a == b


def _is_digest(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def _show(value: object) -> str:
    """A value as it would be written in TOML; strings quoted, escaped and truncated (a value
    from the network must not inject lines or flood a log)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = json.dumps(str(value), ensure_ascii=True)
    return text if len(text) <= _SHOWN_TEXT else text[: _SHOWN_TEXT - 2] + '…"'
