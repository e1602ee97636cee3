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
import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from fedpharma.core.config import DatasetConfig, FeaturesConfig
from fedpharma.core.dataset import Dataset, Objective
from fedpharma.core.errors import DataError
from fedpharma.data.schema import check_roles, load_schema, schema_beside
from fedpharma.data.tabular import (
    TabularSchema,
    infer_schema,
    read_csv_columns,
    read_tabular,
    require_columns,
)

if TYPE_CHECKING:
    from fedpharma.data.molecules import MoleculeReport, ParsedMolecules
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
) -> tuple[Dataset, MoleculeReport | None]:
    """Load the dataset ``cfg`` names; the report is ``None`` for tabular data.

    Molecule features are permuted by ``permutation`` (the partners' secret fingerprint-bit
    order, :mod:`fedpharma.data.permutation`) right after featurization, so every site trains on
    identically permuted inputs.
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
    if path.name.lower().endswith((".sdf", ".sdf.gz")):
        return _load_sdf(path, cfg.label_columns, task, features, permutation)
    return _load_molecule_csv(
        path, cfg.smiles_column, cfg.label_columns, task, features, permutation
    )


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


def _parse_labels(
    columns: Sequence[Sequence[str]], names: Sequence[str], source: str
) -> npt.NDArray[np.float32]:
    """Label cells (one sequence per label column) as floats; empty cells → NaN."""
    out = np.full((len(columns[0]) if columns else 0, len(names)), np.nan, dtype=np.float32)
    for j, (name, cells) in enumerate(zip(names, columns, strict=True)):
        bad: list[int] = []
        for i, text in enumerate(cells):
            if not text.strip():
                continue
            try:
                value = float(text)
            except ValueError:
                bad.append(i)
                continue
            if math.isinf(value):
                bad.append(i)
            else:
                out[i, j] = value
        if bad:
            raise DataError(
                f"{source}: label column {name!r} has {len(bad)} non-numeric or infinite "
                f"values (first: data row {bad[0]})"
            )
    return out


def _molecule_dataset(
    parsed: ParsedMolecules,
    labels: npt.NDArray[np.float32],
    task: Objective,
    task_names: tuple[str, ...],
    features: FeaturesConfig,
    name: str,
    permutation: FingerprintPermutation | None,
) -> tuple[Dataset, MoleculeReport]:
    """Keep valid molecules with at least one label; featurize (and permute); scaffold groups;
    report."""
    from fedpharma.data.molecules import feature_names, featurize, scaffold_groups

    labels = labels[parsed.rows]
    has_label = np.isfinite(labels).any(axis=1)
    report = replace(parsed.report, unlabelled=tuple(int(r) for r in parsed.rows[~has_label]))
    mols = [parsed.mols[i] for i in np.flatnonzero(has_label)]
    if not mols:
        raise DataError(f"{name}: no usable molecules — {report.summary()}")
    matrix = featurize(mols, features)
    dataset = Dataset(
        features=matrix if permutation is None else permutation.apply(matrix),
        labels=labels[has_label],
        task=task,
        task_names=task_names,
        groups=scaffold_groups(mols),
        name=name,
        feature_names=feature_names(features),
    )
    return dataset, report


def _load_molecule_csv(
    path: Path,
    smiles_column: str,
    label_columns: Sequence[str],
    task: Objective,
    features: FeaturesConfig,
    permutation: FingerprintPermutation | None,
) -> tuple[Dataset, MoleculeReport]:
    from fedpharma.data.molecules import parse_smiles

    header, rows = read_csv_columns(path)
    require_columns(header, [smiles_column, *label_columns], str(path))
    smiles = [row[header.index(smiles_column)] for row in rows]
    label_cells = [[row[header.index(n)] for row in rows] for n in label_columns]
    labels = _parse_labels(label_cells, label_columns, str(path))
    parsed = parse_smiles(smiles)
    return _molecule_dataset(
        parsed, labels, task, tuple(label_columns), features, _stem(path), permutation
    )


def _load_sdf(
    path: Path,
    label_columns: Sequence[str],
    task: Objective,
    features: FeaturesConfig,
    permutation: FingerprintPermutation | None,
) -> tuple[Dataset, MoleculeReport]:
    """Labels come from SD properties; a property absent from a record is a missing label."""
    from fedpharma.data.molecules import parse_sdf

    parsed, properties = parse_sdf(path)
    seen = {key for record in properties for key in record}
    missing = [n for n in label_columns if n not in seen]
    if missing:
        raise DataError(
            f"{path} lacks SD properties: {', '.join(missing)}; "
            f"properties present: {', '.join(sorted(seen)) or 'none'}"
        )
    label_cells = [[record.get(n, "") for record in properties] for n in label_columns]
    valid_labels = _parse_labels(label_cells, label_columns, str(path))
    labels = np.full((parsed.report.n_input, len(label_columns)), np.nan, dtype=np.float32)
    labels[parsed.rows] = valid_labels
    return _molecule_dataset(
        parsed, labels, task, tuple(label_columns), features, _stem(path), permutation
    )


def rdkit_freewilson_dir() -> str:
    """Where RDKit keeps the ChEMBL2321810 series (``Contrib/FreeWilson/data``)."""
    from rdkit import RDConfig

    return os.path.join(RDConfig.RDContribDir, "FreeWilson", "data")


def _load_chembl2321810(
    features: FeaturesConfig, permutation: FingerprintPermutation | None
) -> tuple[Dataset, MoleculeReport]:
    """SMILES from ``CHEMBL2321810.smi`` (SMILES, id), pIC50 from ``CHEMBL2321810_act.csv``."""
    from fedpharma.data.molecules import parse_smiles

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
    labels = _parse_labels([label_cells], ["pIC50"], smiles_file)
    return _molecule_dataset(
        parse_smiles(smiles),
        labels,
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
