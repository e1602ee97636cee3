"""The preprocessing recipe, the public reference digest, and the description a site sends.

Every partner must turn a molecule into the same input vector; as MELLODDY did with
MELLODDY-TUNER (Heyndrickx et al. 2023, J. Chem. Inf. Model. 64(7), 2331–2344, 2024), each site
describes its preprocessing at join by a versioned recipe of every feature-shaping setting and the
SHA-256 of its features of a public reference set (:class:`SiteDescription`); the coordinator
compares it (:mod:`fedpharma.server.join`). The full account: ``docs/preprocessing-check.md``.

Light to import: RDKit loads (through :mod:`fedpharma.data.molecules`) only when a recipe is built
or a reference digest computed.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt

from fedpharma.core import serde
from fedpharma.core.config import FeaturesConfig
from fedpharma.core.errors import ConfigError, DataError, ProtocolError
from fedpharma.data.permutation import (
    NO_PERMUTATION,
    PERMUTATION_SCHEME,
    FingerprintPermutation,
    check_key_id,
    check_permutation_fits,
    quote,
)

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

REFERENCE_MOLECULES = 256
"""Default size of the public reference set of :func:`reference_digest`.

256 molecules exercise every fingerprint bit position that matters for a mismatch (a different
radius or size changes almost every row) and cost about half a second, once per process.
"""

_DIGEST_DOMAIN = b"fedpharma reference features v1\x00"
_MAX_DESCRIPTION_BYTES = 64 * 1024
_MAX_RECIPE_ENTRIES = 64
_MAX_TEXT = 256
_WHERE = "preprocessing description"


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
            check_permutation_fits(features, permutation)
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
            check_key_id(permutation_key_id)
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
        check_permutation_fits(features, permutation)
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


def reference_smiles(n_molecules: int = REFERENCE_MOLECULES) -> tuple[str, ...]:
    """The public reference molecules as canonical SMILES (for a plugin's own inputs)."""
    from rdkit import Chem

    return tuple(Chem.MolToSmiles(m) for m in reference_molecules(n_molecules))


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


# ----- what a site sends at join ---------------------------------------------------------------


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
    permuted_reference_digest: str | None
    reference_molecules: int = field(metadata={"min": 1})

    @classmethod
    def of_site(
        cls,
        features: FeaturesConfig,
        permutation: FingerprintPermutation | None = None,
        n_molecules: int = REFERENCE_MOLECULES,
        *,
        model_inputs: Mapping[str, Scalar] | None = None,
    ) -> SiteDescription:
        """What a site sends: computed from its own settings and, if any, its permutation.
        ``model_inputs``: how a model plugin that builds its own inputs (molecular graphs)
        makes them, checked like the fingerprint settings."""
        recipe = PreprocessingRecipe.from_features(features, permutation)
        return cls(
            recipe={**recipe.to_dict(), **(model_inputs or {})},
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
        *,
        model_inputs: Mapping[str, Scalar] | None = None,
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
            recipe={**recipe.to_dict(), **(model_inputs or {})},
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
            serde.to_dict(self),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SiteDescription:
        """Parse and validate a description received from the network (hostile input).

        Raises :class:`~fedpharma.core.errors.ProtocolError` naming every problem: too large, not
        JSON, missing or unknown fields, non-scalar or oversized recipe values, malformed digests.
        """
        if len(text) > _MAX_DESCRIPTION_BYTES:
            raise ProtocolError(
                f"preprocessing description too large: {len(text)} > {_MAX_DESCRIPTION_BYTES}"
            )
        try:
            raw = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError("preprocessing description is not valid JSON") from exc
        description, problems = serde.from_dict(cls, raw, _WHERE)
        if description is not None:
            problems += description._problems()
        if problems or description is None:
            raise ProtocolError("; ".join(problems))
        return description

    def _problems(self) -> list[str]:
        """What serde's type checks leave: the recipe's size, and the digests' form."""
        problems = []
        if len(self.recipe) > _MAX_RECIPE_ENTRIES:
            problems.append(f"{_WHERE}: the recipe has more than {_MAX_RECIPE_ENTRIES} settings")
        for name, value in self.recipe.items():
            if len(name) > _MAX_TEXT or (isinstance(value, str) and len(value) > _MAX_TEXT):
                problems.append(f"preprocessing recipe setting {quote(name)} is too long")
        if not _is_digest(self.reference_digest) or not (
            self.permuted_reference_digest is None or _is_digest(self.permuted_reference_digest)
        ):
            problems.append("preprocessing reference digests must be 64 lowercase hex digits")
        return problems


def _refuse_constant(name: str) -> None:
    raise ValueError(f"non-finite number {name} in JSON")


def _is_digest(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )
