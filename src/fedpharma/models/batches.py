"""A site's data as tensors on its device, cut into minibatches without densifying the whole.

Dense features stay one tensor; CSR features (:class:`~fedpharma.core.dataset.SparseMatrix`) stay
CSR on the device and a minibatch is gathered as an ``nn.EmbeddingBag`` input
(:class:`SparseBatch`: the stored entries' columns and values, and each row's offset). Sparse
labels stay (row, task, value) triples and a minibatch's labels are its triples
(:class:`LabelTriples`), which the masked loss reads directly.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from fedpharma.core.dataset import Matrix, SparseMatrix


class SparseBatch(NamedTuple):
    """Rows of a CSR matrix as ``embedding_bag`` input: row ``i``'s entries are
    ``indices[offsets[i]:offsets[i+1]]`` with ``values`` as per-sample weights."""

    indices: torch.Tensor
    offsets: torch.Tensor
    values: torch.Tensor
    n_columns: int

    def dense(self) -> torch.Tensor:
        """The batch as a dense float32 (rows × columns) tensor (a minibatch only)."""
        rows = self.offsets.numel()
        lengths = torch.diff(self.offsets, append=self.offsets.new_tensor([self.indices.numel()]))
        row_of = torch.repeat_interleave(torch.arange(rows, device=self.indices.device), lengths)
        out = torch.zeros(rows, self.n_columns, device=self.values.device)
        out.index_put_((row_of, self.indices), self.values, accumulate=True)
        return out


class LabelTriples(NamedTuple):
    """A minibatch's observed labels: ``values[k]`` is the label of batch row ``rows[k]`` for task
    ``tasks[k]``."""

    rows: torch.Tensor
    tasks: torch.Tensor
    values: torch.Tensor


def _tensor(
    array: npt.NDArray[np.generic], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``array`` as a tensor on ``device``, sharing memory on the CPU when the dtype matches.

    Torch warns when it wraps a read-only array because *writing* through the tensor would be
    undefined; these tensors are only ever read (gathered into minibatches).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(device=device, dtype=dtype)


class _Rows:
    """CSR rows on a device; :meth:`gather` returns the rows' entries and offsets."""

    def __init__(self, matrix: SparseMatrix, device: torch.device) -> None:
        self.indptr = _tensor(matrix.indptr, torch.int64, device)
        self.indices = _tensor(matrix.indices, torch.int32, device)  # shared on the CPU
        self.values = _tensor(matrix.values, torch.float32, device)
        self.lengths = torch.diff(self.indptr)
        self.n_columns = matrix.n_columns

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(positions of the rows' entries in order, row lengths, offsets of each row)."""
        lengths = self.lengths[rows]
        offsets = torch.cumsum(lengths, 0) - lengths
        total = int(offsets[-1] + lengths[-1]) if rows.numel() else 0
        shift = torch.repeat_interleave(self.indptr[rows] - offsets, lengths, output_size=total)
        positions = shift + torch.arange(total, device=rows.device)
        return positions, lengths, offsets


class TensorData:
    """Features and labels of one dataset on ``device``, and its minibatches."""

    def __init__(self, features: Matrix, labels: Matrix, device: torch.device) -> None:
        self.device = device
        self.n_rows = int(features.shape[0])
        self._dense_features: torch.Tensor | None = None
        self._sparse_features: _Rows | None = None
        if isinstance(features, SparseMatrix):
            self._sparse_features = _Rows(features, device)
        else:
            self._dense_features = _tensor(features, torch.float32, device)
        self._dense_labels: torch.Tensor | None = None
        self._sparse_labels: _Rows | None = None
        if isinstance(labels, SparseMatrix):
            self._sparse_labels = _Rows(labels, device)
            self.observed_per_row = self._sparse_labels.lengths
        else:
            self._dense_labels = _tensor(labels, torch.float32, device)
            self.observed_per_row = (~torch.isnan(self._dense_labels)).sum(dim=1)

    def features(self, rows: torch.Tensor) -> torch.Tensor | SparseBatch:
        if self._dense_features is not None:
            return self._dense_features[rows]
        assert self._sparse_features is not None
        csr = self._sparse_features
        positions, _, offsets = csr.gather(rows)
        columns = csr.indices[positions].long()
        return SparseBatch(columns, offsets, csr.values[positions], csr.n_columns)

    def dense_features(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows' features as a dense (rows × columns) tensor."""
        batch = self.features(rows)
        return batch.dense() if isinstance(batch, SparseBatch) else batch

    def dense_labels(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows' labels as a dense (rows × tasks) tensor, NaN where missing."""
        batch = self.labels(rows)
        if not isinstance(batch, LabelTriples):
            return batch
        assert self._sparse_labels is not None
        shape = (rows.numel(), self._sparse_labels.n_columns)
        out = torch.full(shape, math.nan, device=self.device)
        out[batch.rows, batch.tasks] = batch.values
        return out

    def labels(self, rows: torch.Tensor) -> torch.Tensor | LabelTriples:
        if self._dense_labels is not None:
            return self._dense_labels[rows]
        assert self._sparse_labels is not None
        csr = self._sparse_labels
        positions, lengths, _ = csr.gather(rows)
        batch_rows = torch.repeat_interleave(
            torch.arange(rows.numel(), device=rows.device), lengths, output_size=positions.numel()
        )
        return LabelTriples(batch_rows, csr.indices[positions].long(), csr.values[positions])
