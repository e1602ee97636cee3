"""The chemical-space overlap summary of a simulated run, computed site by site.

Each simulated site hashes its own scaffolds and reads its own fingerprint bits
(:func:`site_bitmaps`, what a site would compute at home); the counts of
:func:`~fedpharma.data.overlap.overlap_counts` are all that enter ``summary.json``. The hash key
is fresh per run and never written. A simulation's scaffold ids are the dataset's, the same at
every site; a deployment would hash the canonical scaffold SMILES under the partners' shared key.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from fedpharma.core.dataset import SiteData
from fedpharma.data.overlap import Bitmap, hashed_set, overlap_counts
from fedpharma.report.summary import SiteOverlap


def site_bitmaps(data: SiteData, key: bytes) -> tuple[Bitmap, Bitmap]:
    """One site's hashed scaffold set and its set fingerprint bits (train and test rows)."""
    groups = np.unique(np.concatenate([data.train.groups, data.test.groups]))
    scaffolds = hashed_set((str(int(g)) for g in groups), key)
    bits = np.zeros(data.train.n_features, dtype=np.bool_)
    for part in (data.train.features, data.test.features):
        if sp.issparse(part):
            counts = np.asarray(sp.csr_matrix(part).getnnz(axis=0)).ravel()
        else:
            counts = np.count_nonzero(np.asarray(part), axis=0)
        bits |= counts > 0
    return scaffolds, bits


def chemical_overlap(sites: Mapping[str, SiteData]) -> dict[str, SiteOverlap]:
    """Per site, the counts of :class:`~fedpharma.report.summary.SiteOverlap`."""
    key = secrets.token_bytes(16)
    maps = {name: site_bitmaps(data, key) for name, data in sites.items()}
    counts = overlap_counts({n: m[0] for n, m in maps.items()}, {n: m[1] for n, m in maps.items()})
    return {
        name: SiteOverlap(c.scaffolds, c.scaffolds_shared, c.bits, c.bits_shared)
        for name, c in counts.items()
    }
