"""Fit the consortium's tabular preprocessing from the sites' feature sums, pooling no record.

Each site answers a :class:`~fedpharma.core.protocol.FeatureStatisticsTask` with per-column
counts, sums and sums of squares of its raw training features (and its median histograms); the
coordinator adds them and fits :class:`~fedpharma.data.federated_preprocessing.FittedPreprocessing`.
With a noise multiplier the sites release them under differential privacy, each charging its own
ledger (:mod:`fedpharma.site.statistics`). A site whose policy requires DP refuses plain sums;
then the fit falls back to the schema's declared ranges, which are public.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedpharma.core.errors import DataError
from fedpharma.core.protocol import Channel, FeatureStatisticsResult, FeatureStatisticsTask, Task
from fedpharma.data.federated_preprocessing import (
    MEDIAN_BINS,
    ColumnSums,
    FittedPreprocessing,
    median_columns,
)
from fedpharma.data.tabular import TabularSchema
from fedpharma.server.round import sort_replies

PREPROCESSING_FILE = "preprocessing.json"


def gather_feature_sums(
    channel: Channel,
    run_id: str,
    width: int,
    timeout: float | None = None,
    *,
    noise_multiplier: float | None = None,
    histogram: int = 0,
) -> tuple[ColumnSums | None, tuple[str, ...], tuple[str, ...]]:
    """The sum of the sites' column sums (``None`` if none sent any), who sent them, and who
    did not (refused, or sent sums of another width or impossible counts; noised counts may
    fall anywhere)."""
    tasks: dict[str, Task] = {
        site: FeatureStatisticsTask(run_id, 0, noise_multiplier)
        for site in channel.available_sites()
    }
    results, _, _ = sort_replies(tasks, channel.exchange(tasks, timeout))
    total: ColumnSums | None = None
    contributors: list[str] = []
    for site, reply in sorted(results.items()):
        if not isinstance(reply, FeatureStatisticsResult):
            continue
        parts = (reply.count, reply.total, reply.sum_of_squares)
        if any(len(p) != width for p in parts) or len(reply.histogram) != histogram:
            continue
        if noise_multiplier is None and any(c < 0 or c > reply.n_examples for c in reply.count):
            continue
        sums = ColumnSums(reply.n_examples, *parts, reply.histogram)
        total = sums if total is None else total + sums
        contributors.append(site)
    absent = tuple(sorted(set(tasks) - set(contributors)))
    return total, tuple(contributors), absent


def fit_preprocessing(
    channel: Channel,
    run_id: str,
    schema: TabularSchema,
    timeout: float | None = None,
    *,
    noise_multiplier: float | None = None,
    indicate_all: bool = False,
) -> tuple[FittedPreprocessing, str]:
    """The consortium's fit and a line saying how it was made.

    Every site must contribute: a fit that left a site out would be the pooled fit of the others
    only, so with any site absent the fit comes from the declared ranges instead.
    ``indicate_all``: a missingness indicator for every imputing column, so that the model's
    width is known from the schema before the fit (a deployed run)."""
    sums, contributors, absent = gather_feature_sums(
        channel,
        run_id,
        len(schema.feature_names),
        timeout,
        noise_multiplier=noise_multiplier,
        histogram=MEDIAN_BINS * len(median_columns(schema)),
    )
    if sums is None or absent:
        fitted = FittedPreprocessing.public(schema)
        who = ", ".join(absent) if absent else "every site"
        return fitted, (
            f"features scaled by the schema's declared ranges: {who} sent no feature statistics"
        )
    fitted = FittedPreprocessing.fit(
        schema, sums, noised=noise_multiplier is not None, indicate_all=indicate_all
    )
    dp = "" if noise_multiplier is None else f" under DP (σ = {noise_multiplier:g}, charged)"
    return fitted, (
        f"features imputed and standardized from {len(contributors)} sites' summed statistics"
        f"{dp} (fit {fitted.digest()[:12]}, {len(fitted.indicators)} missingness indicators)"
    )


def write_fit(run_dir: Path, fitted: FittedPreprocessing) -> None:
    """``preprocessing.json`` in the run directory: the fit and its digest (the recipe's part
    that the data made)."""
    document = {"digest": fitted.digest(), **json.loads(fitted.to_json())}
    (run_dir / PREPROCESSING_FILE).write_text(json.dumps(document, indent=1), encoding="utf-8")


def read_fit(run_dir: Path, schema: TabularSchema) -> FittedPreprocessing:
    """The fit :func:`write_fit` wrote (a resumed deployed run hands it out again)."""
    document = json.loads((run_dir / PREPROCESSING_FILE).read_text(encoding="utf-8"))
    digest = document.pop("digest", None)
    fitted = FittedPreprocessing.from_json(json.dumps(document), schema)
    if fitted.digest() != digest:
        raise DataError(f"{run_dir / PREPROCESSING_FILE} does not match its digest")
    return fitted
