"""What both sides of a secure-aggregation round agree on, and the checks both apply to it.

:class:`RoundSetup` comes from the run config and the task; the checks refuse messages of
another round, rosters of fewer than three sites or with t ≤ 2n/3 (Bonawitz et al. 2017, §4 and
§6, the active-adversary setting; see ``docs/secure-aggregation.md``) and phases that fewer than
t sites reached.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedpharma.core.errors import CryptoError, ProtocolError, RoundFailed
from fedpharma.secure.quantize import RING_DTYPES
from fedpharma.secure.secagg.messages import KeyRoster

MAX_VECTOR_LENGTH = 1 << 31
MIN_SITES = 3
"""The fewest sites of a secure round: of two, each reads the other's update off the sum."""


def minimum_threshold(n_sites: int) -> int:
    """The smallest threshold secure aggregation accepts for a roster of ``n_sites``:
    ⌊2n/3⌋ + 1, so that an active coordinator colluding with c < 2t − n sites cannot collect
    both kinds of share of one site from two disjoint groups (docs/secure-aggregation.md)."""
    return 2 * n_sites // 3 + 1


@dataclass(frozen=True)
class RoundSetup:
    """What all parties of one round agree on beforehand (from the run config and the task)."""

    run_id: str
    round: int
    threshold: int
    vector_length: int
    ring_bits: int = 32

    def __post_init__(self) -> None:
        if self.threshold < 2:
            raise CryptoError(f"threshold must be ≥ 2, got {self.threshold}")
        if not 1 <= self.vector_length <= MAX_VECTOR_LENGTH:
            raise CryptoError(f"vector_length must be in [1, 2^31], got {self.vector_length}")
        if self.ring_bits not in RING_DTYPES:
            raise CryptoError(f"ring_bits must be 32 or 64, got {self.ring_bits}")

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger]:
        return RING_DTYPES[self.ring_bits]


def check_round(setup: RoundSetup, run_id: str, rnd: int, what: str) -> None:
    """Refuse (:class:`ProtocolError`) a message of another run or round."""
    if (run_id, rnd) != (setup.run_id, setup.round):
        raise ProtocolError(
            f"{what} is for run {run_id!r} round {rnd}, this is run {setup.run_id!r} round "
            f"{setup.round} (stale or replayed)"
        )


def check_roster(setup: RoundSetup, roster: KeyRoster) -> None:
    """Refuse a roster with another threshold, unsorted or repeated sites, fewer than t or
    three sites, or a threshold that does not exceed two thirds of its sites."""
    sites = roster.sites
    if roster.threshold != setup.threshold:
        raise CryptoError(
            f"the roster's threshold {roster.threshold} differs from the agreed {setup.threshold}"
        )
    if list(sites) != sorted(set(sites)):
        raise CryptoError("the key roster must list distinct sites in sorted order")
    require_threshold(setup, len(sites), "advertised keys")
    if len(sites) < MIN_SITES:
        raise CryptoError(
            f"a roster of {len(sites)} sites: secure aggregation needs at least {MIN_SITES}, "
            "or each site reads the other's update off the sum"
        )
    if setup.threshold < minimum_threshold(len(sites)):
        raise CryptoError(
            f"threshold {setup.threshold} does not exceed two thirds of the {len(sites)} roster "
            f"sites; use at least {minimum_threshold(len(sites))}"
        )


def require_threshold(setup: RoundSetup, count: int, what: str) -> None:
    """Fail the round (:class:`RoundFailed`) when fewer than t sites reached a phase."""
    if count < setup.threshold:
        raise RoundFailed(
            f"run {setup.run_id!r} round {setup.round}: only {count} site(s) {what}, "
            f"secure aggregation needs at least t = {setup.threshold}"
        )
