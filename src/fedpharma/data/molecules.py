"""Molecules: parsing, standardization, fingerprints, descriptors and scaffolds (RDKit).

This is the only module of the package that imports RDKit (DESIGN §4), so ``import fedpharma``
and ``import fedpharma.data.partition`` stay fast.

Confidentiality: a pharma site's structures are its crown jewels. Invalid inputs are therefore
reported by *row number and reason only* (:class:`MoleculeReport`); a SMILES string never enters
a log line or an exception message. RDKit's own logger echoes the offending SMILES on stderr, so
every RDKit call that can fail on user input runs under :func:`rdkit.rdBase.BlockLogs`.

Every site must turn molecules into features identically, or a federated model sees different
inputs at different sites. Hence a fixed standardization (cleanup, largest organic fragment,
neutralization), fixed fingerprint parameters from :class:`FeaturesConfig`, and descriptor
normalization statistics computed from *public* molecules that ship inside RDKit (see
:func:`reference_descriptor_statistics`). Sites must run the same RDKit version: descriptor lists
and fingerprint hashing can change between releases.

References:
    Rogers, D. & Hahn, M. (2010). Extended-connectivity fingerprints. J. Chem. Inf. Model. 50(5),
    742–754 — Morgan / ECFP fingerprints (§2, the iterative atom-environment hashing).
    Bemis, G. W. & Murcko, M. A. (1996). The properties of known drugs. 1. Molecular frameworks.
    J. Med. Chem. 39(15), 2887–2893 — ring systems plus linkers as a molecule's framework.
"""

from __future__ import annotations

import csv
import functools
import gzip
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from rdkit import Chem, RDConfig, rdBase
from rdkit.Chem import Descriptors, rdFingerprintGenerator
from rdkit.Chem.MolStandardize import rdMolStandardize
from rdkit.Chem.Scaffolds import MurckoScaffold

from fedpharma.core.config import FeaturesConfig
from fedpharma.core.errors import ConfigError, DataError
from fedpharma.data.import_report import MoleculeReport

REASON_EMPTY = "empty"
REASON_UNPARSABLE = "unparsable"
REASON_STANDARDIZATION_FAILED = "standardization failed"
REASON_NO_ATOMS = "no atoms after standardization"

DESCRIPTOR_CLIP = 10.0
"""Normalized descriptor values are clipped to ±this many robust standard deviations."""

REFERENCE_SET_SIZE = 1000
"""How many public reference molecules (the first parsable ones) fix the descriptor statistics.

1,000 molecules give stable medians and quartiles while keeping the one-off cost near ten seconds
(the full RDKit descriptor list costs ~10 ms per molecule).
"""

_IQR_TO_STD = 1.349  # interquartile range of a standard normal distribution


@dataclass(frozen=True)
class ParsedMolecules:
    """The valid, standardized molecules of an input and the input rows they came from."""

    mols: tuple[Chem.Mol, ...]
    rows: npt.NDArray[np.int64]
    report: MoleculeReport


@dataclass(frozen=True)
class _Standardizers:
    """The RDKit objects of :func:`standardize`, built once per process.

    ``rdMolStandardize.Cleanup`` builds a new normalizer and reionizer from their SMARTS on every
    call (~40 % of its time); these are the same objects with RDKit's default cleanup parameters.
    """

    disconnector: rdMolStandardize.MetalDisconnector
    normalizer: rdMolStandardize.Normalizer
    reionizer: rdMolStandardize.Reionizer
    chooser: rdMolStandardize.LargestFragmentChooser
    uncharger: rdMolStandardize.Uncharger


@functools.cache
def _standardizers() -> _Standardizers:
    return _Standardizers(
        disconnector=rdMolStandardize.MetalDisconnector(),
        normalizer=rdMolStandardize.NormalizerFromParams(rdMolStandardize.CleanupParameters()),
        reionizer=rdMolStandardize.Reionizer(),
        chooser=rdMolStandardize.LargestFragmentChooser(preferOrganic=True),
        uncharger=rdMolStandardize.Uncharger(canonicalOrder=True),
    )


def standardize(mol: Chem.Mol) -> Chem.Mol:
    """Cleanup (normalize functional groups, reionize), keep the largest organic fragment
    (strips salts and solvents), then neutralize charges where possible.

    The cleanup is RDKit's ``rdMolStandardize.Cleanup`` step by step (remove hydrogens,
    disconnect metals, normalize, reionize, reassign stereochemistry), with its objects built
    once. Canonical tautomers are deliberately not enumerated: slow, and not needed for
    fingerprints that every site computes the same way. Raises whatever RDKit raises on failure.
    """
    steps = _standardizers()
    with rdBase.BlockLogs():
        cleaned = Chem.RemoveHs(mol)
        steps.disconnector.DisconnectInPlace(cleaned)
        steps.normalizer.normalizeInPlace(cleaned)
        steps.reionizer.reionizeInPlace(cleaned)
        Chem.AssignStereochemistry(cleaned, cleanIt=True, force=True)
        return steps.uncharger.uncharge(steps.chooser.choose(cleaned))


def canonical_smiles(mol: Chem.Mol) -> str:
    """RDKit canonical isomeric SMILES (stable for a given RDKit version)."""
    return str(Chem.MolToSmiles(mol))


def standardize_or_reason(mol: Chem.Mol | None) -> Chem.Mol | str:
    """A standardized molecule, or the reason it is unusable."""
    if mol is None:
        return REASON_UNPARSABLE
    try:
        standardized = standardize(mol)
    except Exception:  # RDKit raises assorted exception types on chemically odd input
        return REASON_STANDARDIZATION_FAILED
    if standardized.GetNumAtoms() == 0:
        return REASON_NO_ATOMS
    return standardized


def _collect(candidates: Iterable[Chem.Mol | str]) -> ParsedMolecules:
    mols: list[Chem.Mol] = []
    rows: list[int] = []
    invalid: list[tuple[int, str]] = []
    n_input = 0
    for row, candidate in enumerate(candidates):
        n_input += 1
        if isinstance(candidate, str):
            invalid.append((row, candidate))
        else:
            mols.append(candidate)
            rows.append(row)
    report = MoleculeReport(n_input=n_input, n_valid=len(mols), invalid=tuple(invalid))
    return ParsedMolecules(tuple(mols), np.asarray(rows, dtype=np.int64), report)


def parse_smiles(smiles: Sequence[str | None]) -> ParsedMolecules:
    """Parse and standardize SMILES; unusable entries are reported by row and reason.

    ``None``, empty and whitespace-only entries are reported as ``"empty"`` (RDKit would
    otherwise accept an empty string as a molecule with no atoms).
    """

    def one(text: str | None) -> Chem.Mol | str:
        if text is None or not text.strip():
            return REASON_EMPTY
        with rdBase.BlockLogs():
            mol = Chem.MolFromSmiles(text.strip())
        return standardize_or_reason(mol)

    return _collect(one(text) for text in smiles)


def parse_sdf(path: str | os.PathLike[str]) -> tuple[ParsedMolecules, list[dict[str, str]]]:
    """Read and standardize an SDF file (optionally gzipped).

    Returns the parsed molecules and, for every *valid* molecule (aligned with ``mols``), its SD
    properties as strings. Unreadable records are reported as ``"unparsable"`` by record number.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    properties: list[dict[str, str]] = []

    def candidates() -> Iterable[Chem.Mol | str]:
        with opener(path, "rb") as handle, rdBase.BlockLogs():
            for record in Chem.ForwardSDMolSupplier(handle):
                result = standardize_or_reason(record)
                if not isinstance(result, str):
                    properties.append({k: str(v) for k, v in record.GetPropsAsDict().items()})
                yield result

    try:
        parsed = _collect(candidates())
    except OSError as exc:
        raise DataError(f"cannot read SDF file {path}: {exc.strerror or exc}") from exc
    return parsed, properties


def morgan_fingerprints(
    mols: Sequence[Chem.Mol], radius: int = 2, n_bits: int = 2048, counts: bool = False
) -> npt.NDArray[np.float32]:
    """Morgan / ECFP fingerprints (Rogers & Hahn 2010) folded to ``n_bits``, as float32 rows.

    ``radius=2`` corresponds to ECFP4. With ``counts`` each entry is how often a hashed atom
    environment occurs (raw counts, not scaled); otherwise 0/1 presence bits.
    """
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    fingerprint = (
        generator.GetCountFingerprintAsNumPy if counts else generator.GetFingerprintAsNumPy
    )
    out = np.zeros((len(mols), n_bits), dtype=np.float32)
    for i, mol in enumerate(mols):
        out[i] = fingerprint(mol)
    return out


DESCRIPTOR_NAMES: tuple[str, ...] = tuple(name for name, _ in Descriptors.descList)


def raw_descriptors(mols: Sequence[Chem.Mol]) -> npt.NDArray[np.float64]:
    """All RDKit 2D descriptors (``Descriptors.descList`` order); failures become NaN."""
    out = np.full((len(mols), len(DESCRIPTOR_NAMES)), np.nan, dtype=np.float64)
    with rdBase.BlockLogs():
        for i, mol in enumerate(mols):
            for j, (_, function) in enumerate(Descriptors.descList):
                try:
                    out[i, j] = float(function(mol))
                except Exception:  # a descriptor that fails on one molecule is just missing
                    continue
    return out


@dataclass(frozen=True)
class DescriptorStatistics:
    """Per-descriptor centre and scale used to normalize: ``(x - center) / scale``."""

    names: tuple[str, ...]
    center: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    n_reference: int


def reference_smiles_path() -> str:
    """The public reference set: the first 5,000 NCI compounds, shipped with RDKit."""
    return os.path.join(RDConfig.RDDataDir, "NCI", "first_5k.tpsa.csv")


@functools.cache
def reference_descriptor_statistics() -> DescriptorStatistics:
    """Robust descriptor statistics from public molecules every site has: median and IQR.

    Why: normalizing descriptors needs a centre and a scale. Computing them from a site's own
    data would make sites encode the same molecule differently, and agreeing on pooled
    statistics would reveal something about each site's data. Instead every site computes them
    from the same public molecules that ship inside RDKit (``Data/NCI/first_5k.tpsa.csv``, the
    first :data:`REFERENCE_SET_SIZE` parsable ones, standardized like site data), so all sites
    get identical numbers and no site reveals anything. Cached for the life of the process.

    The scale is IQR / 1.349 (a robust standard deviation); where that is zero (descriptors
    that are almost always 0, such as fragment counts) the standard deviation is used, and 1
    where both are zero.
    """
    path = reference_smiles_path()
    if not os.path.exists(path):
        raise DataError(f"RDKit's public reference molecules are missing: {path}")
    with open(path, encoding="utf-8") as handle:
        smiles = [row[0] for row in csv.reader(handle) if row and not row[0].startswith("#")]
    mols: list[Chem.Mol] = []
    for text in smiles:
        with rdBase.BlockLogs():
            mol = Chem.MolFromSmiles(text)
        result = standardize_or_reason(mol)
        if not isinstance(result, str):
            mols.append(result)
            if len(mols) == REFERENCE_SET_SIZE:
                break
    values = raw_descriptors(mols)
    values[~np.isfinite(values)] = np.nan
    center = np.nan_to_num(np.nanmedian(values, axis=0), nan=0.0)
    q1, q3 = np.nanpercentile(values, [25, 75], axis=0)
    scale = np.nan_to_num((q3 - q1) / _IQR_TO_STD, nan=0.0)
    std = np.nan_to_num(np.nanstd(values, axis=0), nan=0.0)
    scale = np.where(scale > 0, scale, np.where(std > 0, std, 1.0))
    center.setflags(write=False)
    scale.setflags(write=False)
    return DescriptorStatistics(DESCRIPTOR_NAMES, center, scale, n_reference=len(mols))


def normalized_descriptors(mols: Sequence[Chem.Mol]) -> npt.NDArray[np.float32]:
    """RDKit 2D descriptors normalized with :func:`reference_descriptor_statistics`.

    Values are clipped to ±:data:`DESCRIPTOR_CLIP` (heavy-tailed descriptors such as ``Ipc``
    would otherwise dominate) and non-finite values become 0, i.e. the reference median.
    """
    stats = reference_descriptor_statistics()
    return normalize_descriptors(raw_descriptors(mols), stats.center, stats.scale)


def normalize_descriptors(
    raw: npt.NDArray[np.float64], center: npt.NDArray[np.float64], scale: npt.NDArray[np.float64]
) -> npt.NDArray[np.float32]:
    """``(raw - center) / scale``, clipped to ±:data:`DESCRIPTOR_CLIP`, non-finite → 0."""
    with np.errstate(invalid="ignore", over="ignore"):
        normalized = (raw - center) / scale
    normalized = np.clip(normalized, -DESCRIPTOR_CLIP, DESCRIPTOR_CLIP)
    normalized[~np.isfinite(normalized)] = 0.0
    return normalized.astype(np.float32)


def murcko_scaffolds(mols: Sequence[Chem.Mol]) -> list[str]:
    """Bemis–Murcko scaffold SMILES (Bemis & Murcko 1996), atom types kept (not generic).

    Acyclic molecules have the empty scaffold ``""`` (see :func:`scaffold_groups`).
    """
    with rdBase.BlockLogs():
        return [
            str(MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False))  # type: ignore[no-untyped-call]
            for mol in mols
        ]


def scaffold_groups(mols: Sequence[Chem.Mol]) -> npt.NDArray[np.int64]:
    """One integer group id per molecule: equal ids ⇔ equal (non-empty) Murcko scaffold.

    An acyclic molecule has no ring system, so it belongs to no chemical series: each gets a group
    of its own rather than all sharing the empty scaffold (which would hand every acyclic
    molecule of a dataset, a third of ESOL, to one partner as if it were one series). Ids are
    assigned in order of first appearance, so they are deterministic for a given input.
    """
    ids: dict[str, int] = {}
    groups = []
    for index, scaffold in enumerate(murcko_scaffolds(mols)):
        key = scaffold if scaffold else f"acyclic:{index}"
        groups.append(ids.setdefault(key, len(ids)))
    return np.asarray(groups, dtype=np.int64)


def feature_names(features: FeaturesConfig) -> tuple[str, ...]:
    """Column names of :func:`featurize`'s output for this configuration, in order."""
    _check_some_features(features)
    names: list[str] = []
    if features.fingerprint == "morgan":
        kind = "count" if features.counts else "bit"
        names += [f"morgan_r{features.radius}_{kind}{i}" for i in range(features.n_bits)]
    if features.descriptors:
        names += [f"rdkit_{name}" for name in DESCRIPTOR_NAMES]
    return tuple(names)


def featurize(mols: Sequence[Chem.Mol], features: FeaturesConfig) -> npt.NDArray[np.float32]:
    """Model inputs for molecules: Morgan fingerprint and/or normalized descriptors, side by side.

    Column order matches :func:`feature_names`.
    """
    _check_some_features(features)
    blocks: list[npt.NDArray[np.float32]] = []
    if features.fingerprint == "morgan":
        blocks.append(morgan_fingerprints(mols, features.radius, features.n_bits, features.counts))
    if features.descriptors:
        blocks.append(normalized_descriptors(mols))
    return np.concatenate(blocks, axis=1)


def _check_some_features(features: FeaturesConfig) -> None:
    if features.fingerprint == "none" and not features.descriptors:
        raise ConfigError(
            ['[features] with fingerprint = "none", set descriptors = true'], source="features"
        )
