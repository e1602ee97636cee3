"""How much chemical space the sites share, as counts: keyed hashed sets, never molecules.

Each site turns what it holds into two bitmaps, at home (:func:`site_sets`): its Murcko
scaffolds (Bemis & Murcko 1996), each hashed with a keyed BLAKE2b into one of ``buckets``
buckets, and the fingerprint bits any of its molecules sets. The hash key is one the sites share
and the coordinator never holds, as MELLODDY's partners shared the MELLODDY-TUNER key (Heyndrickx
et al. 2023): without it a bucket cannot be looked up in a dictionary of public scaffolds.
A simulation compares the bitmaps themselves (:func:`overlap_counts`); a deployment sees only
their secure sum, how many sites occupy each bucket (:func:`multiplicity_histogram`;
``docs/chemical-overlap.md``).

A scaffold is its canonical scaffold SMILES' 64-bit key (``Dataset.scaffold_keys``, the same at
every site); acyclic molecules have none. A collision (two scaffolds in one bucket) can only add
apparent overlap: among B buckets, a site of s scaffolds beside others holding S expects about
s·S/B of them — under one at a few hundred and a few thousand with the simulation's B = 2²⁰,
about 15 at a thousand each with a deployment's 2¹⁶.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedpharma.core.dataset import Dataset, Matrix, SiteData, SparseMatrix
from fedpharma.core.errors import CryptoError
from fedpharma.core.keyfiles import read_hex_key

OVERLAP_BITS = 1 << 20
"""Scaffold buckets of a simulation, and the most a site hashes into when deployed."""
DEPLOYED_BUCKETS = 1 << 16
"""Scaffold buckets of a deployment: each site's 0/1 vector of buckets + fingerprint bits goes
through the run's secure sum, 2¹⁶ values being 0.5 MB under SecAgg and 17 CKKS ciphertexts."""
MIN_KEY_BYTES, MAX_KEY_BYTES = 32, 64
"""An overlap key file holds 256 to 512 bits (BLAKE2b takes keys of up to 64 bytes)."""

Bitmap = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class OverlapCounts:
    """One site's part of the chemical space and how much of it another site shares."""

    scaffolds: int
    scaffolds_shared: int
    bits: int
    bits_shared: int


def load_overlap_key(path: str | os.PathLike[str]) -> bytes:
    """The consortium's overlap key from its key file (hex text, e.g. ``openssl rand -hex 32``);
    a :class:`CryptoError` says what is wrong with the file."""
    key = read_hex_key(path, "chemical-overlap key", MIN_KEY_BYTES)
    if len(key) > MAX_KEY_BYTES:
        raise CryptoError(
            f"chemical-overlap key in {path} has {len(key)} bytes; at most {MAX_KEY_BYTES}"
        )
    return key


def hashed_set(items: Iterable[str], key: bytes, buckets: int = OVERLAP_BITS) -> Bitmap:
    """The bitmap of ``items`` under the keyed hash, ``buckets`` long."""
    bitmap = np.zeros(buckets, dtype=np.bool_)
    for item in items:
        digest = hashlib.blake2b(item.encode("utf-8"), key=key, digest_size=8).digest()
        bitmap[int.from_bytes(digest, "little") % buckets] = True
    return bitmap


def scaffold_items(parts: Iterable[Dataset]) -> set[str]:
    """The distinct scaffolds of ``parts`` as text: their scaffold keys where the rows are
    molecules, else their group ids (a simulation's other data, whose ids every site shares)."""
    items: set[str] = set()
    for part in parts:
        if part.scaffold_keys.size:
            items.update(str(int(k)) for k in np.unique(part.scaffold_keys) if k != 0)
        else:
            items.update(str(int(g)) for g in np.unique(part.groups))
    return items


def set_columns(matrix: Matrix) -> Bitmap:
    """The columns (fingerprint bits) any row of ``matrix`` sets."""
    if isinstance(matrix, SparseMatrix):
        found = np.zeros(matrix.n_columns, dtype=np.bool_)
        found[matrix.indices[np.asarray(matrix.values) != 0]] = True
        return found
    return np.asarray(np.count_nonzero(matrix, axis=0) > 0)


def site_sets(data: SiteData, key: bytes, buckets: int = OVERLAP_BITS) -> tuple[Bitmap, Bitmap]:
    """One site's hashed scaffold set and its set fingerprint bits, over all its rows."""
    parts = [p for p in (data.train, data.validation, data.test) if p is not None]
    bits = np.zeros(data.train.n_features, dtype=np.bool_)
    for part in parts:
        bits |= set_columns(part.features)
    return hashed_set(sorted(scaffold_items(parts)), key, buckets), bits


def overlap_counts(
    scaffolds: Mapping[str, Bitmap], bits: Mapping[str, Bitmap]
) -> dict[str, OverlapCounts]:
    """Per site: its occupied buckets and set bits, and how many another site shares."""
    out = {}
    for site in scaffolds:
        others_scaffolds = np.zeros_like(scaffolds[site])
        others_bits = np.zeros_like(bits[site])
        for other in scaffolds:
            if other != site:
                others_scaffolds |= scaffolds[other]
                others_bits |= bits[other]
        out[site] = OverlapCounts(
            int(scaffolds[site].sum()),
            int((scaffolds[site] & others_scaffolds).sum()),
            int(bits[site].sum()),
            int((bits[site] & others_bits).sum()),
        )
    return out


def multiplicity_histogram(multiplicity: npt.NDArray[np.integer], sites: int) -> tuple[int, ...]:
    """From how many sites occupy each bucket: how many buckets exactly 1, 2, …, ``sites``
    sites occupy."""
    counts = np.bincount(np.asarray(multiplicity, dtype=np.int64), minlength=sites + 1)
    return tuple(int(c) for c in counts[1 : sites + 1])
