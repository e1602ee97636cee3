"""Robust aggregation rules for plaintext rounds: what a minority of poisoning sites can move.

Each rule turns the sites' updates into the round's Δ̄ in place of FedAvg's weighted mean, so it
composes with every :class:`~fedpharma.strategy.base.Strategy` (FedAvg, FedProx, FedOpt's server
optimizer steps on the robust Δ̄):

- norm bounding (Sun et al. 2019, "Can You Really Backdoor Federated Learning?", §4): each Δ_k
  is scaled to ‖Δ_k‖₂ ≤ M before the rule below; a scaled update keeps at most M of length;
- coordinate-wise median and trimmed mean (Yin et al. 2018, "Byzantine-Robust Distributed
  Learning: Towards Optimal Statistical Rates", §3): per coordinate, the median, or the mean
  after dropping the f largest and f smallest values;
- Multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
  Gradient Descent", §4): score each Δ_i by the summed squared distances to its n − f − 2
  nearest neighbours, average the m best-scored (with their agreed weights).

``f`` (``[robust] byzantine``) is how many hostile sites a rule must tolerate. A rule needs the
individual updates, so it cannot run under secure aggregation (refused at config validation,
:func:`fedpharma.core.config.cross_check`). docs/robust-aggregation.md has the details.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedpharma.core.config import RobustConfig
from fedpharma.core.errors import RoundFailed
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import SiteDP
from fedpharma.strategy.base import SampleWeightedMean, SiteUpdate, weighted_mean

Matrix = npt.NDArray[np.float64]
Vector = npt.NDArray[np.float64]


# ----- the maths, on a (sites × coordinates) matrix ---------------------------------------------


def bound_norm(vector: Vector, bound: float) -> Vector:
    """``vector`` scaled down to ‖·‖₂ ≤ ``bound`` (unchanged if already within)."""
    norm = float(np.linalg.norm(vector))
    return vector if norm <= bound else vector * (bound / norm)


def coordinate_median(updates: Matrix) -> Vector:
    """The median of each coordinate over the rows (Yin et al. 2018, Def. 1)."""
    return np.asarray(np.median(updates, axis=0), dtype=np.float64)


def trimmed_mean(updates: Matrix, trim: int) -> Vector:
    """Per coordinate, the mean after dropping the ``trim`` largest and ``trim`` smallest values
    (Yin et al. 2018, Def. 2, with β = trim / n)."""
    n = updates.shape[0]
    if n <= 2 * trim:
        raise ValueError(f"trimming {trim} from each end needs more than {2 * trim} updates")
    ordered = np.sort(updates, axis=0)
    return np.asarray(ordered[trim : n - trim].mean(axis=0), dtype=np.float64)


def krum_scores(updates: Matrix, byzantine: int) -> Vector:
    """Each row's sum of squared distances to its n − f − 2 nearest other rows (Blanchard et
    al. 2017, §4)."""
    n = updates.shape[0]
    neighbours = n - byzantine - 2
    if neighbours < 1:
        raise ValueError(f"Krum with f = {byzantine} needs at least {byzantine + 3} updates")
    squared = np.sum(updates**2, axis=1)
    distances = squared[:, None] + squared[None, :] - 2.0 * updates @ updates.T
    np.fill_diagonal(distances, np.inf)
    nearest = np.sort(np.maximum(distances, 0.0), axis=1)[:, :neighbours]
    return np.asarray(nearest.sum(axis=1), dtype=np.float64)


def multi_krum_selection(updates: Matrix, byzantine: int, select: int) -> list[int]:
    """The rows of the ``select`` lowest Krum scores, in row order (ties: the lower row)."""
    scores = krum_scores(updates, byzantine)
    chosen = np.argsort(scores, kind="stable")[:select]
    return sorted(int(i) for i in chosen)


# ----- the rules, as update aggregators ---------------------------------------------------------


def minimum_updates(rule: str, byzantine: int) -> int:
    """The fewest updates ``rule`` needs to tolerate ``byzantine`` hostile ones."""
    if rule == "multi_krum":
        return 2 * byzantine + 3
    if rule in ("median", "trimmed_mean"):
        return 2 * byzantine + 1
    return 1


class RobustRule:
    """An :class:`~fedpharma.server.federation.UpdateAggregator` that applies one rule of this
    module to the round's updates (in the clear), after optional norm bounding."""

    def __init__(
        self,
        rule: str,
        *,
        byzantine: int = 1,
        norm_bound: float | None = None,
        krum_select: int | None = None,
    ) -> None:
        self.rule = rule
        self.byzantine = byzantine
        self.norm_bound = norm_bound
        self.krum_select = krum_select

    def task_settings(self, rnd: int) -> SiteDP | None:
        return None

    def mean_update(self, rnd: int, updates: Sequence[SiteUpdate]) -> Parameters:
        needed = minimum_updates(self.rule, self.byzantine)
        if len(updates) < needed:
            raise RoundFailed(
                f"round {rnd}: {self.rule} tolerating {self.byzantine} hostile site(s) needs at "
                f"least {needed} updates, {len(updates)} arrived"
            )
        template = updates[0].update
        matrix = np.stack([u.update.flatten() for u in updates])
        if self.norm_bound is not None:
            matrix = np.stack([bound_norm(row, self.norm_bound) for row in matrix])
        if self.rule == "median":
            return template.unflatten(coordinate_median(matrix))
        if self.rule == "trimmed_mean":
            return template.unflatten(trimmed_mean(matrix, self.byzantine))
        bounded = [
            SiteUpdate(u.site, template.unflatten(row), u.weight)
            for u, row in zip(updates, matrix, strict=True)
        ]
        if self.rule == "multi_krum":
            select = self.krum_select or len(updates) - self.byzantine
            chosen = multi_krum_selection(matrix, self.byzantine, min(select, len(updates)))
            bounded = [bounded[i] for i in chosen]
        return weighted_mean(bounded)


def build_rule(config: RobustConfig) -> SampleWeightedMean | RobustRule:
    """The aggregation rule ``[robust]`` names: FedAvg's weighted mean unless a rule or a norm
    bound is set."""
    if config.rule == "mean" and config.norm_bound is None:
        return SampleWeightedMean()
    return RobustRule(
        config.rule,
        byzantine=config.byzantine,
        norm_bound=config.norm_bound,
        krum_select=config.krum_select,
    )
