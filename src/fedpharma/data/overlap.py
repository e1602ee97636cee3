"""How much chemical space the sites share, as counts: hashed sets, never molecules.

Each site turns what it holds into a bitmap: its scaffolds, each hashed with a keyed BLAKE2b
(the key the sites share, never the coordinator, so a bit cannot be looked up in a dictionary
of public scaffolds) into one of :data:`OVERLAP_BITS` (about a million) buckets, and its
fingerprint bits set by any of its molecules. From the bitmaps come per site four counts: its
scaffold buckets and how many of them another site also occupies; its fingerprint bits and how
many another site also sets. Only these counts enter the run summary. A collision (two scaffolds
in one bucket) can only add apparent overlap: a site of s scaffolds beside others holding S
expects about s·S/2²⁰ of them, under one at a few hundred and a few thousand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

OVERLAP_BITS = 1 << 20

Bitmap = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class OverlapCounts:
    """One site's part of the chemical space and how much of it another site shares."""

    scaffolds: int
    scaffolds_shared: int
    bits: int
    bits_shared: int


def hashed_set(items: Iterable[str], key: bytes) -> Bitmap:
    """The bitmap of ``items`` under the keyed hash."""
    bitmap = np.zeros(OVERLAP_BITS, dtype=np.bool_)
    for item in items:
        digest = hashlib.blake2b(item.encode("utf-8"), key=key, digest_size=8).digest()
        bitmap[int.from_bytes(digest, "little") % OVERLAP_BITS] = True
    return bitmap


def overlap_counts(
    scaffolds: Mapping[str, Bitmap], bits: Mapping[str, Bitmap]
) -> dict[str, OverlapCounts]:
    """Per site: its occupied buckets and set bits, and how many another site shares."""
    out = {}
    for site in scaffolds:
        others_scaffolds = np.zeros(OVERLAP_BITS, dtype=np.bool_)
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
