"""The in-memory form every data source is turned into: features, labels, groups.

Features and labels are either dense float32 matrices or :class:`SparseMatrix` (CSR) ones: folded
fingerprint counts are ~2 % non-zero and multitask assay labels under 1 % present, so a large
partner's data is held sparse and only a minibatch at a time is ever made dense.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

Objective = Literal["regression", "classification"]


@dataclass(frozen=True)
class SparseMatrix:
    """A row-compressed (CSR) matrix: row ``i`` holds ``values[indptr[i]:indptr[i+1]]`` at the
    columns ``indices[indptr[i]:indptr[i+1]]``; every other entry is the fill value.

    Features fill with 0 (absent fingerprint bits); labels fill with NaN (a (row, task) pair
    nobody measured), so a sparse label matrix is the list of (row, task, value) triples.
    ``values`` may be a small integer type (fingerprint counts as ``uint16``); :meth:`dense`
    returns float32.
    """

    indptr: npt.NDArray[np.int64]
    indices: npt.NDArray[np.int32]
    values: npt.NDArray[np.generic]
    n_columns: int
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.indptr.ndim != 1 or self.indptr.size < 1 or self.indptr[0] != 0:
            raise ValueError("indptr must be 1-D and start at 0")
        if self.indices.shape != self.values.shape or self.indices.size != self.indptr[-1]:
            raise ValueError("indices and values must both hold indptr[-1] entries")
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= self.n_columns):
            raise ValueError(f"column indices must lie in [0, {self.n_columns})")

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.indptr.size - 1), self.n_columns)

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def row_lengths(self) -> npt.NDArray[np.int64]:
        return np.diff(self.indptr)

    def take(self, rows: npt.NDArray[np.integer]) -> SparseMatrix:
        """The rows ``rows`` (any order, repeats allowed), as a new matrix."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # position k of the output comes from starts[row of k] + (k − indptr[row of k])
        positions = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return SparseMatrix(
            indptr, self.indices[positions], self.values[positions], self.n_columns, self.fill
        )

    def dense(self, rows: npt.NDArray[np.integer] | None = None) -> npt.NDArray[np.float32]:
        """A dense float32 copy of ``rows`` (all rows if ``None``): for minibatches and small
        (test) sets only."""
        part = self if rows is None else self.take(rows)
        out = np.full(part.shape, self.fill, dtype=np.float32)
        row_of = np.repeat(np.arange(part.shape[0]), part.row_lengths())
        out[row_of, part.indices] = part.values
        return out

    @staticmethod
    def concatenate(parts: Sequence[SparseMatrix]) -> SparseMatrix:
        """The rows of ``parts`` one after another (same columns and fill)."""
        if not parts or len({(p.n_columns, p.fill) for p in parts}) != 1:
            raise ValueError("concatenate needs matrices with the same columns and fill")
        offsets = np.cumsum([0] + [p.nnz for p in parts[:-1]])
        shifted = [p.indptr[1:] + o for p, o in zip(parts, offsets, strict=True)]
        indptr = np.concatenate([np.zeros(1, np.int64), *shifted])
        return SparseMatrix(
            indptr,
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.values for p in parts]),
            parts[0].n_columns,
            parts[0].fill,
        )


Matrix: TypeAlias = npt.NDArray[np.float32] | SparseMatrix
"""A dataset's features or labels: dense, or CSR (:class:`SparseMatrix`)."""


def take_rows(matrix: Matrix, rows: npt.NDArray[np.integer]) -> Matrix:
    """The rows ``rows`` of a dense or sparse matrix."""
    return matrix.take(rows) if isinstance(matrix, SparseMatrix) else matrix[rows]


def concatenate_rows(parts: Sequence[Matrix]) -> Matrix:
    """The rows of ``parts`` one after another (all dense or all sparse)."""
    sparse = [p for p in parts if isinstance(p, SparseMatrix)]
    if sparse and len(sparse) != len(parts):
        raise ValueError("cannot concatenate dense and sparse matrices")
    if sparse:
        return SparseMatrix.concatenate(sparse)
    return np.concatenate([p for p in parts if not isinstance(p, SparseMatrix)])


def dense(matrix: Matrix) -> npt.NDArray[np.float32]:
    """``matrix`` as a dense float32 array (a copy only when sparse)."""
    return matrix.dense() if isinstance(matrix, SparseMatrix) else matrix


@dataclass(frozen=True)
class Dataset:
    """Model-ready arrays for one site (or for a whole dataset before partitioning).

    ``labels`` has one column per task; a missing label (multitask assay data is sparse) is NaN
    in a dense matrix and simply absent from a sparse one. ``groups`` assigns each row a group
    id: its Bemis–Murcko scaffold (molecules) or its site (tabular data with a site column);
    partitioning and scaffold splits keep groups whole.
    """

    features: Matrix
    labels: Matrix
    task: Objective
    task_names: tuple[str, ...]
    groups: npt.NDArray[np.int64]
    name: str = "dataset"
    feature_names: tuple[str, ...] = field(default=(), repr=False)
    # What each group id stands for, where the data names it (a tabular site column's values).
    group_names: tuple[str, ...] = field(default=(), repr=False)
    # Each row's SMILES, for a model plugin that builds its own inputs from the structures
    # (a molecular graph network); empty otherwise. Never logged, never sent.
    smiles: tuple[str, ...] = field(default=(), repr=False)
    # Each row's scaffold key (:func:`fedpharma.data.chunk_features.key64` of its canonical
    # Murcko scaffold SMILES, 0: acyclic), where the rows are molecules; empty otherwise. Unlike
    # ``groups``, equal at every site for the same scaffold. Never logged, never sent.
    scaffold_keys: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(0, np.int64), repr=False
    )

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if self.features.ndim != 2 or self.labels.ndim != 2:
            raise ValueError("features and labels must be 2-D (rows × columns)")
        if self.labels.shape != (n, len(self.task_names)):
            raise ValueError(
                f"labels have shape {self.labels.shape}, expected ({n}, {len(self.task_names)})"
            )
        if isinstance(self.labels, SparseMatrix) and not np.isnan(self.labels.fill):
            raise ValueError("sparse labels must fill with NaN (a missing label)")
        if self.groups.shape != (n,):
            raise ValueError(f"groups have shape {self.groups.shape}, expected ({n},)")
        if self.smiles and len(self.smiles) != n:
            raise ValueError(f"{len(self.smiles)} SMILES for {n} rows")
        if self.scaffold_keys.size and self.scaffold_keys.shape != (n,):
            raise ValueError(f"{self.scaffold_keys.size} scaffold keys for {n} rows")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    def dense_labels(self) -> npt.NDArray[np.float32]:
        """Labels as a dense n×t float32 matrix with NaN where missing (for evaluation sets)."""
        return dense(self.labels)

    def subset(self, rows: npt.NDArray[np.integer], name: str | None = None) -> Dataset:
        return Dataset(
            features=take_rows(self.features, rows),
            labels=take_rows(self.labels, rows),
            task=self.task,
            task_names=self.task_names,
            groups=self.groups[rows],
            name=name or self.name,
            feature_names=self.feature_names,
            group_names=self.group_names,
            smiles=tuple(self.smiles[int(i)] for i in rows) if self.smiles else (),
            scaffold_keys=(
                self.scaffold_keys[rows] if self.scaffold_keys.size else np.zeros(0, np.int64)
            ),
        )


@dataclass(frozen=True)
class SiteData:
    """What one site holds: its training and its held-out test data, and optionally a
    validation fold (held out of training, for model selection)."""

    train: Dataset
    test: Dataset
    validation: Dataset | None = None


@dataclass(frozen=True)
class TargetScaling:
    """Regression targets standardized per task for training: the model learns
    ``(y - center) / scale`` and its outputs are mapped back, ``center + scale * output``, so
    every prediction and metric is in the labels' own units. ``center`` and ``scale`` are the
    consortium's pooled label mean and standard deviation
    (:class:`~fedpharma.data.federated_preprocessing.FittedPreprocessing`)."""

    center: tuple[float, ...]
    scale: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.center) != len(self.scale) or not self.center:
            raise ValueError("target scaling needs one center and one scale per task")
        values = np.asarray([*self.center, *self.scale], dtype=np.float64)
        if not np.isfinite(values).all() or min(self.scale) <= 0:
            raise ValueError("target scaling needs finite centers and positive scales")

    def standardize(self, labels: Matrix) -> Matrix:
        """``labels`` in standardized units (missing labels stay missing)."""
        center, scale = np.asarray(self.center), np.asarray(self.scale)
        if labels.shape[1] != len(center):
            raise ValueError(f"target scaling covers {len(center)} tasks, not {labels.shape[1]}")
        if isinstance(labels, SparseMatrix):
            values = (labels.values.astype(np.float64) - center[labels.indices]) / scale[
                labels.indices
            ]
            return SparseMatrix(
                labels.indptr,
                labels.indices,
                values.astype(labels.values.dtype),
                labels.n_columns,
                labels.fill,
            )
        standardized: npt.NDArray[np.float32] = ((labels - center) / scale).astype(np.float32)
        return standardized

    def restore(self, outputs: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Model outputs in standardized units → values in label units."""
        restored = np.asarray(self.center) + np.asarray(self.scale) * outputs.astype(np.float64)
        mapped: npt.NDArray[np.float32] = restored.astype(np.float32)
        return mapped
