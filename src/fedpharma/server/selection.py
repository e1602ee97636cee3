"""The federated model's best round, chosen on the sites' pooled validation metric.

Each site reports its validation-fold metrics beside its test metrics (``validation_`` prefix,
:mod:`fedpharma.site.runtime`); the strategy aggregates them like every other metric
(:meth:`~fedpharma.strategy.Strategy.aggregate_evaluate`: the test-size-weighted mean over the
sites). :class:`BestRound` observes the rounds and keeps the parameters of the round whose pooled
validation metric is best, under the same rule as the local and centralized references
(:class:`~fedpharma.evaluation.selection.BestCheckpoint`). A site whose policy refuses
evaluation (``require_dp``) reports no validation metric either; with no round scored, nothing is
selected and the run's model is its last round's.
"""

from __future__ import annotations

from fedpharma.core.params import Parameters
from fedpharma.evaluation.selection import VALIDATION_PREFIX, BestCheckpoint, Checkpoint
from fedpharma.server.round import RoundRecord


class BestRound:
    """Keeps the round with the best pooled ``validation_<metric>``; ``patience`` as in
    :class:`BestCheckpoint` (the Federation stops once it is exhausted)."""

    def __init__(self, metric: str, higher_is_better: bool, patience: int = 0) -> None:
        self.key = VALIDATION_PREFIX + metric
        self.rule: BestCheckpoint[Parameters] = BestCheckpoint(higher_is_better, patience)

    def on_round(self, record: RoundRecord) -> None:
        if record.evaluate_metrics:
            self.rule.offer(record.round, record.evaluate_metrics.get(self.key), record.parameters)

    @property
    def chosen(self) -> Checkpoint[Parameters] | None:
        """The best round so far (round, pooled validation score, parameters); None if no round
        has been scored."""
        return self.rule.best

    @property
    def exhausted(self) -> bool:
        return self.rule.exhausted
