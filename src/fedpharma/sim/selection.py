"""Model selection in a simulation: every model kind chosen by the same validation rule.

With ``[evaluation] validation_fraction`` > 0 each site holds out a scaffold-split validation
fold. The federated model is the round with the best pooled validation metric
(:class:`~fedpharma.server.selection.BestRound`); the local-only and centralized references are
trained in steps of ``local_epochs`` epochs — one federated round's worth — and checkpointed
after each step under the same :class:`~fedpharma.evaluation.selection.BestCheckpoint` rule,
metric, aggregation and patience: a local model on its own site's fold, the centralized model on
every site's fold, pooled by the strategy's ``aggregate_evaluate`` like the federated one.
Without a validation fold every model is the one after its last round or epoch, as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from fedpharma.core.config import RunConfig
from fedpharma.core.dataset import Dataset, Objective, SiteData
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import EvaluateResult
from fedpharma.evaluation.metrics import PRIMARY_METRIC, compute_metrics
from fedpharma.evaluation.selection import VALIDATION_PREFIX, BestCheckpoint
from fedpharma.models.base import Trainer
from fedpharma.models.private_head import PrivateHeadTrainer
from fedpharma.report.summary import Selection
from fedpharma.server.round import RoundRecord, site_seed
from fedpharma.server.selection import BestRound
from fedpharma.strategy import Strategy

Model = tuple[Parameters, Parameters | None]
"""A checkpoint: the parameters and, for a private-head trainer, its head at that step."""


def round_selection(config: RunConfig, task: Objective) -> BestRound | None:
    """The federated model's selection rule, or None without a validation fold."""
    if config.evaluation.validation_fraction <= 0:
        return None
    metric, higher_is_better = PRIMARY_METRIC[task]
    return BestRound(metric, higher_is_better, config.evaluation.patience)


class HeadsOfBestRound:
    """Round observer for private heads: keeps each site's head of the best round so far, so the
    selected trunk is applied with the heads it was trained with (:meth:`restore`)."""

    def __init__(self, selection: BestRound, trainers: Mapping[str, Trainer]) -> None:
        self.selection = selection
        self.trainers = {n: t for n, t in trainers.items() if isinstance(t, PrivateHeadTrainer)}
        self.heads: dict[str, Parameters] = {}

    def on_round(self, record: RoundRecord) -> None:
        chosen = self.selection.chosen
        if chosen is not None and chosen.step == record.round:
            self.heads = {name: trainer.head for name, trainer in self.trainers.items()}

    def restore(self) -> None:
        for name, head in self.heads.items():
            self.trainers[name].restore_head(head)


def fit_reference(
    config: RunConfig,
    strategy: Strategy,
    trainer: Trainer,
    initial: Parameters,
    data: Dataset,
    judges: Mapping[str, SiteData],
    *,
    seed: int,
    label: str,
) -> tuple[Parameters, int | None]:
    """A local or centralized reference trained on ``data``; with a validation fold, selected
    on the pooled validation metric of the sites in ``judges``. Returns the model and the
    number of epochs it was selected at (None without selection)."""
    epochs = config.rounds * config.training.local_epochs
    if config.evaluation.validation_fraction <= 0:
        return trainer.fit(initial, data, epochs=epochs, seed=seed).parameters, None
    metric, higher_is_better = PRIMARY_METRIC[data.task]
    rule: BestCheckpoint[Model] = BestCheckpoint(higher_is_better, config.evaluation.patience)
    parameters = initial
    for step in range(1, config.rounds + 1):
        parameters = trainer.fit(
            parameters,
            data,
            epochs=config.training.local_epochs,
            seed=site_seed(seed, step, label),
        ).parameters
        score = pooled_validation(strategy, trainer, parameters, judges).get(
            VALIDATION_PREFIX + metric
        )
        head = trainer.head if isinstance(trainer, PrivateHeadTrainer) else None
        rule.offer(step, score, (parameters, head))
        if rule.exhausted:
            break
    if rule.best is None:
        return parameters, None
    best, head = rule.best.model
    if head is not None and isinstance(trainer, PrivateHeadTrainer):
        trainer.restore_head(head)
    return best, rule.best.step * config.training.local_epochs


def pooled_validation(
    strategy: Strategy, trainer: Trainer, parameters: Parameters, sites: Mapping[str, SiteData]
) -> dict[str, float]:
    """The validation metrics of ``parameters`` at each site, aggregated as the federation
    aggregates the sites' evaluation results (weighted by test size)."""
    results = []
    for name, site in sites.items():
        fold = site.validation
        if fold is None or not len(fold):
            continue
        found = compute_metrics(fold.task, fold.dense_labels(), trainer.predict(parameters, fold))
        metrics = {VALIDATION_PREFIX + k: v for k, v in found.items() if math.isfinite(v)}
        results.append(EvaluateResult("", 0, name, len(site.test), metrics))
    return strategy.aggregate_evaluate(0, results) if results else {}


def selection_summary(
    config: RunConfig,
    task: Objective,
    federated_round: int | None,
    epochs: Mapping[str, int | None],
) -> Selection | None:
    """What was selected, for ``summary.json``; None without a validation fold."""
    if config.evaluation.validation_fraction <= 0:
        return None
    return Selection(
        metric=VALIDATION_PREFIX + PRIMARY_METRIC[task][0],
        validation_fraction=config.evaluation.validation_fraction,
        patience=config.evaluation.patience,
        federated_round=federated_round,
        centralized_epochs=epochs.get("centralized"),
        local_epochs={n: e for n, e in epochs.items() if n != "centralized"},
    )
