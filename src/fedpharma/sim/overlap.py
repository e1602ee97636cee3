"""The chemical-space overlap summary of a simulated run, computed site by site.

Each simulated site hashes its own scaffolds and reads its own fingerprint bits with the same
function a deployed site runs at home (:func:`~fedpharma.data.overlap.site_sets`); the counts of
:func:`~fedpharma.data.overlap.overlap_counts` are all that enter ``summary.json``. The hash key
is fresh per run and never written.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from fedpharma.core.dataset import SiteData
from fedpharma.data.overlap import overlap_counts, site_sets
from fedpharma.report.summary import SiteOverlap


def chemical_overlap(sites: Mapping[str, SiteData]) -> dict[str, SiteOverlap]:
    """Per site, the counts of :class:`~fedpharma.report.summary.SiteOverlap`."""
    key = secrets.token_bytes(32)
    maps = {name: site_sets(data, key) for name, data in sites.items()}
    counts = overlap_counts({n: m[0] for n, m in maps.items()}, {n: m[1] for n, m in maps.items()})
    return {
        name: SiteOverlap(c.scaffolds, c.scaffolds_shared, c.bits, c.bits_shared)
        for name, c in counts.items()
    }
