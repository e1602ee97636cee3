"""Fit the consortium's tabular preprocessing from the sites' feature sums, pooling no record.

Each site answers a :class:`~fedpharma.core.protocol.FeatureStatisticsTask` with per-column
counts, sums and sums of squares of its raw training features; the coordinator adds them and fits
:class:`~fedpharma.data.federated_preprocessing.FittedPreprocessing`. A site whose policy requires
differential privacy refuses; then the fit falls back to the schema's declared ranges, which are
public.
"""

from __future__ import annotations

from fedpharma.core.protocol import Channel, FeatureStatisticsResult, FeatureStatisticsTask, Task
from fedpharma.data.federated_preprocessing import ColumnSums, FittedPreprocessing
from fedpharma.data.tabular import TabularSchema
from fedpharma.server.round import sort_replies


def gather_feature_sums(
    channel: Channel, run_id: str, width: int, timeout: float | None = None
) -> tuple[ColumnSums | None, tuple[str, ...], tuple[str, ...]]:
    """The sum of the sites' column sums (``None`` if none sent any), who sent them, and who
    did not (refused, or sent sums of another width)."""
    tasks: dict[str, Task] = {
        site: FeatureStatisticsTask(run_id, 0) for site in channel.available_sites()
    }
    results, _, _ = sort_replies(tasks, channel.exchange(tasks, timeout))
    total: ColumnSums | None = None
    contributors: list[str] = []
    for site, reply in sorted(results.items()):
        if not isinstance(reply, FeatureStatisticsResult):
            continue
        parts = (reply.count, reply.total, reply.sum_of_squares)
        if any(len(p) != width for p in parts) or any(
            c < 0 or c > reply.n_examples for c in reply.count
        ):
            continue
        sums = ColumnSums(reply.n_examples, *parts)
        total = sums if total is None else total + sums
        contributors.append(site)
    absent = tuple(sorted(set(tasks) - set(contributors)))
    return total, tuple(contributors), absent


def fit_preprocessing(
    channel: Channel, run_id: str, schema: TabularSchema, timeout: float | None = None
) -> tuple[FittedPreprocessing, str]:
    """The consortium's fit and a line saying how it was made.

    Every site must contribute: a fit that left a site out would be the pooled fit of the others
    only, so with any site absent the fit comes from the declared ranges instead."""
    sums, contributors, absent = gather_feature_sums(
        channel, run_id, len(schema.feature_names), timeout
    )
    if sums is None or absent:
        fitted = FittedPreprocessing.public(schema)
        who = ", ".join(absent) if absent else "every site"
        return fitted, (
            f"features scaled by the schema's declared ranges: {who} sent no feature statistics"
        )
    fitted = FittedPreprocessing.fit(schema, sums)
    return fitted, (
        f"features imputed and standardized from {len(contributors)} sites' summed statistics "
        f"(fit {fitted.digest()[:12]}, {len(fitted.indicators)} missingness indicators)"
    )
