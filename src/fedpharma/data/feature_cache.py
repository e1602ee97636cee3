"""An on-disk cache of featurized molecule files, so a second run skips RDKit entirely.

An entry is one ``.npz`` of plain numeric arrays (read with ``allow_pickle=False``: nothing in a
cache file can execute code), named by a key that covers everything its content depends on: the
file's SHA-256, the reader's settings (SMILES and label columns) and the digest of the
preprocessing recipe (:class:`~fedpharma.data.preprocessing.PreprocessingRecipe`: fingerprint
settings, standardization, RDKit version). Any change to one of them is a different key, so a
stale entry is never read. An unreadable entry is ignored and rewritten. Processes that need
the same entry at once (a simulation's workers starting together) take its lock in turn
(:func:`exclusive`): the first featurizes and writes it, the others then read it.

The cache holds a site's features, which are as confidential as its data: it lives in the
user's cache folder (``$FEDPHARMA_CACHE_DIR``, else ``$XDG_CACHE_HOME/fedpharma/features``, else
``~/.cache/fedpharma/features``) or where ``[dataset] cache_dir`` says, created private (0700).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fedpharma.core.config import FeaturesConfig
from fedpharma.core.dataset import SparseMatrix
from fedpharma.data.loading import Featurized

CACHE_FORMAT = 1
"""Bump when :class:`Featurized`'s arrays or the chunk keys change meaning."""

CACHE_DIR_ENV = "FEDPHARMA_CACHE_DIR"

_ARRAYS = ("valid", "invalid_rows", "invalid_codes", "descriptors", "scaffold_keys",
           "molecule_keys")  # fmt: skip


def default_cache_dir() -> Path:
    """Where feature caches go unless ``[dataset] cache_dir`` says otherwise."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "fedpharma" / "features"


def cache_key(path: Path, features: FeaturesConfig, reader: dict[str, Any]) -> str:
    """SHA-256 over the file's bytes, the reader settings and the preprocessing recipe."""
    from fedpharma.data.preprocessing import PreprocessingRecipe

    hasher = hashlib.sha256(b"fedpharma feature cache\x00")
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            hasher.update(block)
    settings = {
        "format": CACHE_FORMAT,
        "recipe": PreprocessingRecipe.from_features(features).digest(),
        "reader": reader,
    }
    hasher.update(json.dumps(settings, sort_keys=True).encode())
    return hasher.hexdigest()


@contextlib.contextmanager
def exclusive(folder: Path, key: str) -> Iterator[None]:
    """Hold entry ``key``'s lock (an advisory ``flock`` on ``KEY.lock``) for the block; best
    effort: where the folder cannot be written or locks are unsupported, no lock is taken.

    Nor in a spawned child still importing its parent's main module (a script without a
    ``__main__`` guard): that child must reach multiprocessing's own error, not wait for a lock
    its parent holds while waiting for it."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        yield
        return
    try:
        import fcntl

        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = (folder / f"{key}.lock").open("a")
    except (ImportError, OSError):
        yield
        return
    with handle:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def load(folder: Path, key: str) -> Featurized | None:
    """The cached entry ``key``, or ``None`` when absent or unreadable."""
    path = folder / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        fingerprints = SparseMatrix(
            arrays["fp_indptr"],
            arrays["fp_indices"],
            arrays["fp_values"],
            int(arrays["fp_columns"]),
        )
        labels = SparseMatrix(
            arrays["label_indptr"],
            arrays["label_indices"],
            arrays["label_values"],
            int(arrays["label_columns"]),
            fill=float("nan"),
        )
        return Featurized(
            n_input=int(arrays["n_input"]),
            salts_stripped=int(arrays["salts_stripped"]),
            fingerprints=fingerprints,
            labels=labels,
            **{name: arrays[name] for name in _ARRAYS},
        )
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def save(folder: Path, key: str, featurized: Featurized) -> None:
    """Write entry ``key`` atomically (a reader never sees half a file); best effort: a cache
    that cannot be written only costs the next run its featurization."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = folder / f"{key}.{os.getpid()}.partial.npz"
        fp, labels = featurized.fingerprints, featurized.labels
        np.savez(
            partial,
            n_input=np.int64(featurized.n_input),
            salts_stripped=np.int64(featurized.salts_stripped),
            fp_indptr=fp.indptr,
            fp_indices=fp.indices,
            fp_values=fp.values,
            fp_columns=np.int64(fp.n_columns),
            label_indptr=labels.indptr,
            label_indices=labels.indices,
            label_values=labels.values,
            label_columns=np.int64(labels.n_columns),
            **{name: getattr(featurized, name) for name in _ARRAYS},
        )
        os.replace(partial, folder / f"{key}.npz")
    except OSError:
        return
