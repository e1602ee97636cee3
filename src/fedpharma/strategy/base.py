"""The Strategy interface: what a federated algorithm decides, and nothing of how rounds run.

As in Flower, a strategy only *configures* what each site is asked to do and *aggregates* what
comes back; it holds no loop and talks to no channel. The round loop (selection, exchange,
validation, secure collection, retries, resume) is :class:`fedpharma.server.federation.Federation`.
The round's mean update Δ̄ reaches :meth:`Strategy.aggregate_train` already computed — in the
clear by an aggregation rule over the sites' updates (:class:`SampleWeightedMean`, a robust
rule of :mod:`fedpharma.strategy.robust`, or site-level DP's clipped noisy mean) or by secure
aggregation — so every strategy composes with every rule and works in every mode.
``state`` / ``load_state`` carry what a strategy keeps between rounds (FedOpt's moments)
across a checkpoint; stateless strategies keep nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from fedpharma.core.errors import DataError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import EvaluateResult, LocalTraining, SiteDP
from fedpharma.strategy.aggregate import weighted_average, weighted_mean_metrics

NO_STATE = Parameters((), ())
"""The state of a strategy that keeps nothing between rounds."""


class Strategy(ABC):
    """configure → (the sites train) → aggregate, for training and evaluation."""

    def configure_train(self, rnd: int, local: LocalTraining) -> LocalTraining:
        """The local training each selected site runs in round ``rnd``: ``local`` (the run's
        epochs and the site's seed) with the strategy's own settings (e.g. FedProx's μ)."""
        return local

    def train_parameters(self, rnd: int, parameters: Parameters) -> Parameters:
        """What the train tasks of round ``rnd`` carry: the model, and whatever the strategy
        sends beside it (SCAFFOLD's control variate); the round's mean update has these names."""
        return parameters

    @abstractmethod
    def aggregate_train(self, rnd: int, parameters: Parameters, mean: Parameters) -> Parameters:
        """New global parameters from the current ones and the round's mean update Δ̄."""

    def configure_evaluate(self, rnd: int, available: Sequence[str]) -> list[str]:
        """The sites asked to evaluate round ``rnd``'s model (every available one by default)."""
        return list(available)

    def aggregate_evaluate(self, rnd: int, results: Sequence[EvaluateResult]) -> dict[str, float]:
        """Test metrics over sites, weighted by each site's number of test examples."""
        return weighted_mean_metrics([r.metrics for r in results], [r.n_examples for r in results])

    def state(self) -> Parameters:
        """What the strategy keeps between rounds, as named arrays (:data:`NO_STATE` if none)."""
        return NO_STATE

    def load_state(self, state: Parameters) -> None:
        """Put back what :meth:`state` returned (resume from a checkpoint)."""
        if state.names:
            raise DataError(
                f"{type(self).__name__} keeps no state between rounds, but the checkpoint "
                f"holds {', '.join(state.names)}; resume with the run's own recipe"
            )


@dataclass(frozen=True)
class SiteUpdate:
    """One site's update Δ_k with the weight the federation agreed for it (its declared example
    count, bounded by the recipe: ``fedpharma.server.influence``), never the reply's own claim."""

    site: str
    update: Parameters
    weight: float


class SampleWeightedMean:
    """FedAvg's mean update Σ n_k Δ_k / Σ n_k (McMahan et al. 2017, Alg. 1), n_k the agreed
    weights."""

    def task_settings(self, rnd: int) -> SiteDP | None:
        return None

    def mean_update(self, rnd: int, updates: Sequence[SiteUpdate]) -> Parameters:
        return weighted_mean(updates)


def weighted_mean(updates: Sequence[SiteUpdate]) -> Parameters:
    """Σ w_k Δ_k / Σ w_k, array by array, in the structure of the first update."""
    weights = [u.weight for u in updates]
    first = updates[0].update
    return Parameters(
        first.names,
        tuple(
            weighted_average([u.update.arrays[i] for u in updates], weights)
            for i in range(len(first))
        ),
    )
