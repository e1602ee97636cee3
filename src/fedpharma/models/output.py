"""Start the output layer where the labels are: agreed label statistics → initial head.

An MLP's head starts near zero, but pIC50 labels sit near 6 and logS near −3, and Tox21's assays
are 3–15 % positive. Gradient steps (Adam's ~lr per step, or DP-SGD's clipped ones) then spend
many rounds just moving the bias. Given the consortium's pooled label statistics — sums the sites
release once, before training (:mod:`fedpharma.server.label_statistics`) — the head starts at
them: regression bias = mean and weights scaled by the standard deviation; classification bias =
logit of the positive rate. Nothing else changes: this is an initialization, not a transform.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedpharma.core.dataset import TargetScaling
from fedpharma.core.errors import ConfigError
from fedpharma.core.params import Parameters

HEAD_WEIGHT = "head.weight"
HEAD_BIAS = "head.bias"


def calibrate_output_layer(
    params: Parameters,
    task: str,
    mean: npt.NDArray[np.float64],
    std: npt.NDArray[np.float64],
) -> Parameters:
    """``params`` with the head set from per-task label ``mean`` (and ``std`` for regression).

    A task without labels anywhere (NaN statistics) keeps its initial head row. A network
    without a layer named ``head`` (a plugin's choice) is a :class:`ConfigError`.
    """
    if not has_head(params):
        raise ConfigError(
            [
                f"the output layer is set from label statistics by name: this network has no "
                f"layer named `head` ({HEAD_WEIGHT} and {HEAD_BIAS}); name its output layer "
                "`head`, or give no [model] label_mean"
            ]
        )
    named = params.to_dict()
    bias = named[HEAD_BIAS].astype(np.float64)
    weight = named[HEAD_WEIGHT].astype(np.float64)
    known = np.isfinite(mean)
    if task == "regression":
        bias[known] = mean[known]
        scale = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        weight *= scale[:, None]
    else:
        rate = np.clip(mean, 1e-3, 1 - 1e-3)
        bias[known] = np.log(rate[known] / (1 - rate[known]))
    named[HEAD_BIAS] = bias.astype(params.arrays[params.names.index(HEAD_BIAS)].dtype)
    named[HEAD_WEIGHT] = weight.astype(params.arrays[params.names.index(HEAD_WEIGHT)].dtype)
    return Parameters(params.names, tuple(named[name] for name in params.names))


def fold_target_scaling(params: Parameters, targets: TargetScaling) -> Parameters:
    """``params`` of a model trained on standardized regression targets, with the mapping back
    (``center + scale * output``) folded into its output layer: the head's rows times ``scale``,
    its bias ``center + scale * bias``. The folded model's outputs are in label units exactly,
    so an exported bundle needs no separate label transform."""
    named = params.to_dict()
    center = np.asarray(targets.center, dtype=np.float64)
    scale = np.asarray(targets.scale, dtype=np.float64)
    weight = named[HEAD_WEIGHT].astype(np.float64)
    bias = named[HEAD_BIAS].astype(np.float64)
    if bias.shape != center.shape:
        raise ValueError(f"the model has {bias.shape[0]} outputs; the scaling {center.shape[0]}")
    named[HEAD_WEIGHT] = (weight * scale[:, None]).astype(np.float32)
    named[HEAD_BIAS] = (center + scale * bias).astype(np.float32)
    return Parameters(params.names, tuple(named[name] for name in params.names))


def has_head(params: Parameters) -> bool:
    """Whether ``params`` hold an output layer named ``head`` (weight and bias)."""
    return {HEAD_WEIGHT, HEAD_BIAS} <= set(params.names)
