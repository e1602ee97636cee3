"""Chemical-space overlap from keyed hashed sets: the counts, the key, a simulated site's part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedpharma.core.dataset import Dataset, SiteData, SparseMatrix
from fedpharma.core.errors import CryptoError
from fedpharma.data.overlap import (
    hashed_set,
    load_overlap_key,
    multiplicity_histogram,
    overlap_counts,
    site_sets,
)
from fedpharma.sim.overlap import chemical_overlap

KEY = b"k" * 16


def test_each_site_counts_what_it_holds_and_what_another_site_shares() -> None:
    scaffolds = {
        "a": hashed_set(["c1ccccc1", "C1CCNCC1", "c1ccncc1"], KEY),
        "b": hashed_set(["c1ccncc1", "C1CCOC1"], KEY),
        "c": hashed_set([], KEY),
    }
    bits = {
        "a": np.array([1, 1, 0, 0], dtype=bool),
        "b": np.array([0, 1, 1, 0], dtype=bool),
        "c": np.array([0, 0, 0, 1], dtype=bool),
    }
    counts = overlap_counts(scaffolds, bits)
    assert (counts["a"].scaffolds, counts["a"].scaffolds_shared) == (3, 1)
    assert (counts["b"].scaffolds, counts["b"].scaffolds_shared) == (2, 1)
    assert (counts["c"].scaffolds, counts["c"].bits, counts["c"].bits_shared) == (0, 1, 0)
    assert (counts["a"].bits, counts["a"].bits_shared) == (2, 1)


def test_without_the_key_a_public_scaffold_cannot_be_looked_up() -> None:
    held = hashed_set(["c1ccccc1"], KEY)
    assert np.array_equal(held, hashed_set(["c1ccccc1"], KEY))
    guessed = hashed_set(["c1ccccc1"], b"another key 1234")  # the coordinator's dictionary
    assert not (held & guessed).any()


def _site(groups: list[int], columns: list[int], keys: list[int] | None = None) -> SiteData:
    n = len(groups)
    features = SparseMatrix(
        np.arange(n + 1, dtype=np.int64),
        np.asarray(columns, dtype=np.int32),
        np.ones(n, dtype=np.uint16),
        8,
    )
    data = Dataset(
        features,
        np.zeros((n, 1), dtype=np.float32),
        "regression",
        ("y",),
        np.asarray(groups),
        scaffold_keys=np.zeros(0, np.int64) if keys is None else np.asarray(keys, np.int64),
    )
    return SiteData(data.subset(np.arange(n - 1)), data.subset(np.arange(n - 1, n)))


def test_a_simulated_site_hashes_its_own_scaffolds_and_reads_its_own_bits() -> None:
    scaffolds, bits = site_sets(_site([0, 0, 5], [1, 2, 2]), KEY)
    assert scaffolds.sum() == 2 and bits.tolist() == [0, 1, 1, 0, 0, 0, 0, 0]
    overlap = chemical_overlap({"a": _site([0, 1, 2], [1, 2, 3]), "b": _site([2, 9], [3, 4])})
    assert (overlap["a"].scaffolds, overlap["a"].scaffolds_shared) == (3, 1)
    assert (overlap["b"].bits, overlap["b"].bits_shared) == (2, 1)


def test_molecules_are_hashed_by_their_scaffold_key_the_same_at_every_site() -> None:
    """Group ids are a dataset's own numbering; the scaffold key is what two sites share. An
    acyclic molecule (key 0) has no scaffold."""
    a, _ = site_sets(_site([0, 1, 2], [1, 1, 1], keys=[77, 0, 91]), KEY, 64)
    b, _ = site_sets(_site([5, 6], [1, 1], keys=[91, 77]), KEY, 64)
    assert a.sum() == 2 and np.array_equal(a, b)
    assert np.array_equal(a, hashed_set(["77", "91"], KEY, 64))


def test_the_multiplicity_histogram_counts_buckets_held_by_exactly_k_sites() -> None:
    assert multiplicity_histogram(np.array([0, 1, 3, 1, 2, 0, 3, 3]), 3) == (2, 1, 3)
    assert multiplicity_histogram(np.zeros(4, np.int64), 2) == (0, 0)


def test_an_overlap_key_file_is_hex_of_32_to_64_bytes(tmp_path: Path) -> None:
    good = tmp_path / "good.key"
    good.write_text("ab" * 32 + "\n")
    assert load_overlap_key(good) == bytes.fromhex("ab" * 32)
    for name, text in (("short", "ab" * 31), ("long", "ab" * 65), ("bad", "not hex")):
        (tmp_path / name).write_text(text)
        with pytest.raises(CryptoError):
            load_overlap_key(tmp_path / name)
