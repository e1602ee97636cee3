"""Loading datasets: bundled ones by name, or files (molecules as CSV/SDF, or tabular CSV).

Bundled datasets ship inside installed wheels, so demos and tests run offline:

- ``chembl2321810``: a real ChEMBL potency series (pIC50 of ~1,000 analogues; ChEMBL document
  CHEMBL2321810) that RDKit ships for its Free–Wilson contribution.
- ``breast-cancer``: the Wisconsin diagnostic breast-cancer data (Street, Wolberg & Mangasarian
  1993) that ships with scikit-learn.

Molecule files are standardized and featurized by :mod:`fedpharma.data.molecules`; invalid
molecules and rows without any label are left out of the dataset and reported, by row number
only, in the :class:`~fedpharma.data.molecules.MoleculeReport`. RDKit is imported lazily, so
tabular-only use never loads it.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from fedpharma.core.config import DatasetConfig, FeaturesConfig
from fedpharma.core.dataset import Dataset, Matrix, Objective, SparseMatrix
from fedpharma.core.errors import DataError
from fedpharma.data.import_report import MoleculeReport
from fedpharma.data.schema import check_roles, load_schema, schema_beside
from fedpharma.data.tabular import (
    TabularSchema,
    infer_schema,
    read_tabular,
)

if TYPE_CHECKING:
    from fedpharma.data.loading import Featurized
    from fedpharma.data.permutation import FingerprintPermutation

BUNDLED: dict[str, str] = {
    "chembl2321810": "ChEMBL potency series, 1,017 molecules, pIC50 regression (ships with RDKit)",
    "breast-cancer": "Wisconsin diagnostic breast cancer, 569 records × 30 features, "
    "binary malignant/benign (ships with scikit-learn)",
}


MOLECULE_DATASETS = frozenset({"chembl2321810"})
"""The bundled datasets whose records are molecules (featurized by ``[features]``)."""


def featurizes_molecules(name: str | None, kind: str) -> bool:
    """Whether a data source (bundled ``name``, else a file of ``kind``) holds molecules that
    ``[features]`` turns into model inputs, so sites must prove identical preprocessing."""
    return name in MOLECULE_DATASETS if name is not None else kind == "molecules"


def load_dataset(
    cfg: DatasetConfig,
    features: FeaturesConfig,
    permutation: FingerprintPermutation | None = None,
    *,
    smiles: bool = False,
) -> tuple[Dataset, MoleculeReport | None]:
    """Load the dataset ``cfg`` names; the report is ``None`` for tabular data.

    Molecule features are permuted by ``permutation`` (the partners' secret fingerprint-bit
    order, :mod:`fedpharma.data.permutation`) right after featurization, so every site trains on
    identically permuted inputs. With ``smiles`` a molecule file's rows (CSV or SDF) also keep their
    standardized SMILES (``Dataset.smiles``), for a model plugin that builds its own inputs.
    """
    if (cfg.name is None) == (cfg.path is None):
        raise DataError("give exactly one of a bundled dataset name or a file path")
    if cfg.name is not None:
        if cfg.name == "chembl2321810":
            return _load_chembl2321810(features, permutation)
        if cfg.name == "breast-cancer":
            return _load_breast_cancer(), None
        raise DataError(
            f"unknown bundled dataset {cfg.name!r}; bundled: {', '.join(sorted(BUNDLED))}"
        )
    path = Path(cast(str, cfg.path))
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if not cfg.label_columns:
        raise DataError(f"{path}: name the label column(s) in `label_columns`")
    task = _task(cfg.task, path)
    if cfg.kind == "tabular":
        schema, _declared = resolve_schema(cfg)
        return read_tabular(path, schema, task, name=_stem(path)), None
    sdf = path.name.lower().endswith((".sdf", ".sdf.gz"))
    input_smiles = None
    if smiles:
        input_smiles = _input_sdf_smiles(path) if sdf else _input_smiles(path, cfg.smiles_column)
    return _molecule_dataset(
        _featurized_file(cfg, path, features, sdf),
        task,
        tuple(cfg.label_columns),
        features,
        _stem(path),
        permutation,
        cfg.duplicates,
        input_smiles,
    )


def _input_smiles(path: Path, column: str) -> list[str]:
    """The SMILES cell of every input row of a molecule CSV, in order."""
    from fedpharma.data.loading import open_text

    with open_text(path) as handle:
        return [row.get(column) or "" for row in csv.DictReader(handle)]


def _input_sdf_smiles(path: Path) -> list[str]:
    """The SMILES of every record of an SDF file, in order ("" for an unreadable record, which
    featurization drops too)."""
    from rdkit import Chem, rdBase

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle, rdBase.BlockLogs():
            return [
                "" if mol is None else str(Chem.MolToSmiles(mol))
                for mol in Chem.ForwardSDMolSupplier(handle)
            ]
    except OSError as exc:
        raise DataError(f"cannot read SDF file {path}: {exc.strerror or exc}") from exc


def _standardized_smiles(smiles: Sequence[str]) -> tuple[str, ...]:
    """Canonical SMILES of each (valid) molecule after the fingerprints' standardization."""
    from rdkit import Chem

    from fedpharma.data.molecules import canonical_smiles, standardize

    return tuple(canonical_smiles(standardize(Chem.MolFromSmiles(s))) for s in smiles)


REASON_NO_GRAPH = "standardized SMILES unreadable (no molecular graph)"


def _graph_smiles(
    keep: npt.NDArray[np.int64], valid: npt.NDArray[np.int64], input_smiles: Sequence[str]
) -> tuple[npt.NDArray[np.int64], dict[int, str], list[int]]:
    """For a plugin that builds graphs from SMILES: the ``keep`` positions whose standardized
    SMILES RDKit reads back, those SMILES by input row, and the input rows it cannot read."""
    from rdkit import Chem, rdBase

    rows = valid[keep]
    standardized = _standardized_smiles([input_smiles[int(row)] for row in rows])
    with rdBase.BlockLogs():
        readable = np.array([Chem.MolFromSmiles(s) is not None for s in standardized], bool)
    by_row = {int(r): s for r, s, ok in zip(rows, standardized, readable, strict=True) if ok}
    return keep[readable], by_row, [int(r) for r in rows[~readable]]


def resolve_schema(cfg: DatasetConfig) -> tuple[TabularSchema, Path | None]:
    """A tabular file's schema and the file it was declared in (``None``: inferred from the
    data): ``[dataset] schema``, else ``NAME.schema.toml`` beside the data, else inference."""
    path = Path(cast(str, cfg.path))
    declared = Path(cfg.schema) if cfg.schema is not None else schema_beside(path)
    if cfg.schema is None and not declared.exists():
        return infer_schema(path, cfg.label_columns, cfg.site_column), None
    schema = load_schema(declared)
    check_roles(schema, cfg.label_columns, cfg.site_column, str(declared))
    return schema, declared


def _task(task: str | None, path: Path) -> Objective:
    if task not in ("regression", "classification"):
        raise DataError(f'{path}: set `task` to "regression" or "classification"')
    return cast(Objective, task)


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


def _molecule_dataset(
    featurized: Featurized,
    task: Objective,
    task_names: tuple[str, ...],
    features: FeaturesConfig,
    name: str,
    permutation: FingerprintPermutation | None,
    duplicates: str = "keep",
    input_smiles: Sequence[str] | None = None,
) -> tuple[Dataset, MoleculeReport]:
    """Keep valid molecules with at least one label, check the labels for ``task``, merge
    duplicates by policy, assemble the (sparse) features, permute them; scaffold groups; report."""
    from fedpharma.data.chunk_features import REASONS
    from fedpharma.data.molecules import feature_names

    labels = featurized.labels.take(featurized.valid)
    has_label = labels.row_lengths() > 0
    keep = np.flatnonzero(has_label)
    report = MoleculeReport(
        n_input=featurized.n_input,
        n_valid=int(featurized.valid.size),
        invalid=tuple(
            (int(row), REASONS[code])
            for row, code in zip(
                featurized.invalid_rows.tolist(), featurized.invalid_codes.tolist(), strict=True
            )
        ),
        unlabelled=tuple(int(r) for r in featurized.valid[~has_label]),
        salts_stripped=featurized.salts_stripped,
    )
    graph_smiles: dict[int, str] = {}
    if input_smiles is not None:
        keep, graph_smiles, unreadable = _graph_smiles(keep, featurized.valid, input_smiles)
        if unreadable:  # e.g. a metallocene's ring reduced to c1cccc1: no graph can be built
            invalid = report.invalid + tuple((row, REASON_NO_GRAPH) for row in unreadable)
            report = replace(
                report, n_valid=report.n_valid - len(unreadable), invalid=tuple(sorted(invalid))
            )
    if keep.size == 0:
        raise DataError(f"{name}: no usable molecules — {report.summary()}")
    labels = labels.take(keep)
    _check_labels(labels, task, task_names, featurized.valid[keep], name)
    keys = featurized.molecule_keys[keep]
    first_rows = np.unique(keys, return_index=True)[1]
    report = replace(
        report, duplicates=int(keep.size - first_rows.size), duplicate_policy=duplicates
    )
    if duplicates != "keep" and report.duplicates:
        if duplicates == "mean" and task == "classification":
            raise DataError(
                f'{name}: duplicates = "mean" averages regression labels; for a classification '
                f'task set [dataset] duplicates = "first" or "keep"'
            )
        merged = np.sort(first_rows)
        mean = duplicates == "mean"
        labels = _mean_labels(labels, keys, merged) if mean else labels.take(merged)
        keep = keep[merged]
    matrix = _feature_matrix(featurized, keep, features)
    if permutation is not None:
        matrix = permute_columns(matrix, permutation)
    dataset = Dataset(
        features=matrix,
        labels=labels,
        task=task,
        task_names=task_names,
        groups=_first_appearance_ids(featurized.scaffold_keys[keep]),
        name=name,
        feature_names=feature_names(features),
        smiles=(
            ()
            if input_smiles is None
            else tuple(graph_smiles[int(row)] for row in featurized.valid[keep])
        ),
        scaffold_keys=featurized.scaffold_keys[keep],
    )
    return dataset, report


def _check_labels(
    labels: SparseMatrix,
    task: Objective,
    names: Sequence[str],
    rows: npt.NDArray[np.int64],
    source: str,
) -> None:
    """Classification labels must be 0 or 1: name the column (and a row) that is not."""
    if task != "classification":
        return
    bad = (labels.values != 0) & (labels.values != 1)
    if not bad.any():
        return
    columns = np.unique(labels.indices[bad])
    first = int(np.flatnonzero(bad)[0])
    row = int(rows[np.searchsorted(labels.indptr, first, side="right") - 1])
    listed = ", ".join(repr(names[c]) for c in columns[:5]) + (", …" if columns.size > 5 else "")
    raise DataError(
        f'{source}: task = "classification" needs labels 0 or 1, but label column(s) '
        f"{listed} hold other values ({int(bad.sum())} cells; first: data row {row + 1}); "
        f'set [dataset] task = "regression" or binarize the column(s)'
    )


def _mean_labels(
    labels: SparseMatrix, keys: npt.NDArray[np.int64], first_rows: npt.NDArray[np.intp]
) -> SparseMatrix:
    """One row per distinct key (in ``first_rows`` order): per task, the mean of the observed
    values of the rows sharing that key."""
    _, group = np.unique(keys, return_inverse=True)
    rank = np.empty(first_rows.size, np.int64)
    rank[np.argsort(group[first_rows])] = np.arange(first_rows.size)  # group id → output row
    out_row = rank[group][np.repeat(np.arange(keys.size), labels.row_lengths())]
    cell = out_row * labels.n_columns + labels.indices
    cells, inverse = np.unique(cell, return_inverse=True)
    sums = np.bincount(inverse, weights=labels.values.astype(np.float64))
    counts = np.bincount(inverse)
    rows_of = cells // labels.n_columns
    indptr = np.zeros(first_rows.size + 1, np.int64)
    np.cumsum(np.bincount(rows_of, minlength=first_rows.size), out=indptr[1:])
    return SparseMatrix(
        indptr,
        (cells % labels.n_columns).astype(np.int32),
        (sums / counts).astype(np.float32),
        labels.n_columns,
        fill=labels.fill,
    )


def _feature_matrix(
    featurized: Featurized, rows: npt.NDArray[np.integer], features: FeaturesConfig
) -> Matrix:
    """The model inputs of the valid molecules ``rows``: the fingerprint as CSR (descriptors,
    if any, appended as stored columns after it), or dense descriptors alone."""
    descriptors = featurized.descriptors[rows]
    if features.fingerprint != "morgan":
        return np.ascontiguousarray(descriptors, dtype=np.float32)
    fingerprints = featurized.fingerprints.take(rows)
    if not features.descriptors:
        return fingerprints
    width = descriptors.shape[1]
    fp_lengths = fingerprints.row_lengths()
    lengths = fp_lengths + width
    indptr = np.zeros(rows.size + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), np.int32)
    values = np.empty(int(indptr[-1]), np.float32)
    is_fp = np.ones(indices.size, bool)
    descriptor_at = (indptr[1:, None] - width + np.arange(width)).ravel()
    is_fp[descriptor_at] = False
    indices[is_fp] = fingerprints.indices
    values[is_fp] = fingerprints.values
    indices[descriptor_at] = np.tile(np.arange(width, dtype=np.int32) + features.n_bits, rows.size)
    values[descriptor_at] = descriptors.ravel()
    return SparseMatrix(indptr, indices, values, features.n_bits + width)


def permute_columns(matrix: Matrix, permutation: FingerprintPermutation) -> Matrix:
    """``permutation.apply`` for dense or CSR features (a CSR matrix maps its column indices)."""
    if not isinstance(matrix, SparseMatrix):
        return permutation.apply(matrix)
    if matrix.n_columns < permutation.n_bits:
        raise DataError(
            f"the fingerprint permutation needs at least {permutation.n_bits} fingerprint "
            f"columns, got {matrix.n_columns}"
        )
    destination = np.arange(matrix.n_columns, dtype=np.int32)
    destination[np.asarray(permutation.order)] = np.arange(permutation.n_bits, dtype=np.int32)
    return replace(matrix, indices=destination[matrix.indices])


def _first_appearance_ids(keys: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Equal non-zero keys share an id, each zero key (no scaffold) gets its own; ids count up
    in order of first appearance (as :func:`fedpharma.data.molecules.scaffold_groups`)."""
    keys = keys.copy()
    acyclic = keys == 0
    keys[acyclic] = -np.arange(1, int(acyclic.sum()) + 1)  # distinct; real keys are never ≤ -n
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inverse.ravel()]


def _featurized_file(
    cfg: DatasetConfig, path: Path, features: FeaturesConfig, sdf: bool
) -> Featurized:
    """The file featurized: from the feature cache when it holds this file and recipe."""
    from fedpharma.data import feature_cache
    from fedpharma.data.loading import read_csv_molecules, read_sdf_molecules

    reader = {
        "sdf": sdf,
        "smiles_column": None if sdf else cfg.smiles_column,
        "label_columns": list(cfg.label_columns),
    }
    if not cfg.cache:
        if sdf:
            return read_sdf_molecules(path, cfg.label_columns, features)
        return read_csv_molecules(path, cfg.smiles_column, cfg.label_columns, features)
    folder = Path(cfg.cache_dir) if cfg.cache_dir else feature_cache.default_cache_dir()
    key = feature_cache.cache_key(path, features, reader)
    if (cached := feature_cache.load(folder, key)) is not None:
        return cached
    with feature_cache.exclusive(folder, key):  # one process featurizes, the others wait
        if (cached := feature_cache.load(folder, key)) is not None:
            return cached
        if sdf:
            featurized = read_sdf_molecules(path, cfg.label_columns, features)
        else:
            featurized = read_csv_molecules(path, cfg.smiles_column, cfg.label_columns, features)
        feature_cache.save(folder, key, featurized)
    return featurized


def rdkit_freewilson_dir() -> str:
    """Where RDKit keeps the ChEMBL2321810 series (``Contrib/FreeWilson/data``)."""
    from rdkit import RDConfig

    return os.path.join(RDConfig.RDContribDir, "FreeWilson", "data")


def _load_chembl2321810(
    features: FeaturesConfig, permutation: FingerprintPermutation | None
) -> tuple[Dataset, MoleculeReport]:
    """SMILES from ``CHEMBL2321810.smi`` (SMILES, id), pIC50 from ``CHEMBL2321810_act.csv``."""
    from fedpharma.data.loading import LabelCollector, featurize_smiles_list

    folder = rdkit_freewilson_dir()
    smiles_file = os.path.join(folder, "CHEMBL2321810.smi")
    activity_file = os.path.join(folder, "CHEMBL2321810_act.csv")
    for required in (smiles_file, activity_file):
        if not os.path.exists(required):
            raise DataError(
                f"bundled dataset chembl2321810 needs RDKit's file {required}, which is missing "
                f"(an RDKit installation without Contrib data?)"
            )
    with open(activity_file, encoding="utf-8", newline="") as handle:
        activity = {row["Name"].strip(): row["Act"].strip() for row in csv.DictReader(handle)}
    smiles: list[str] = []
    label_cells: list[str] = []
    with open(smiles_file, encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if not fields:
                continue
            smiles.append(fields[0])
            label_cells.append(activity.get(fields[1], "") if len(fields) > 1 else "")
    labels = LabelCollector(["pIC50"], smiles_file)
    for row, cell in enumerate(label_cells):
        labels.add(row, [cell])
    return _molecule_dataset(
        featurize_smiles_list(smiles, labels.matrix(len(smiles)), features),
        "regression",
        ("pIC50",),
        features,
        "chembl2321810",
        permutation,
    )


def _load_breast_cancer() -> Dataset:
    """Wisconsin breast cancer; label 1 = malignant (the positive, clinically relevant class).

    Features are ``log1p`` of the raw measurements: all are non-negative and several (areas,
    perimeters) span orders of magnitude. A fixed transform needs no statistics, so it cannot
    leak anything between simulated sites, yet brings the columns to comparable ranges.
    """
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    raw = np.asarray(bunch.data, dtype=np.float64)
    malignant = (np.asarray(bunch.target) == 0).astype(np.float32)
    return Dataset(
        features=np.log1p(raw).astype(np.float32),
        labels=malignant[:, None],
        task="classification",
        task_names=("malignant",),
        groups=np.zeros(raw.shape[0], dtype=np.int64),
        name="breast-cancer",
        feature_names=tuple(f"log1p({n})" for n in bunch.feature_names),
    )
