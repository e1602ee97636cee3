"""Aggregation maths as small pure functions over flat float64 vectors.

Each is tested against an independent oracle (``np.average`` and hand-written recurrences).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float64]


def weighted_average(
    arrays: Sequence[npt.NDArray[np.floating]], weights: Sequence[float]
) -> Vector:
    """Σ_k w_k x_k / Σ_k w_k — FedAvg's sample-weighted mean (McMahan et al. 2017, Alg. 1).

    Works on arrays of any (equal) shape; accumulates in float64 whatever the input dtype.
    """
    if not arrays:
        raise ValueError("cannot average zero arrays")
    total = float(np.sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    out = np.zeros(arrays[0].shape, dtype=np.float64)
    for array, weight in zip(arrays, weights, strict=True):
        out += array * (weight / total)
    return out


def weighted_mean_metrics(
    metrics: Sequence[dict[str, float]], weights: Sequence[float]
) -> dict[str, float]:
    """Per metric name, the weighted mean over the sites that reported it."""
    names = sorted({name for m in metrics for name in m})
    out = {}
    for name in names:
        pairs = [(m[name], w) for m, w in zip(metrics, weights, strict=True) if name in m]
        values, ws = zip(*pairs, strict=True)
        if sum(ws) > 0:
            out[name] = float(np.average(values, weights=ws))
    return out


@dataclass(frozen=True)
class MomentState:
    """First and second moment estimates of the server optimizer (Reddi et al. 2021, Alg. 2)."""

    m: Vector
    v: Vector

    @classmethod
    def zeros(cls, size: int, tau: float) -> MomentState:
        # Reddi et al. initialise v_0 ≥ τ²; we use τ² so the first step is well scaled.
        return cls(np.zeros(size), np.full(size, tau**2))


def fedopt_step(
    weights: Vector,
    pseudo_gradient: Vector,
    state: MomentState,
    *,
    variant: str,
    eta: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[Vector, MomentState]:
    """One adaptive server step: FedAdagrad, FedAdam or FedYogi (Reddi et al. 2021, Alg. 2).

    ``pseudo_gradient`` is the averaged client update Δ_t (a descent direction, so it is
    *added*): m_t = β1 m + (1−β1) Δ; v_t per variant; x_{t+1} = x_t + η m_t / (√v_t + τ).
    """
    delta_sq = pseudo_gradient**2
    m = beta1 * state.m + (1.0 - beta1) * pseudo_gradient
    if variant == "adagrad":
        v = state.v + delta_sq
    elif variant == "adam":
        v = beta2 * state.v + (1.0 - beta2) * delta_sq
    elif variant == "yogi":
        v = state.v - (1.0 - beta2) * delta_sq * np.sign(state.v - delta_sq)
    else:
        raise ValueError(f"unknown FedOpt variant {variant!r}")
    return weights + eta * m / (np.sqrt(v) + tau), MomentState(m, v)
