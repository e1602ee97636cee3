"""One chunk of input molecules → sparse fingerprints, descriptors and keys (a worker's job).

Runs inside a featurization worker process (:mod:`fedpharma.data.loading`): it parses,
standardizes and featurizes a chunk of SMILES strings or SDF records, and returns plain numpy
arrays only, so no RDKit molecule outlives its chunk. Scaffolds and canonical SMILES travel as
64-bit keys (BLAKE2b), enough to group scaffolds and find duplicates without holding strings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from rdkit import Chem, rdBase
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.Scaffolds import MurckoScaffold

from fedpharma.data import molecules

REASONS = (
    molecules.REASON_EMPTY,
    molecules.REASON_UNPARSABLE,
    molecules.REASON_STANDARDIZATION_FAILED,
    molecules.REASON_NO_ATOMS,
)
"""Invalid-molecule reasons, by code (the index stored in :attr:`ChunkFeatures.invalid_codes`)."""

MAX_COUNT = np.iinfo(np.uint16).max


@dataclass(frozen=True)
class FeatureSpec:
    """What a worker computes: the ``[features]`` settings, plus the descriptor normalization
    (computed once by the parent, so workers do not each recompute it)."""

    fingerprint: str
    radius: int
    n_bits: int
    counts: bool
    descriptors: bool
    center: npt.NDArray[np.float64] | None = None
    scale: npt.NDArray[np.float64] | None = None


@dataclass(frozen=True)
class ChunkFeatures:
    """A chunk's result. Rows are absolute 0-based input positions; per-molecule arrays are
    aligned with ``valid``. ``fp_*`` is the CSR fingerprint of the valid molecules; ``cells``
    (SDF only) holds each label property's text per valid molecule ("" where absent)."""

    n_records: int
    valid: npt.NDArray[np.int64]
    invalid_rows: npt.NDArray[np.int64]
    invalid_codes: npt.NDArray[np.int8]
    salts_stripped: int
    fp_lengths: npt.NDArray[np.int64]
    fp_indices: npt.NDArray[np.int32]
    fp_values: npt.NDArray[np.uint16]
    descriptors: npt.NDArray[np.float32]
    scaffold_keys: npt.NDArray[np.int64]
    molecule_keys: npt.NDArray[np.int64]
    cells: tuple[tuple[str, ...], ...] = ()
    properties_seen: frozenset[str] = frozenset()


def key64(text: str) -> int:
    """A 64-bit signed key of ``text``; never 0 (0 marks "no scaffold")."""
    value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    signed = value - (1 << 64) if value >= 1 << 63 else value
    return signed or 1


class _Accumulator:
    def __init__(self, spec: FeatureSpec, start: int) -> None:
        self.spec = spec
        self.start = start
        self.n = 0
        self.valid: list[int] = []
        self.invalid: list[tuple[int, int]] = []
        self.salts = 0
        self.lengths: list[int] = []
        self.indices: list[npt.NDArray[np.int32]] = []
        self.values: list[npt.NDArray[np.uint16]] = []
        self.mols: list[Chem.Mol] = []
        self.scaffolds: list[int] = []
        self.keys: list[int] = []
        self.generator = rdFingerprintGenerator.GetMorganGenerator(
            radius=spec.radius, fpSize=spec.n_bits
        )

    def add(self, raw: Chem.Mol | None, empty: bool = False) -> bool:
        row = self.start + self.n
        self.n += 1
        result = molecules.REASON_EMPTY if empty else molecules.standardize_or_reason(raw)
        if isinstance(result, str):
            self.invalid.append((row, REASONS.index(result)))
            return False
        if raw is not None and len(Chem.GetMolFrags(raw)) > 1:
            self.salts += 1
        self.valid.append(row)
        if self.spec.fingerprint == "morgan":
            if self.spec.counts:
                nonzero = self.generator.GetCountFingerprint(result).GetNonzeroElements()
                cols = np.fromiter(nonzero.keys(), np.int32, len(nonzero))
                vals = np.fromiter(nonzero.values(), np.int64, len(nonzero))
            else:
                cols = np.asarray(list(self.generator.GetFingerprint(result).GetOnBits()), np.int32)
                vals = np.ones(cols.size, np.int64)
            order = np.argsort(cols)
            self.indices.append(cols[order])
            self.values.append(np.minimum(vals[order], MAX_COUNT).astype(np.uint16))
            self.lengths.append(cols.size)
        if self.spec.descriptors:
            self.mols.append(result)
        with rdBase.BlockLogs():
            scaffold = str(MurckoScaffold.MurckoScaffoldSmiles(mol=result, includeChirality=False))  # type: ignore[no-untyped-call]
        self.scaffolds.append(key64(scaffold) if scaffold else 0)
        self.keys.append(key64(molecules.canonical_smiles(result)))
        return True

    def finish(
        self, cells: tuple[tuple[str, ...], ...] = (), seen: frozenset[str] = frozenset()
    ) -> ChunkFeatures:
        descriptors = np.zeros((len(self.valid), 0), np.float32)
        if self.spec.descriptors and self.mols:
            assert self.spec.center is not None and self.spec.scale is not None
            descriptors = molecules.normalize_descriptors(
                molecules.raw_descriptors(self.mols), self.spec.center, self.spec.scale
            )
        invalid = np.asarray(self.invalid, np.int64).reshape(-1, 2)
        return ChunkFeatures(
            n_records=self.n,
            valid=np.asarray(self.valid, np.int64),
            invalid_rows=invalid[:, 0].copy(),
            invalid_codes=invalid[:, 1].astype(np.int8),
            salts_stripped=self.salts,
            fp_lengths=np.asarray(self.lengths, np.int64),
            fp_indices=np.concatenate(self.indices) if self.indices else np.zeros(0, np.int32),
            fp_values=np.concatenate(self.values) if self.values else np.zeros(0, np.uint16),
            descriptors=descriptors,
            scaffold_keys=np.asarray(self.scaffolds, np.int64),
            molecule_keys=np.asarray(self.keys, np.int64),
            cells=cells,
            properties_seen=seen,
        )


def featurize_smiles(start: int, smiles: list[str], spec: FeatureSpec) -> ChunkFeatures:
    """The chunk of SMILES beginning at input row ``start``."""
    acc = _Accumulator(spec, start)
    for text in smiles:
        stripped = text.strip()
        if not stripped:
            acc.add(None, empty=True)
            continue
        with rdBase.BlockLogs():
            acc.add(Chem.MolFromSmiles(stripped))
    return acc.finish()


def featurize_sdf(
    start: int, records: bytes, label_columns: tuple[str, ...], spec: FeatureSpec
) -> ChunkFeatures:
    """The chunk of SDF records (their text, ``$$$$``-terminated) beginning at record ``start``;
    label cells come from the valid records' SD properties."""
    acc = _Accumulator(spec, start)
    cells: list[list[str]] = [[] for _ in label_columns]
    seen: set[str] = set()
    supplier = Chem.SDMolSupplier()
    with rdBase.BlockLogs():
        supplier.SetData(records.decode("utf-8", errors="replace"))
        for index in range(len(supplier)):
            record = supplier[index]
            if acc.add(record):
                props = {k: str(v) for k, v in record.GetPropsAsDict().items()}
                seen.update(props)
                for column, name in zip(cells, label_columns, strict=True):
                    column.append(props.get(name, ""))
    return acc.finish(tuple(tuple(c) for c in cells), frozenset(seen))
