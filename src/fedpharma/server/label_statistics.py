"""Agree on label statistics across sites without pooling any label.

Each site answers a :class:`~fedpharma.core.protocol.LabelStatisticsTask` with, per task, its count
of observed labels, their sum and their sum of squares over its training data; the coordinator
adds them up. Only those three sums per site and task leave a site (the same kind of aggregate
as n_k); a site whose policy requires differential privacy refuses, and the run starts from an
uncalibrated head instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedpharma.core.config import RunConfig
from fedpharma.core.dataset import Objective, TargetScaling
from fedpharma.core.errors import ConfigError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import Channel, LabelStatisticsResult, LabelStatisticsTask, Task
from fedpharma.models.output import calibrate_output_layer, has_head
from fedpharma.server.round import sort_replies


@dataclass(frozen=True)
class LabelStatistics:
    """Pooled per-task label count, mean and standard deviation (NaN where no labels), and the
    summed sum and sum of squares they come from."""

    count: npt.NDArray[np.float64]
    mean: npt.NDArray[np.float64]
    std: npt.NDArray[np.float64]
    sites: tuple[str, ...]
    total: npt.NDArray[np.float64]
    sum_of_squares: npt.NDArray[np.float64]


def gather_label_statistics(
    channel: Channel, run_id: str, n_tasks: int, timeout: float | None = None
) -> LabelStatistics | None:
    """Sum the sites' label statistics; None when no site contributed."""
    tasks: dict[str, Task] = {
        site: LabelStatisticsTask(run_id, 0) for site in channel.available_sites()
    }
    results, _, _ = sort_replies(tasks, channel.exchange(tasks, timeout))
    count, total, squares = np.zeros(n_tasks), np.zeros(n_tasks), np.zeros(n_tasks)
    contributors = []
    for site, reply in sorted(results.items()):
        if not isinstance(reply, LabelStatisticsResult):
            continue
        parts = [np.array(p) for p in (reply.count, reply.total, reply.sum_of_squares)]
        if any(len(p) != n_tasks for p in parts) or np.any(parts[0] < 0):
            continue
        count, total, squares = count + parts[0], total + parts[1], squares + parts[2]
        contributors.append(site)
    if not contributors:
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
        variance = np.where(count > 1, squares / count - mean**2, np.nan)
    spread = np.sqrt(np.maximum(variance, 0.0))
    return LabelStatistics(count, mean, spread, tuple(contributors), total, squares)


UNCALIBRATED_UNDER_DP = (
    "warning: output layer as initialised, near 0: under differential privacy the sites release "
    "no label statistics, and DP-SGD's clipped steps move it slowly, so predictions start far "
    "from labels such as pIC50 ≈ 6; give a public prior ([model] label_mean = [...], "
    "label_std = [...]) from the literature or an assay's known range"
)


def label_prior(config: RunConfig, n_tasks: int) -> TargetScaling | None:
    """The recipe's public label prior (``[model] label_mean`` / ``label_std``), if any."""
    model = config.model
    if not model.label_mean:
        return None
    if len(model.label_mean) != n_tasks:
        raise ConfigError(
            [f"[model] label_mean has {len(model.label_mean)} values; the data has {n_tasks}"]
        )
    std = tuple(s if s > 0 else 1.0 for s in model.label_std or (1.0,) * n_tasks)
    try:
        return TargetScaling(tuple(model.label_mean), std)
    except ValueError as exc:
        raise ConfigError([f"[model] label_mean / label_std: {exc}"]) from exc


def calibrated_start(
    config: RunConfig,
    channel: Channel,
    run_id: str,
    parameters: Parameters,
    task: Objective,
    n_tasks: int,
    timeout: float | None = None,
    *,
    targets: TargetScaling | None = None,
) -> tuple[Parameters, str]:
    """The initial parameters with the output layer at the labels, and a line saying how.

    A public prior (``[model] label_mean``) wins; else, without DP, the sites' pooled label
    statistics; under DP nothing data-dependent is released, so the head stays as initialised.
    With regression ``targets`` standardized (a tabular fit) the labels the model learns have
    mean 0 and spread 1, where the head starts already: nothing to calibrate. A classification's
    ``targets`` (a tabular fit under secure aggregation) hold the pooled positive rate, summed
    securely: the head starts there, and no plain label statistics are asked for.
    """
    model = config.model
    if model.private_heads:
        return parameters, "output layers are private: each site starts its head at its own labels"
    if targets is not None and task == "regression":
        return parameters, (
            "output layer as initialised (near 0): it learns standardized targets (pooled mean "
            "0, spread 1)"
        )
    if model.label_mean:
        label_prior(config, n_tasks)  # checks the prior's length
        mean = np.array(model.label_mean, dtype=np.float64)
        std = np.array(model.label_std or [1.0] * n_tasks, dtype=np.float64)
        return calibrate_output_layer(
            parameters, task, mean, std
        ), "output layer set from the public label prior"
    if not config.training.calibrate_output:
        return parameters, "output layer as initialised"
    if not has_head(parameters):
        return parameters, "output layer as initialised (the network has no layer named head)"
    if targets is not None:  # a classification's label statistics, summed securely with the fit
        rate = np.array(targets.center, dtype=np.float64)
        calibrated = calibrate_output_layer(parameters, task, rate, np.ones_like(rate))
        return calibrated, "output layer calibrated to the sites' securely summed label statistics"
    if config.privacy.enabled:
        return parameters, UNCALIBRATED_UNDER_DP
    statistics = gather_label_statistics(channel, run_id, n_tasks, timeout)
    if statistics is None:
        return parameters, "output layer as initialised (no site sent label statistics)"
    calibrated = calibrate_output_layer(parameters, task, statistics.mean, statistics.std)
    return calibrated, "output layer calibrated to the sites' pooled label statistics"
