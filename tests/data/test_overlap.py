"""Chemical-space overlap from keyed hashed sets: the counts, the key, a simulated site's part."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.data.overlap import hashed_set, overlap_counts
from fedpharma.sim.overlap import chemical_overlap, site_bitmaps

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


def _site(groups: list[int], columns: list[int]) -> SiteData:
    n = len(groups)
    features = sp.csr_matrix((np.ones(n), (np.arange(n), columns)), shape=(n, 8))
    data = Dataset(
        features, np.zeros((n, 1), dtype=np.float32), "regression", ("y",), np.asarray(groups)
    )
    return SiteData(data, data)


def test_a_simulated_site_hashes_its_own_scaffolds_and_reads_its_own_bits() -> None:
    scaffolds, bits = site_bitmaps(_site([0, 0, 5], [1, 2, 2]), KEY)
    assert scaffolds.sum() == 2 and bits.tolist() == [0, 1, 1, 0, 0, 0, 0, 0]
    overlap = chemical_overlap({"a": _site([0, 1, 2], [1, 2, 3]), "b": _site([2, 9], [3, 4])})
    assert (overlap["a"].scaffolds, overlap["a"].scaffolds_shared) == (3, 1)
    assert (overlap["b"].bits, overlap["b"].bits_shared) == (2, 1)
