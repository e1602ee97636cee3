"""Secure sums of the sites' feature (and label) statistics: the coordinator learns only the sum.

The secure sum itself (:func:`plan_secure_sum`, :func:`run_secure_sum`: inputs of weight 1,
summed by the run's SecAgg or CKKS collector) also sums the sites' hashed sets of the chemical
overlap (:mod:`fedpharma.server.chemical_overlap`).

Under ``[secure]`` a tabular run's feature statistics go through the same secure aggregation as
its updates (:mod:`fedpharma.server.secure`): the coordinator sends each site a
:class:`~fedpharma.core.protocol.FeatureStatisticsTask` with the round's secure settings, and the
site answers with the first phase of a secure sum instead of its sums
(:func:`fedpharma.site.statistics.secure_statistics_vector`). A site's input is its vector of
*bounded* sums (:mod:`fedpharma.data.bounded_statistics`): every record's values clipped into the
schema's declared ranges and divided by B = max(|min|, |max|), so every coordinate of site k's
vector S_k lies in [-n_k, n_k]; raw sums of squares in clinical units would not fit a
fixed-point ring, which is why every numeric column then needs its declared ``min`` and ``max``
(a value outside it counts at the nearest end, as under DP). Each site weighs 1, so the
collector's weighted mean is Σ_k S_k / K and the coordinator recovers Σ_k S_k = K · mean, K
being the number of sites in the sum (which it knows anyway), and nothing of a single site.

Resolution. SecAgg: the statistics get their own fixed-point codec, clip C = ``[secure]
max_examples`` (plus 8σΔ under DP, the noise's headroom) and weight bound 1, so each site's
coordinate is rounded to a step of C / L, L = ⌊(2^(bits−1) − 1) / K⌋: with the default 64-bit
ring and 10⁶ examples, under 10⁻¹² of a record in range-scaled units; with a 32-bit ring and
three sites, 5·10⁻⁴. Counts (and, without DP, histogram counts) are whole numbers and are
rounded back to them. CKKS: the decrypting site returns the float32 mean Σ S_k / K (relative
error ~6·10⁻⁸ on top of CKKS's own ~10⁻⁷ at scale 2⁴⁰).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt

from fedpharma.core.config import SecureConfig
from fedpharma.core.errors import RoundFailed
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import Channel, FeatureStatisticsTask, SecureReply, Task
from fedpharma.core.protocol.settings import SecAggSettings, SecureSettings
from fedpharma.data.bounded_statistics import (
    label_bounds,
    label_sums_from_bounded,
    sensitivity,
    sums_from_bounded,
)
from fedpharma.data.federated_preprocessing import MEDIAN_BINS, ColumnSums, median_columns
from fedpharma.data.tabular import TabularSchema
from fedpharma.secure.ckks import PublicContext
from fedpharma.secure.quantize import FixedPoint
from fedpharma.server.round import AttemptFailed, Rejected, sort_replies
from fedpharma.server.secure import CKKSCollector, SecAggCollector

NOISE_HEADROOM = 8.0
"""Standard deviations of DP noise the SecAgg codec's range leaves room for."""


@dataclass(frozen=True)
class SecureStatistics:
    """How the coordinator asks for the statistics under secure aggregation: the run's
    ``[secure]`` table, ``[strategy] min_sites`` and, for CKKS, its public context."""

    config: SecureConfig
    min_sites: int
    ckks_context: PublicContext | None = None


@dataclass(frozen=True)
class SecureSums:
    """What a secure sum of statistics reveals: the summed feature statistics, the summed
    label count, sum and sum of squares per label column (if asked for), who is in the sum,
    and a line on the resolution."""

    features: ColumnSums
    labels: tuple[npt.NDArray[np.float64], ...] | None
    contributors: tuple[str, ...]
    resolution: str


@dataclass(frozen=True)
class SumPlan:
    """How a secure sum is run: the collector, the settings every site gets and, for SecAgg,
    the fixed-point codec they imply."""

    collector: SecAggCollector | CKKSCollector
    settings: SecureSettings
    codec: FixedPoint | None = None


@dataclass(frozen=True)
class SecureTotal:
    """What a secure sum reveals: Σ_k of the sites' inputs and who is in it; when it failed
    (``total`` None), the sites whose first-phase answer arrived and why it failed."""

    total: npt.NDArray[np.float64] | None
    contributors: tuple[str, ...]
    why: str = ""


def plan_secure_sum(secure: SecureStatistics, n_sites: int, clip: float) -> SumPlan | None:
    """A secure sum of ``n_sites`` inputs, each weighing 1, of coordinates in [-``clip``,
    ``clip``] (SecAgg's fixed-point range); ``None`` for CKKS without the public context."""
    if secure.config.mode == "secagg":
        collector = SecAggCollector(secure.config, min_sites=secure.min_sites)
        settings = SecAggSettings(
            threshold=collector.threshold(n_sites),
            ring_bits=secure.config.ring_bits,
            clip=clip,
            max_sites=max(n_sites, 1),
            max_examples=1,
        )
        return SumPlan(collector, settings, FixedPoint.from_settings(settings))
    if secure.ckks_context is None:
        return None
    ckks = CKKSCollector(secure.config, secure.ckks_context, min_sites=secure.min_sites)
    return SumPlan(ckks, ckks.task_settings(0, n_sites))


def run_secure_sum(
    plan: SumPlan,
    channel: Channel,
    tasks: Mapping[str, Task],
    length: int,
    rnd: int,
    run_id: str,
    timeout: float | None = None,
    on_rejected: Rejected | None = None,
) -> SecureTotal:
    """Send ``tasks`` (each asking for a first secure phase with ``plan.settings``) and run the
    secure sum of the ``length``-value inputs of the sites that answer; ``on_rejected`` is told
    each reply rejected on the way."""
    results, refusals, failures = sort_replies(tasks, channel.exchange(tasks, timeout), on_rejected)
    first = {site: r for site, r in results.items() if isinstance(r, SecureReply)}
    template = Parameters(("sum",), (np.zeros(length, dtype=np.float64),))
    n = len(tasks)
    collect = (
        partial(plan.collector.collect, codec=plan.codec)
        if isinstance(plan.collector, SecAggCollector)
        else plan.collector.collect
    )
    try:
        summed = collect(
            channel,
            first,
            template,
            n_sites=n,
            rnd=rnd,
            run_id=run_id,
            timeout=timeout,
            on_rejected=on_rejected,
        )
    except (AttemptFailed, RoundFailed) as exc:
        reasons = {**failures, **{s: r.reason for s, r in refusals.items()}}
        why = "; ".join(f"{s}: {reasons[s][:200]}" for s in sorted(reasons)) or str(exc)
        return SecureTotal(None, tuple(sorted(first)), why)
    total = summed.mean.flatten() * summed.n_examples
    return SecureTotal(total, tuple(summed.contributors))


def statistics_length(schema: TabularSchema, labels: bool) -> int:
    """The length of a site's secure statistics vector."""
    width = len(schema.feature_names)
    extra = 3 * len(schema.label_columns) if labels else 0
    return 1 + 3 * width + MEDIAN_BINS * len(median_columns(schema)) + extra


def gather_secure_sums(
    channel: Channel,
    run_id: str,
    schema: TabularSchema,
    secure: SecureStatistics,
    timeout: float | None = None,
    *,
    noise_multiplier: float | None = None,
    labels: bool = False,
    classification: bool = False,
) -> tuple[SecureSums | None, tuple[str, ...], str]:
    """The securely summed statistics (``None`` when the secure sum failed), the sites asked
    that are not in the sum, and why it failed (``""`` when it did not). ``labels``: the label
    columns' sums too (never under DP; bounded by their declared ranges, or as the 0/1
    outcomes of a ``classification``)."""
    sites = channel.available_sites()
    labels = labels and noise_multiplier is None
    labels = labels and label_bounds(schema, classification) is not None
    length = statistics_length(schema, labels)
    n = len(sites)
    headroom = 0.0 if noise_multiplier is None else NOISE_HEADROOM * noise_multiplier
    clip = float(secure.config.max_examples) + headroom * sensitivity(schema)
    plan = plan_secure_sum(secure, n, clip)
    if plan is None:
        return None, tuple(sites), "no public CKKS context at the coordinator"
    if plan.codec is not None:
        step = plan.codec.clip / plan.codec.max_level
        resolution = (
            f"secure sum (secagg, {plan.codec.bits}-bit ring): each statistic within "
            f"{n * step / 2:.1g} of exact, in range-scaled units"
        )
    else:
        resolution = "secure sum (ckks): statistics to float32 precision"
    tasks: dict[str, Task] = {
        site: FeatureStatisticsTask(run_id, 0, noise_multiplier, plan.settings, labels)
        for site in sites
    }
    summed = run_secure_sum(plan, channel, tasks, length, 0, run_id, timeout)
    if summed.total is None:
        return None, tuple(sorted(set(sites) - set(summed.contributors))), summed.why
    total, contributors = summed.total, summed.contributors
    if noise_multiplier is None:
        total = _whole_counts(schema, total, labels)
    features_end = length - (3 * len(schema.label_columns) if labels else 0)
    label_sums = (
        label_sums_from_bounded(schema, total[features_end:], classification) if labels else None
    )
    sums = sums_from_bounded(schema, total[:features_end])
    absent = tuple(sorted(set(sites) - set(contributors)))
    return SecureSums(sums, label_sums, contributors, resolution), absent, ""


def _whole_counts(
    schema: TabularSchema, total: npt.NDArray[np.float64], labels: bool
) -> npt.NDArray[np.float64]:
    """Rows, recorded counts, histogram counts and label counts rounded to whole numbers (they
    are, before quantization)."""
    width = len(schema.feature_names)
    whole = total.copy()
    counts = [
        slice(0, 1 + width),
        slice(1 + 3 * width, 1 + 3 * width + MEDIAN_BINS * len(median_columns(schema))),
    ]
    if labels:
        start = statistics_length(schema, False)
        counts.append(slice(start, start + len(schema.label_columns)))
    for part in counts:
        whole[part] = np.rint(whole[part])
    return whole
