"""Bootstrap intervals on the headline comparisons of a simulation, for the report's words.

Each difference (federated − local-only, federated − centralized, centralized − local-only) is
the headline metric as the report aggregates it, on resamples of each site's test rows
(:func:`~fedpharma.evaluation.bootstrap.site_weighted_differences`); the report calls a model
better or worse only when the 95 % interval excludes zero. The interval covers which test rows
happen to be drawn, not training randomness.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from fedpharma.core.dataset import SiteData
from fedpharma.evaluation.bootstrap import percentile_interval, site_weighted_differences
from fedpharma.report.summary import Interval

RESAMPLES = 200
COMPARISONS = (("federated", "local"), ("federated", "centralized"), ("centralized", "local"))


def headline_intervals(
    predictions: Mapping[str, Mapping[str, npt.NDArray[np.float64]]],
    sites: Mapping[str, SiteData],
    seed: int,
    resamples: int = RESAMPLES,
) -> dict[str, Interval]:
    """The interval of every comparison whose two models were both run."""
    if not sites or len({d.test.task_names for d in sites.values()}) != 1:
        return {}  # no common headline across sites with different tasks
    task = next(iter(sites.values())).test.task
    labels = {name: d.test.dense_labels() for name, d in sites.items()}
    out = {}
    for k, (first, second) in enumerate(COMPARISONS):
        if first not in predictions or second not in predictions:
            continue
        differences = site_weighted_differences(
            task,
            labels,
            predictions[first],
            predictions[second],
            np.random.default_rng([seed, 0xB007, k]),
            resamples,
        )
        if np.isfinite(differences).any():
            low, high = percentile_interval(differences)
            out[f"{first}-{second}"] = Interval(low, high, resamples)
    return out
