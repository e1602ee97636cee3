"""A site's part in the chemical-space overlap: its hashed sets, computed at home, summed securely.

The site hashes its scaffolds under the consortium's overlap key (site.toml ``overlap_key``;
the coordinator never holds it) and reads its set fingerprint bits
(:func:`~fedpharma.data.overlap.site_sets`). Asked in the clear, it sends only the two set sizes.
Its sets themselves leave only as its input to a secure sum (SecAgg or CKKS), and only once per
run: two sums over site sets that differ in this site alone would hand the coordinator its
bitmap by subtraction. A restarted site process does not remember that it contributed.
"""

from __future__ import annotations

import numpy as np

from fedpharma.core.dataset import SiteData
from fedpharma.core.errors import DataError, PolicyRefused
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import ChemicalOverlapTask
from fedpharma.data.overlap import OVERLAP_BITS, Bitmap, site_sets

SECURE_OVERLAP = "overlap"
"""The one array a site's secure overlap input holds (its name never leaves the site)."""


class OverlapParticipation:
    """This site's hashed sets under ``key``, the runs it already summed them in."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._sets: dict[int, tuple[Bitmap, Bitmap]] = {}
        self._summed: set[str] = set()

    def sets(self, data: SiteData, task: ChemicalOverlapTask) -> tuple[Bitmap, Bitmap]:
        """This site's scaffold buckets and set bits of the task's sizes; refused (typed) for
        data without scaffolds or of another width, before any set is made."""
        if not 1 <= task.buckets <= OVERLAP_BITS:
            raise DataError(f"the task asks for {task.buckets} buckets, 1 to {OVERLAP_BITS} hold")
        if any(p.scaffold_keys.size != len(p) for p in (data.train, data.test)):
            raise DataError("this site holds no molecules, so no scaffolds to compare")
        if task.n_bits != data.train.n_features:
            raise DataError(
                f"the task asks for {task.n_bits} fingerprint bits, this site's molecules have "
                f"{data.train.n_features}"
            )
        if task.buckets not in self._sets:
            self._sets[task.buckets] = site_sets(data, self._key, task.buckets)
        return self._sets[task.buckets]

    def secure_input(self, data: SiteData, task: ChemicalOverlapTask) -> Parameters:
        """The 0/1 vector of buckets, then bits, that this site adds to the run's one secure
        sum of them; a second sum in the same run is refused."""
        if task.run_id in self._summed:
            raise PolicyRefused(
                "this site already added its hashed sets to a secure sum in this run; a second "
                "sum over other sites would reveal its sets by subtraction"
            )
        scaffolds, bits = self.sets(data, task)
        self._summed.add(task.run_id)
        vector = np.concatenate([scaffolds, bits]).astype(np.float64)
        return Parameters((SECURE_OVERLAP,), (vector,))
