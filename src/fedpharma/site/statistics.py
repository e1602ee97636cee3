"""A site's feature sums for the consortium's preprocessing fit: plain, or under its DP policy.

Plain sums (:func:`~fedpharma.data.federated_preprocessing.column_sums`) are an unaccounted
release, refused where the policy requires DP. With a noise multiplier σ the site releases the
Gaussian mechanism on its clipped per-record contributions
(:mod:`fedpharma.data.bounded_statistics`): it charges the event to its record-level budget
before reading a record, then adds N(0, σ²Δ²) to the bounded sums, drawn from its own generator.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedpharma.core.errors import DataError, PolicyRefused
from fedpharma.data.bounded_statistics import (
    bounded_sums,
    column_bounds,
    sensitivity,
    sums_from_bounded,
)
from fedpharma.data.federated_preprocessing import ColumnSums, column_sums
from fedpharma.data.tabular import TabularSchema
from fedpharma.privacy import GaussianEvent, gaussian_noise
from fedpharma.site.policy import SitePolicy


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
        if policy is not None and policy.config.require_dp:
            raise PolicyRefused(
                "this site's policy requires differential privacy; feature statistics without "
                "noise would be an unaccounted release (set [privacy] "
                "statistics_noise_multiplier in the run config)"
            )
        return column_sums(features, schema)
    if schema is None:
        raise DataError(
            "this site holds no declared schema, so it cannot bound its records' contributions "
            "to DP feature sums"
        )
    if policy is None:
        raise PolicyRefused(
            "this site has no privacy policy, so it cannot account for DP feature sums; give "
            "it a policy with a record-level budget"
        )
    column_bounds(schema)  # an unbounded column is refused before anything is charged
    policy.ledger.charge(GaussianEvent(noise_multiplier), "record", run_id, rnd)
    summed = bounded_sums(schema, features)
    noised = summed + gaussian_noise(summed.shape, noise_multiplier * sensitivity(schema), rng)
    return sums_from_bounded(schema, noised)
