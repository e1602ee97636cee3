"""A site's feature sums for the consortium's preprocessing fit: plain, or under its DP policy.

Plain sums (:func:`~fedpharma.data.federated_preprocessing.column_sums`) are an unaccounted
release, refused where the policy requires DP. With a noise multiplier σ the site releases the
Gaussian mechanism on its clipped per-record contributions
(:mod:`fedpharma.data.bounded_statistics`): it charges the event to its record-level budget
before reading a record, then adds N(0, σ²Δ²) to the bounded sums, drawn from its own generator.
Under secure aggregation the site sends no sums at all: its bounded sums (noised, under DP) are
its input to the same secure sum its updates go through (:func:`secure_statistics_vector`).
"""

from __future__ import annotations

from typing import NoReturn

import numpy as np
import numpy.typing as npt

from fedpharma.core.errors import DataError, PolicyRefused
from fedpharma.data.bounded_statistics import (
    bounded_label_sums,
    bounded_sums,
    column_bounds,
    label_bounds,
    sensitivity,
    sums_from_bounded,
)
from fedpharma.data.federated_preprocessing import ColumnSums, column_sums
from fedpharma.data.tabular import TabularSchema
from fedpharma.privacy import GaussianEvent, gaussian_noise
from fedpharma.site.policy import SitePolicy

SECURE_STATISTICS = "statistics"
"""The one array a site's secure statistics input holds (its name never leaves the site)."""


def release_feature_sums(
    features: npt.NDArray[np.floating],
    schema: TabularSchema | None,
    policy: SitePolicy | None,
    noise_multiplier: float | None,
    rng: np.random.Generator,
    run_id: str,
    rnd: int,
) -> ColumnSums:
    """What this site sends for a feature-statistics task; refuses (typed) what it cannot
    account for, before any record is read."""
    if noise_multiplier is None:
        _refuse_unaccounted(policy)
        return column_sums(features, schema)
    if schema is None:
        _no_schema()
    noised = _noised_bounded_sums(features, schema, policy, noise_multiplier, rng, run_id, rnd)
    return sums_from_bounded(schema, noised)


def secure_statistics_vector(
    features: npt.NDArray[np.floating],
    labels: npt.NDArray[np.floating],
    schema: TabularSchema | None,
    policy: SitePolicy | None,
    noise_multiplier: float | None,
    rng: np.random.Generator,
    run_id: str,
    rnd: int,
    *,
    with_labels: bool = False,
    classification: bool = False,
) -> npt.NDArray[np.float64]:
    """This site's input to a secure sum of statistics: its bounded sums
    (:func:`~fedpharma.data.bounded_statistics.bounded_sums`, every record clipped into the
    declared ranges, so that each coordinate lies in [-n_k, n_k] and the secure aggregation's
    fixed-point range holds it), noised as :func:`release_feature_sums` under DP, and with
    ``with_labels`` the label columns' bounded count, sum and sum of squares (a
    ``classification``'s 0/1 outcomes bounded by 1). Refuses what it
    cannot account for, or bound, before any record is read."""
    if schema is None:
        _no_schema()
    if noise_multiplier is not None:
        if with_labels:
            raise PolicyRefused(
                "label statistics are not released under DP; scale the labels by their "
                "declared range instead"
            )
        return _noised_bounded_sums(features, schema, policy, noise_multiplier, rng, run_id, rnd)
    _refuse_unaccounted(policy)
    column_bounds(schema)  # an unbounded column is refused naming it
    if with_labels and label_bounds(schema, classification) is None:
        raise DataError(
            "label statistics in a secure sum need each label column's declared min and max"
        )
    summed = bounded_sums(schema, features)
    if not with_labels:
        return summed
    return np.concatenate([summed, bounded_label_sums(schema, labels, classification)])


def _noised_bounded_sums(
    features: npt.NDArray[np.floating],
    schema: TabularSchema,
    policy: SitePolicy | None,
    noise_multiplier: float,
    rng: np.random.Generator,
    run_id: str,
    rnd: int,
) -> npt.NDArray[np.float64]:
    """The Gaussian mechanism on the bounded sums, charged to the record-level budget first."""
    if policy is None:
        raise PolicyRefused(
            "this site has no privacy policy, so it cannot account for DP feature sums; give "
            "it a policy with a record-level budget"
        )
    column_bounds(schema)  # an unbounded column is refused before anything is charged
    policy.ledger.charge(GaussianEvent(noise_multiplier), "record", run_id, rnd)
    summed = bounded_sums(schema, features)
    noise = gaussian_noise(summed.shape, noise_multiplier * sensitivity(schema), rng)
    noised: npt.NDArray[np.float64] = summed + noise
    return noised


def _refuse_unaccounted(policy: SitePolicy | None) -> None:
    if policy is not None and policy.config.require_dp:
        raise PolicyRefused(
            "this site's policy requires differential privacy; feature statistics without "
            "noise would be an unaccounted release (set [privacy] "
            "statistics_noise_multiplier in the run config)"
        )


def _no_schema() -> NoReturn:
    raise DataError(
        "this site holds no declared schema, so it cannot bound its records' contributions "
        "to DP or secure feature sums"
    )
