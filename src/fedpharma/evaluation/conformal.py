"""Inductive conformal prediction on a held-out calibration fold, for one task at a time.

Inductive (split) conformal prediction (Vovk, Gammerman & Shafer 2005, "Algorithmic Learning in
a Random World", §4.1; Papadopoulos et al. 2002): nonconformity scores of a calibration fold the
model never trained on give p-values whose prediction sets contain the true label with
probability ≥ 1 − ε on exchangeable data. For classification the calibration is Mondrian,
per class (Vovk et al. §4.5), so the guarantee holds within each class — what an imbalanced
activity task needs. MELLODDY (Heyndrickx et al. 2023, J. Chem. Inf. Model.) reported
*efficiency*: the share of compounds whose prediction set is a single class. For regression the
interval is ŷ ± the calibration residuals' (1 − ε) conformal quantile; its width is the cost.
Each partner calibrates on its own fold, so nothing leaves it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class MondrianClassifier:
    """Class-conditional conformal predictor of a binary task from class-1 probabilities.

    Nonconformity of label c for an example with probability p: 1 − p for c = 1, p for c = 0.
    ``scores[c]`` holds the calibration examples of class c, scored for their own class.
    """

    scores: tuple[FloatArray, FloatArray]

    @classmethod
    def calibrate(cls, labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> MondrianClassifier:
        """Calibrate on 0/1 ``labels`` (NaN: missing, skipped) and the model's probabilities."""
        y = np.asarray(labels, dtype=np.float64)
        p = np.asarray(probabilities, dtype=np.float64)
        observed = ~np.isnan(y)
        y, p = y[observed], p[observed]
        return cls((np.sort(p[y == 0]), np.sort(1.0 - p[y == 1])))

    @property
    def calibrated(self) -> bool:
        """True when both classes have calibration examples (p-values are defined)."""
        return all(s.size for s in self.scores)

    def p_values(self, probabilities: npt.ArrayLike) -> FloatArray:
        """n × 2 p-values: (#{calibration scores of class c ≥ the example's} + 1) / (n_c + 1)."""
        p = np.asarray(probabilities, dtype=np.float64)
        out = np.empty((p.size, 2))
        for c, example in enumerate((p, 1.0 - p)):
            calibration = self.scores[c]
            at_least = calibration.size - np.searchsorted(calibration, example, side="left")
            out[:, c] = (at_least + 1) / (calibration.size + 1)
        return out

    def prediction_sets(self, probabilities: npt.ArrayLike, error_rate: float) -> BoolArray:
        """n × 2: label c is in an example's set when its p-value exceeds ``error_rate``."""
        _check_rate(error_rate)
        return self.p_values(probabilities) > error_rate


@dataclass(frozen=True)
class IntervalRegressor:
    """Conformal intervals ŷ ± q from the calibration fold's absolute residuals."""

    residuals: FloatArray

    @classmethod
    def calibrate(cls, labels: npt.ArrayLike, predictions: npt.ArrayLike) -> IntervalRegressor:
        y = np.asarray(labels, dtype=np.float64)
        observed = ~np.isnan(y)
        return cls(np.sort(np.abs(y[observed] - np.asarray(predictions, np.float64)[observed])))

    def half_width(self, error_rate: float) -> float:
        """The ⌈(n + 1)(1 − ε)⌉-th smallest residual; infinite when n is too small for ε."""
        _check_rate(error_rate)
        rank = math.ceil((self.residuals.size + 1) * (1.0 - error_rate))
        return math.inf if rank > self.residuals.size else float(self.residuals[rank - 1])


def efficiency(sets: BoolArray) -> float:
    """The share of prediction sets holding exactly one label (MELLODDY's efficiency)."""
    return float(np.mean(sets.sum(axis=1) == 1)) if len(sets) else math.nan


def coverage(sets: BoolArray, labels: npt.ArrayLike) -> float:
    """The share of examples whose true 0/1 label is in their prediction set."""
    y = np.asarray(labels).astype(int)
    return float(np.mean(sets[np.arange(y.size), y])) if y.size else math.nan


def _check_rate(error_rate: float) -> None:
    if not 0.0 < error_rate < 1.0:
        raise ValueError(f"the error rate must lie strictly between 0 and 1, got {error_rate}")
