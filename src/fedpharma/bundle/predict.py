"""A loaded model bundle, and ``fedpharma predict``: new molecules through an exported model.

:meth:`Model.load` refuses, with one :class:`~fedpharma.core.errors.DataError`, a bundle whose
preprocessing this installation cannot reproduce. The policy:

- the manifest's recipe must hash to its ``recipe_digest``, and must equal the recipe rebuilt
  here from the bundle's own ``[features]`` (so a bundle claiming other fingerprint settings than
  its recipe's, a newer standardization or descriptor constants, is refused, naming each
  differing setting);
- the RDKit version alone may differ if the public reference molecules' features, computed here,
  hash to the bundle's ``reference_digest``: the same check a coordinator makes at join;
- a fingerprint permuted by the partners' secret key is refused (the key is not in the bundle).

Molecules are standardized and featurized exactly as the sites did. Invalid molecules get no
prediction and are reported by 1-based row and reason, never by structure.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedpharma.core import serde
from fedpharma.core.config import FeaturesConfig, ModelConfig, TrainingConfig
from fedpharma.core.dataset import Dataset
from fedpharma.core.errors import DataError
from fedpharma.core.params import Parameters
from fedpharma.data.preprocessing import PreprocessingRecipe, canonical_json, reference_digest
from fedpharma.data.tabular import read_csv_columns
from fedpharma.models.bundle import ModelManifest, read_bundle, write_bundle

SMILES_COLUMN = "smiles"


@dataclass(frozen=True)
class Predictions:
    """One row per input molecule: ``values[i]`` (NaN where the molecule is invalid), and the
    invalid ones' 1-based ``row`` → reason."""

    task_names: tuple[str, ...]
    values: npt.NDArray[np.float64]
    invalid: Mapping[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def write_csv(self, path: Path) -> Path:
        """``row`` (1-based input row), one column per task, ``status`` (``ok`` or why not)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", *self.task_names, "status"])
            for i, values in enumerate(self.values, start=1):
                reason = self.invalid.get(i)
                cells = [""] * len(self.task_names) if reason else [repr(float(v)) for v in values]
                writer.writerow([i, *cells, reason or "ok"])
        return path


@dataclass(frozen=True)
class Model:
    """An exported model: its manifest and weights, ready to predict."""

    manifest: ModelManifest
    parameters: Parameters

    @classmethod
    def load(cls, folder: str | Path) -> Model:
        """Read a bundle and check that its preprocessing is reproducible here."""
        manifest, params = read_bundle(Path(folder))
        check_reproducible(manifest)
        return cls(manifest, params)

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.manifest.task_names

    def export(self, folder: str | Path) -> Path:
        """Write this model as a bundle into ``folder``."""
        return write_bundle(Path(folder), self.manifest, self.parameters)

    def predict(self, molecules: Any, *, smiles_column: str = SMILES_COLUMN) -> Predictions:
        """Predict SMILES: a sequence of strings, a CSV/SDF file path, or a table (a mapping or
        a data frame) with a ``smiles_column``."""
        if isinstance(molecules, str | Path) and _is_file_name(str(molecules)):
            return self.predict_file(Path(molecules), smiles_column=smiles_column)
        if isinstance(molecules, str):
            return self.predict_smiles([molecules])
        return self.predict_smiles(_smiles_of(molecules, smiles_column))

    def predict_file(self, path: Path, *, smiles_column: str = SMILES_COLUMN) -> Predictions:
        """Predict every molecule of a CSV (``smiles_column``) or SDF file."""
        from fedpharma.data.molecules import parse_sdf, parse_smiles

        if path.name.lower().endswith((".sdf", ".sdf.gz")):
            if not path.is_file():
                raise DataError(f"molecule file {path} does not exist")
            parsed, _ = parse_sdf(path)
        else:
            header, rows = read_csv_columns(path)
            if smiles_column not in header:
                raise DataError(
                    f"{path} has no column {smiles_column!r} (columns: {', '.join(header)}); "
                    "name the SMILES column with --smiles-column"
                )
            at = header.index(smiles_column)
            parsed = parse_smiles([row[at] for row in rows])
        return self._predict_parsed(parsed)

    def predict_smiles(self, smiles: Sequence[str | None]) -> Predictions:
        from fedpharma.data.molecules import parse_smiles

        return self._predict_parsed(parse_smiles(list(smiles)))

    def predict_features(self, features: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
        """Model outputs for an already featurized matrix (rows × the bundle's inputs)."""
        from fedpharma.models.trainer import TorchTrainer

        arch, manifest = self.manifest.architecture, self.manifest
        matrix = np.asarray(features, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != arch.n_features:
            raise DataError(
                f"the model takes {arch.n_features} features per row, got shape {matrix.shape}"
            )
        trainer = TorchTrainer(
            ModelConfig(kind=arch.kind, hidden=arch.hidden, dropout=arch.dropout),
            TrainingConfig(),
            manifest.task,
            arch.n_features,
            arch.n_tasks,
        )
        n = matrix.shape[0]
        data = Dataset(
            features=matrix,
            labels=np.full((n, arch.n_tasks), np.nan, dtype=np.float32),
            task=manifest.task,
            task_names=manifest.task_names,
            groups=np.zeros(n, dtype=np.int64),
        )
        return trainer.predict(self.parameters, data).astype(np.float64)

    def _predict_parsed(self, parsed: Any) -> Predictions:
        from fedpharma.data.molecules import featurize

        report = parsed.report
        values = np.full((report.n_input, self.manifest.architecture.n_tasks), np.nan)
        if parsed.mols:
            matrix = featurize(parsed.mols, features_of(self.manifest))
            values[parsed.rows] = self.predict_features(matrix)
        invalid = {int(row) + 1: str(reason) for row, reason in report.invalid}
        return Predictions(self.manifest.task_names, values, invalid)


def features_of(manifest: ModelManifest) -> FeaturesConfig:
    """The ``[features]`` the bundle's model was trained with."""
    features, problems = serde.from_dict(
        FeaturesConfig, dict(manifest.preprocessing.features), "[preprocessing.features]"
    )
    if features is None or problems:
        raise DataError("model bundle: " + "; ".join(problems or ["no [features]"]))
    return features


def check_reproducible(manifest: ModelManifest) -> None:
    """Refuse a bundle whose preprocessing cannot be reproduced here (see the module doc)."""
    pre = manifest.preprocessing
    if pre.kind != "molecules":
        raise DataError(
            "this bundle holds a tabular model; `fedpharma predict` featurizes molecules only"
        )
    stored = dict(pre.recipe)
    text = canonical_json(stored).encode("ascii")
    if hashlib.sha256(text).hexdigest() != pre.recipe_digest:
        raise DataError(
            "model bundle: the preprocessing recipe does not match its digest (the manifest was "
            "edited or damaged); export the model again"
        )
    features = features_of(manifest)
    if features.permutation_key_id is not None:
        raise DataError(
            "this model's fingerprint bits are permuted by the partners' secret key "
            f"(id {features.permutation_key_id}), which a bundle never holds; predict at a site "
            "that holds the key"
        )
    local = PreprocessingRecipe.from_features(features).to_dict()
    differing = sorted(k for k in stored.keys() | local.keys() if stored.get(k) != local.get(k))
    if differing == ["rdkit_version"] and reference_digest(features) == pre.reference_digest:
        return  # another RDKit build that featurizes the reference molecules identically
    if differing:
        settings = ", ".join(f"{k} {stored.get(k)!r} (here {local.get(k)!r})" for k in differing)
        raise DataError(
            f"cannot reproduce this model's preprocessing here: {settings}"
            + (
                "; the public reference molecules featurize differently with this RDKit"
                if "rdkit_version" in differing
                else ""
            )
        )


def _is_file_name(text: str) -> bool:
    return text.lower().endswith((".csv", ".csv.gz", ".sdf", ".sdf.gz"))


def _smiles_of(table: Any, column: str) -> list[str | None]:
    """SMILES from a sequence of strings, a mapping of columns, or a data frame."""
    if isinstance(table, Mapping) or hasattr(table, "columns"):
        if column not in (table.keys() if isinstance(table, Mapping) else table.columns):
            raise DataError(f"the table has no column {column!r}; pass smiles_column=")
        cells: Iterable[Any] = table[column]
    else:
        cells = table
    out: list[str | None] = []
    for cell in cells:
        if isinstance(cell, float) and cell != cell:  # a data frame's missing cell (NaN)
            cell = None
        if cell is not None and not isinstance(cell, str):
            raise DataError(f"SMILES must be strings, got {type(cell).__name__}")
        out.append(cell)
    return out
