"""Streaming molecule files into sparse features: linear readers, parallel chunked featurization.

A partner's file can hold millions of molecules and thousands of label columns. The readers here
stream it once (each row costs one pass over its cells, so reading is linear in rows × label
columns), hand chunks of :data:`CHUNK_ROWS` molecules to worker processes
(:mod:`fedpharma.data.chunk_features`) and collect their sparse results in input order, so the
result does not depend on the number of workers and no more than a few chunks of RDKit molecules
exist at any time. Labels stay (row, task, value) triples. The whole result is a
:class:`Featurized`, what :mod:`fedpharma.data.feature_cache` stores.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import math
import multiprocessing
import operator
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fedpharma.core.config import FeaturesConfig
from fedpharma.core.dataset import SparseMatrix
from fedpharma.core.errors import DataError, FedPharmaError

if TYPE_CHECKING:
    from fedpharma.data.chunk_features import ChunkFeatures, FeatureSpec

CHUNK_ROWS = 1000
MIN_PARALLEL_CHUNKS = 8
"""Molecules per worker job: large enough to amortize the hand-off, small enough to bound the
RDKit molecules alive at once (a few chunks per worker)."""

_IN_FLIGHT_PER_WORKER = 2


@dataclass(frozen=True)
class Featurized:
    """A molecule file after parsing and featurization, before any row is dropped or merged.

    ``valid`` are the 0-based input rows of valid molecules; ``fingerprints`` (CSR, counts or
    bits), ``descriptors``, ``scaffold_keys`` (0: acyclic) and ``molecule_keys`` (canonical
    SMILES) are aligned with it. ``labels`` has one row per *input* row (NaN fill: missing).
    """

    n_input: int
    valid: npt.NDArray[np.int64]
    invalid_rows: npt.NDArray[np.int64]
    invalid_codes: npt.NDArray[np.int8]
    salts_stripped: int
    fingerprints: SparseMatrix
    descriptors: npt.NDArray[np.float32]
    scaffold_keys: npt.NDArray[np.int64]
    molecule_keys: npt.NDArray[np.int64]
    labels: SparseMatrix


def worker_count(n_chunks: int) -> int:
    """Worker processes for ``n_chunks`` jobs: one per available core, at most one per chunk;
    none (work in this process) below :data:`MIN_PARALLEL_CHUNKS` chunks (spawning a worker
    costs more than featurizing a few thousand molecules), on a single core, or inside a
    daemonic process (a simulation backend's worker, which may not have children)."""
    if n_chunks < MIN_PARALLEL_CHUNKS or multiprocessing.current_process().daemon:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    workers = min(cores, n_chunks)
    return workers if workers > 1 else 0


def feature_spec(features: FeaturesConfig) -> FeatureSpec:
    from fedpharma.data import molecules
    from fedpharma.data.chunk_features import FeatureSpec

    stats = molecules.reference_descriptor_statistics() if features.descriptors else None
    return FeatureSpec(
        fingerprint=features.fingerprint,
        radius=features.radius,
        n_bits=features.n_bits,
        counts=features.counts,
        descriptors=features.descriptors,
        center=None if stats is None else np.asarray(stats.center),
        scale=None if stats is None else np.asarray(stats.scale),
    )


Job = tuple[Callable[..., "ChunkFeatures"], tuple[Any, ...]]


def run_jobs(jobs: Iterator[Job], estimated_chunks: int) -> Iterator[ChunkFeatures]:
    """Each job's result, in job order; in worker processes when there is more than one chunk.

    Workers are spawned (not forked: the parent may hold torch's threads) and at most
    :data:`_IN_FLIGHT_PER_WORKER` jobs per worker are queued, so reading never runs far ahead.
    """
    workers = worker_count(estimated_chunks)
    if workers == 0:
        for function, args in jobs:
            yield function(*args)
        return
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            pending: deque[Future[ChunkFeatures]] = deque()
            for function, args in jobs:
                pending.append(pool.submit(function, *args))
                if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    except BrokenProcessPool as exc:
        raise FedPharmaError(
            "a featurization worker process ended abruptly. Large files are featurized in "
            "spawned worker processes, which import the calling script: guard a script's entry "
            'point with `if __name__ == "__main__":`'
        ) from exc


def open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


class LabelCollector:
    """Label cells → (row, task, value) triples; remembers bad cells per column."""

    def __init__(self, names: Sequence[str], source: str) -> None:
        self.names = tuple(names)
        self.source = source
        self.rows: list[int] = []
        self.tasks: list[int] = []
        self.values: list[float] = []
        self.bad: dict[int, list[int]] = {}

    def add(self, row: int, cells: Sequence[str]) -> None:
        """One row's label cells (one per label column, in order)."""
        for task in itertools.compress(range(len(cells)), cells):  # the non-empty cells
            if not (text := cells[task].strip()):
                continue
            try:
                value = float(text)
            except ValueError:
                value = math.inf
            if math.isinf(value):
                self.bad.setdefault(task, []).append(row)
                continue
            self.rows.append(row)
            self.tasks.append(task)
            self.values.append(value)

    def matrix(self, n_rows: int) -> SparseMatrix:
        """The labels as a CSR matrix over ``n_rows`` input rows; raise on any bad cell."""
        if self.bad:
            task, rows = min(self.bad.items())
            raise DataError(
                f"{self.source}: label column {self.names[task]!r} has {len(rows)} non-numeric "
                f"or infinite values (first: data row {rows[0] + 1}); make every label cell a "
                f"number or leave it empty"
            )
        counts = np.bincount(np.asarray(self.rows, np.int64), minlength=n_rows)
        indptr = np.zeros(n_rows + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        return SparseMatrix(  # rows arrive in order, so the triples are already row-sorted
            indptr,
            np.asarray(self.tasks, np.int32),
            np.asarray(self.values, np.float32),
            len(self.names),
            fill=math.nan,
        )


def read_csv_molecules(
    path: Path, smiles_column: str, label_columns: Sequence[str], features: FeaturesConfig
) -> Featurized:
    """Stream a molecule CSV (``.csv``/``.csv.gz``): SMILES to workers, labels to triples."""
    from fedpharma.data.chunk_features import featurize_smiles
    from fedpharma.data.tabular import require_columns

    spec = feature_spec(features)
    labels = LabelCollector(label_columns, str(path))
    short: list[int] = []
    counter = [0]
    try:
        handle = open_text(path)
    except OSError as exc:
        raise DataError(f"cannot read CSV file {path}: {exc.strerror or exc}") from exc

    def jobs(reader: Iterator[list[str]], header: list[str]) -> Iterator[Job]:
        position = {name: i for i, name in enumerate(header)}
        smiles_at = position[smiles_column]
        label_at = [position[name] for name in label_columns]
        pick = operator.itemgetter(smiles_at, *label_at)  # a tuple where there are labels
        chunk: list[str] = []
        row = 0
        for cells in reader:
            if not cells:
                continue
            if len(cells) != len(header):
                short.append(row)
                cells = [*cells, *[""] * len(header)][: len(header)]
            picked = pick(cells) if label_at else (cells[smiles_at],)
            chunk.append(picked[0])
            labels.add(row, picked[1:])
            row += 1
            if len(chunk) == CHUNK_ROWS:
                yield featurize_smiles, (row - len(chunk), chunk, spec)
                chunk = []
        counter[0] = row
        if chunk:
            yield featurize_smiles, (row - len(chunk), chunk, spec)

    try:
        with handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            if not header:
                raise DataError(f"CSV file {path} is empty (no header row)")
            require_columns(header, [smiles_column, *label_columns], str(path))
            estimate = max(1, path.stat().st_size // (CHUNK_ROWS * 40))
            chunks = list(run_jobs(jobs(reader, header), estimate))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV file {path}: {exc}") from exc
    if short:
        raise DataError(
            f"CSV file {path}: {len(short)} rows do not have {len(header)} cells "
            f"(first: data row {short[0] + 1})"
        )
    return _merge(chunks, counter[0], labels.matrix(counter[0]), features)


def read_sdf_molecules(
    path: Path, label_columns: Sequence[str], features: FeaturesConfig
) -> Featurized:
    """Stream an SDF file (optionally gzipped): records to workers, their SD properties back as
    label cells; a property absent from a record is a missing label."""
    from fedpharma.data.chunk_features import featurize_sdf

    spec = feature_spec(features)
    names = tuple(label_columns)

    def jobs(handle: Iterable[bytes]) -> Iterator[Job]:
        buffer = io.BytesIO()
        start = count = 0
        for line in handle:
            buffer.write(line)
            if line.startswith(b"$$$$"):
                count += 1
                if count - start == CHUNK_ROWS:
                    yield featurize_sdf, (start, buffer.getvalue(), names, spec)
                    buffer, start = io.BytesIO(), count
        tail = buffer.getvalue()
        if tail.strip():
            yield featurize_sdf, (start, tail, names, spec)

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            estimate = max(1, path.stat().st_size // (CHUNK_ROWS * 1500))
            chunks = list(run_jobs(jobs(handle), estimate))
    except OSError as exc:
        raise DataError(f"cannot read SDF file {path}: {exc.strerror or exc}") from exc
    seen = frozenset().union(*(c.properties_seen for c in chunks))
    missing = [n for n in names if n not in seen]
    if missing:
        raise DataError(
            f"{path} lacks SD properties: {', '.join(missing)}; "
            f"properties present: {', '.join(sorted(seen)) or 'none'}"
        )
    n_input = sum(c.n_records for c in chunks)
    labels = LabelCollector(names, str(path))
    for chunk in chunks:
        for k, row in enumerate(chunk.valid.tolist()):
            labels.add(row, [column[k] for column in chunk.cells])
    return _merge(chunks, n_input, labels.matrix(n_input), features)


def featurize_smiles_list(
    smiles: Sequence[str], labels: SparseMatrix, features: FeaturesConfig
) -> Featurized:
    """In-memory SMILES with their ``labels`` (one row per SMILES), featurized like a file."""
    from fedpharma.data.chunk_features import featurize_smiles

    spec = feature_spec(features)
    starts = range(0, len(smiles), CHUNK_ROWS)
    jobs: Iterator[Job] = (
        (featurize_smiles, (s, list(smiles[s : s + CHUNK_ROWS]), spec)) for s in starts
    )
    return _merge(list(run_jobs(jobs, len(starts))), len(smiles), labels, features)


def _merge(
    chunks: list[ChunkFeatures], n_input: int, labels: SparseMatrix, features: FeaturesConfig
) -> Featurized:
    lengths = np.concatenate([np.zeros(1, np.int64), *(c.fp_lengths for c in chunks)])
    n_columns = features.n_bits if features.fingerprint == "morgan" else 0
    n_valid = sum(c.valid.size for c in chunks)
    if n_columns == 0:
        lengths = np.zeros(n_valid + 1, np.int64)
    descriptor_width = max((c.descriptors.shape[1] for c in chunks), default=0)
    return Featurized(
        n_input=n_input,
        valid=np.concatenate([np.zeros(0, np.int64), *(c.valid for c in chunks)]),
        invalid_rows=np.concatenate([np.zeros(0, np.int64), *(c.invalid_rows for c in chunks)]),
        invalid_codes=np.concatenate([np.zeros(0, np.int8), *(c.invalid_codes for c in chunks)]),
        salts_stripped=sum(c.salts_stripped for c in chunks),
        fingerprints=SparseMatrix(
            np.cumsum(lengths),
            np.concatenate([np.zeros(0, np.int32), *(c.fp_indices for c in chunks)]),
            np.concatenate([np.zeros(0, np.uint16), *(c.fp_values for c in chunks)]),
            n_columns,
        ),
        descriptors=np.concatenate(
            [np.zeros((0, descriptor_width), np.float32)]
            + [c.descriptors for c in chunks if c.valid.size]
        ),
        scaffold_keys=np.concatenate([np.zeros(0, np.int64), *(c.scaffold_keys for c in chunks)]),
        molecule_keys=np.concatenate([np.zeros(0, np.int64), *(c.molecule_keys for c in chunks)]),
        labels=labels,
    )
