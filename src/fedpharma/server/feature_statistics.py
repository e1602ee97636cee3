"""Fit the consortium's tabular preprocessing from the sites' feature sums, pooling no record.

Each site answers a :class:`~fedpharma.core.protocol.FeatureStatisticsTask` with per-column
counts, sums and sums of squares of its raw training features (and its median histograms); the
coordinator adds them and fits :class:`~fedpharma.data.federated_preprocessing.FittedPreprocessing`.
With a noise multiplier the sites release them under differential privacy, each charging its own
ledger (:mod:`fedpharma.site.statistics`). A site whose policy requires DP refuses plain sums;
then the fit falls back to the schema's declared ranges, which are public. Under ``[secure]``
the sums are a secure sum among the sites (:mod:`fedpharma.server.secure_statistics`). A
regression's targets are standardized by the pooled label mean and spread
(:func:`fit_target_scaling`), part of the same fit.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedpharma.core import serde
from fedpharma.core.config import RunConfig
from fedpharma.core.dataset import Objective, TargetScaling
from fedpharma.core.errors import DataError
from fedpharma.core.protocol import Channel, FeatureStatisticsResult, FeatureStatisticsTask, Task
from fedpharma.data.federated_preprocessing import (
    MEDIAN_BINS,
    ColumnSums,
    FittedPreprocessing,
    declared_target_scaling,
    median_columns,
    pooled_target_scaling,
)
from fedpharma.data.tabular import TabularSchema
from fedpharma.secure.ckks import PublicContext
from fedpharma.server.label_statistics import gather_label_statistics
from fedpharma.server.round import sort_replies
from fedpharma.server.secure_statistics import SecureStatistics, SecureSums, gather_secure_sums

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


def standardizes_targets(config: RunConfig, task: Objective) -> bool:
    """A tabular regression run trains on standardized targets (not with private heads, which
    each fit their own output layer at the site's labels)."""
    return task == "regression" and not config.model.private_heads


def secure_statistics(
    config: RunConfig, ckks_context: PublicContext | None
) -> SecureStatistics | None:
    """How a recipe with ``[secure]`` sums the statistics (``None`` without it)."""
    if not config.secure.enabled:
        return None
    return SecureStatistics(config.secure, config.strategy.min_sites, ckks_context)


def secure_calibration(config: RunConfig, task: Objective) -> bool:
    """Whether a classification run's label statistics (for the output layer's start) join the
    secure sum of the statistics: under ``[secure]`` without DP, when the output layer is
    calibrated from the sites' labels (no public prior, no private heads)."""
    return (
        task == "classification"
        and config.secure.enabled
        and not config.privacy.enabled
        and config.training.calibrate_output
        and not config.model.private_heads
        and not config.model.label_mean
    )


def fit_preprocessing(
    channel: Channel,
    run_id: str,
    schema: TabularSchema,
    timeout: float | None = None,
    *,
    noise_multiplier: float | None = None,
    indicate_all: bool = False,
    standardize_targets: bool = False,
    label_prior: TargetScaling | None = None,
    secure: SecureStatistics | None = None,
    calibration_labels: bool = False,
) -> tuple[FittedPreprocessing, str]:
    """The consortium's fit and a line saying how it was made.

    Every site must contribute: a fit that left a site out would be the pooled fit of the others
    only, so with any site absent the fit comes from the declared ranges instead.
    ``indicate_all``: a missingness indicator for every imputing column, so that the model's
    width is known from the schema before the fit (a deployed run). ``standardize_targets``
    (regression): the fit also holds the targets' scaling (:func:`fit_target_scaling`).
    ``secure``: the statistics (and the labels' sums, for the targets) are a secure sum
    (:mod:`fedpharma.server.secure_statistics`); no site's own sums reach the coordinator.
    ``calibration_labels`` (a classification under ``secure``): the 0/1 outcomes' sums join
    the secure sum, and the fit holds their pooled mean (the positive rate the output layer
    starts at, :func:`~fedpharma.server.label_statistics.calibrated_start`), so no plain
    label statistics are asked for later."""
    secured: SecureSums | None = None
    if secure is not None:
        secured, absent, why = gather_secure_sums(
            channel,
            run_id,
            schema,
            secure,
            timeout,
            noise_multiplier=noise_multiplier,
            labels=(standardize_targets and label_prior is None) or calibration_labels,
            classification=calibration_labels,
        )
        sums = None if secured is None else secured.features
        contributors = () if secured is None else secured.contributors
        if secured is None:
            absent = absent or ("every site",)
    else:
        why = ""
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
        how = f"features scaled by the schema's declared ranges: {who} sent no feature statistics"
        if why:
            how += f" (secure sum failed: {why})"
    else:
        fitted = FittedPreprocessing.fit(
            schema, sums, noised=noise_multiplier is not None, indicate_all=indicate_all
        )
        dp = "" if noise_multiplier is None else f" under DP (σ = {noise_multiplier:g}, charged)"
        how = (
            f"features imputed and standardized from {len(contributors)} sites' summed "
            f"statistics{dp} ({len(fitted.indicators)} missingness indicators)"
        )
        if secured is not None:
            how += f"; {secured.resolution}"
    if calibration_labels and secured is not None and secured.labels is not None and not absent:
        rate = pooled_target_scaling(*secured.labels)
        fitted = fitted.with_targets(rate)
        if rate is not None:
            how += (
                f"; label statistics for the output layer securely summed at "
                f"{len(contributors)} sites"
            )
    if standardize_targets:
        if secured is not None and secured.labels is not None and not absent:
            targets = pooled_target_scaling(*secured.labels)
            said = (
                f"regression targets standardized by {len(contributors)} sites' securely "
                "summed label statistics"
            )
            if targets is None:
                targets, said = fit_target_scaling(
                    channel, run_id, schema, timeout, ask_sites=False
                )
        else:
            # Plain label sums only where the feature sums were plain and complete: under DP
            # they would be an unaccounted release, under secure aggregation not secure, and a
            # partial sum is not the pooled one.
            plain = noise_multiplier is None and secure is None and sums is not None and not absent
            targets, said = fit_target_scaling(
                channel, run_id, schema, timeout, ask_sites=plain, prior=label_prior
            )
        fitted = fitted.with_targets(targets)
        how += f"; {said}"
    return fitted, f"{how} (fit {fitted.digest()[:12]})"


def fit_target_scaling(
    channel: Channel,
    run_id: str,
    schema: TabularSchema,
    timeout: float | None = None,
    *,
    ask_sites: bool = True,
    prior: TargetScaling | None = None,
) -> tuple[TargetScaling | None, str]:
    """How the regression targets are standardized, and a line saying so: by a public prior
    (``[model] label_mean`` / ``label_std``) if given; else by the pooled mean and standard
    deviation from every site's label count, sum and sum of squares (the label statistics the
    molecule path calibrates its output layer with, :mod:`fedpharma.server.label_statistics`);
    else (under DP, or a site missing or refusing) by the label columns' declared ranges; else
    not at all."""
    if prior is not None:
        return prior, "regression targets standardized by the public label prior"
    if ask_sites:
        n_tasks = len(schema.label_columns)
        sites = channel.available_sites()
        statistics = gather_label_statistics(channel, run_id, n_tasks, timeout)
        if statistics is not None and set(statistics.sites) == set(sites):
            pooled = pooled_target_scaling(
                statistics.count, statistics.total, statistics.sum_of_squares
            )
            if pooled is not None:
                return pooled, (
                    f"regression targets standardized by {len(sites)} sites' summed label "
                    "statistics (predictions and metrics in label units)"
                )
    declared = declared_target_scaling(schema)
    if declared is not None:
        return declared, "regression targets scaled by the label's declared range"
    return None, (
        "regression targets not standardized (no pooled label statistics, and no declared "
        "min and max for the label): the output layer starts as initialised"
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


def read_target_scaling(run_dir: Path) -> TargetScaling | None:
    """The regression targets' scaling in the fit :func:`write_fit` wrote (``None`` if the run
    has no fit or the fit scales no targets); what an exported model folds into its output
    layer. The fit's digest is checked."""
    path = run_dir / PREPROCESSING_FILE
    if not path.is_file():
        return None
    document = json.loads(path.read_text(encoding="utf-8"))
    digest = document.pop("digest", None)
    document.pop("version", None)
    fitted, problems = serde.from_dict(FittedPreprocessing, document, str(path))
    if fitted is None or problems or fitted.digest() != digest:
        raise DataError(f"{path} does not match its digest")
    return fitted.target_scaling
