"""A deployed run's chemical-space overlap: how many sites hold each hashed scaffold, as counts.

After the per-task summary the coordinator sends every site a
:class:`~fedpharma.core.protocol.ChemicalOverlapTask` in two steps. First in the clear: each
site that holds the consortium's overlap key answers with its two set sizes (scaffold buckets
occupied, fingerprint bits set; a site without the key refuses, and the refusal is audited).
Then, among the sites that answered, a secure sum (the run's SecAgg or CKKS,
:func:`~fedpharma.server.secure_statistics.run_secure_sum`) of their 0/1 vectors of
:data:`~fedpharma.data.overlap.DEPLOYED_BUCKETS` scaffold buckets and the fingerprint bits
(:mod:`fedpharma.site.overlap`): the coordinator learns, per bucket and per bit, how many sites
hold it — from which the report keeps only how many buckets and bits exactly 1, 2, …, K sites
hold — and never one site's set. The key (as the MELLODDY-TUNER key its partners shared;
Heyndrickx et al. 2023) keeps it from hashing public scaffolds to look them up.

Why 2¹⁶ buckets, not a simulation's 2²⁰: each site's vector goes through the secure sum, 0.5 MB
masked under SecAgg and 17 CKKS ciphertexts (a decrypting site receives every site's), where
2²⁰ would be 8 MB and 257 ciphertexts; the price is collisions, about s·S/2¹⁶ buckets of
apparent overlap for a site of s scaffolds beside others holding S (~15 at a thousand each).

Not asked without ``[secure]`` (the sets are never sent in the clear), under differential
privacy (the counts carry no noise) or for tabular data (no scaffolds). The sum is checked
before it is kept: whole numbers from 0 to K, and per part the total the set sizes imply; a sum
that disagrees is rejected (audited as ``result_rejected``) and the report says why it is
missing — a secure sum cannot say which site lied.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from fedpharma.core.config import RunConfig
from fedpharma.core.protocol import Channel, ChemicalOverlapResult, ChemicalOverlapTask, Task
from fedpharma.data.overlap import DEPLOYED_BUCKETS, multiplicity_histogram
from fedpharma.report.summary import ConsortiumOverlap, SiteSetSizes
from fedpharma.secure.secagg.round import MIN_SITES
from fedpharma.server.round import Rejected, sort_replies
from fedpharma.server.secure_statistics import SecureStatistics, plan_secure_sum, run_secure_sum

SKIPPED_NOT_SECURE = (
    "not asked: needs [secure] in the run config (the sites' hashed sets are only ever summed "
    "securely, never sent in the clear)"
)
SKIPPED_UNDER_DP = "not asked: under differential privacy the overlap counts would be un-noised"
SKIPPED_TABULAR = "not asked: tabular data has no scaffolds"
ROUNDING = 0.25
"""How far a summed value may be from a whole number (the codecs' error is far smaller)."""


def collect_chemical_overlap(
    config: RunConfig,
    channel: Channel,
    run_id: str,
    rnd: int,
    n_bits: int,
    secure: SecureStatistics | None,
    timeout: float | None = None,
    on_rejected: Rejected | None = None,
) -> ConsortiumOverlap:
    """Ask every available site for its set sizes, then securely sum the sets of those that
    sent them (see module doc); ``secure``: the run's secure sum (``None`` without
    ``[secure]``); ``on_rejected`` is told each reply, or sum, rejected."""
    if secure is None:
        return ConsortiumOverlap(missing=SKIPPED_NOT_SECURE)
    if config.privacy.enabled:
        return ConsortiumOverlap(missing=SKIPPED_UNDER_DP)
    if config.dataset.kind == "tabular":
        return ConsortiumOverlap(missing=SKIPPED_TABULAR)
    buckets = DEPLOYED_BUCKETS
    asked: dict[str, Task] = {
        site: ChemicalOverlapTask(run_id, rnd, buckets, n_bits)
        for site in channel.available_sites()
    }
    results, refusals, failures = sort_replies(asked, channel.exchange(asked, timeout), on_rejected)
    declined = {site: f"refused: {r.reason}" for site, r in refusals.items()} | failures
    sizes = {
        site: SiteSetSizes(reply.scaffold_buckets, reply.set_bits)
        for site, reply in sorted(results.items())
        if isinstance(reply, ChemicalOverlapResult)
    }
    partial = ConsortiumOverlap(buckets, sizes, declined=declined)
    if len(sizes) < MIN_SITES:
        why = (
            f"not summed: {len(sizes)} site(s) sent their set sizes, a secure sum needs {MIN_SITES}"
        )
        return _missing(partial, why)
    plan = plan_secure_sum(secure, len(sizes), 1.0)
    if plan is None:
        return _missing(partial, "not summed: no public CKKS context at the coordinator")
    tasks: dict[str, Task] = {
        site: ChemicalOverlapTask(run_id, rnd, buckets, n_bits, plan.settings) for site in sizes
    }
    summed = run_secure_sum(
        plan, channel, tasks, buckets + n_bits, rnd, run_id, timeout, on_rejected
    )
    if summed.total is None:
        return _missing(partial, f"the secure sum failed: {summed.why}")
    contributors = summed.contributors
    try:
        multiplicity = checked_multiplicity(
            summed.total, {site: sizes[site] for site in contributors}, buckets
        )
    except ValueError as exc:
        reason = f"chemical overlap: the secure sum of {', '.join(contributors)} is rejected: {exc}"
        if on_rejected is not None:
            on_rejected("", rnd, reason)
        return _missing(partial, f"rejected: {exc}")
    return ConsortiumOverlap(
        buckets,
        sizes,
        contributors,
        multiplicity_histogram(multiplicity[:buckets], len(contributors)),
        multiplicity_histogram(multiplicity[buckets:], len(contributors)),
        declined,
    )


def checked_multiplicity(
    total: npt.NDArray[np.float64], sizes: Mapping[str, SiteSetSizes], buckets: int
) -> npt.NDArray[np.int64]:
    """The summed sets as whole numbers of sites; :class:`ValueError` unless every value is a
    whole number from 0 to the number of sites and each part adds up to the sizes sent."""
    whole = np.rint(total)
    if not np.all(np.abs(total - whole) <= ROUNDING):
        raise ValueError("the sum holds values that are no whole number of sites")
    k = len(sizes)
    if whole.min(initial=0) < 0 or whole.max(initial=0) > k:
        raise ValueError(f"the sum holds values outside 0 to {k} sites")
    parts = {
        "scaffold buckets": (int(whole[:buckets].sum()), sum(s.scaffolds for s in sizes.values())),
        "fingerprint bits": (int(whole[buckets:].sum()), sum(s.bits for s in sizes.values())),
    }
    for part, (found, sent) in parts.items():
        if found != sent:
            raise ValueError(f"its {part} add up to {found}, the sites' set sizes to {sent}")
    return whole.astype(np.int64)


def _missing(partial: ConsortiumOverlap, why: str) -> ConsortiumOverlap:
    return ConsortiumOverlap(partial.buckets, partial.sites, declined=partial.declined, missing=why)
