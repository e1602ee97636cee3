"""The Strategy base class owns the round loop (a template method, as in Flower).

A concrete strategy only *configures* what each site is asked to do and *aggregates* what comes
back; selection, validation of replies, minimum-participation checks, evaluation and reporting to
observers live here once. The loop talks to sites only through a
:class:`~fedpharma.protocol.Channel`, so the same code runs in simulation and deployment.
"""

from __future__ import annotations

import math
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedpharma.errors import ProtocolError, RoundFailed
from fedpharma.params import Parameters
from fedpharma.protocol import (
    Channel,
    EvaluateResult,
    EvaluateTask,
    Failure,
    Refusal,
    Reply,
    SecureReply,
    Task,
    TrainResult,
    TrainTask,
)
from fedpharma.protocol.messages import Scalar, validate_reply
from fedpharma.strategy.aggregate import weighted_average, weighted_mean_metrics


@dataclass(frozen=True)
class RoundRecord:
    """Everything that happened in one round, handed to observers (store, progress display)."""

    round: int
    parameters: Parameters
    train_results: dict[str, TrainResult]
    evaluate_results: dict[str, EvaluateResult]
    refusals: dict[str, Refusal] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    # The sites whose update is in the new parameters (under secure aggregation the coordinator
    # knows who contributed but holds no TrainResult of any of them).
    contributors: tuple[str, ...] = ()

    @property
    def train_metrics(self) -> dict[str, float]:
        results = list(self.train_results.values())
        return weighted_mean_metrics([r.metrics for r in results], [r.n_examples for r in results])

    @property
    def evaluate_metrics(self) -> dict[str, float]:
        """Test metrics averaged over sites, weighted by each site's number of test examples."""
        results = list(self.evaluate_results.values())
        return weighted_mean_metrics([r.metrics for r in results], [r.n_examples for r in results])


class RoundObserver(Protocol):
    def on_round(self, record: RoundRecord) -> None: ...


class UpdateAggregator(Protocol):
    """How the sites' updates of a round become one mean update Δ̄ for the server optimizer.

    The default is FedAvg's sample-weighted mean; site-level DP replaces it with clipping and
    noise (``fedpharma.server.dp``). ``task_settings`` adds what sites must know (e.g. C, σ).
    """

    def task_settings(self, rnd: int) -> dict[str, Scalar]: ...

    def mean_update(self, rnd: int, results: Sequence[TrainResult]) -> Parameters: ...


class SecureMeanResult(Protocol):
    """The outcome of a secure round: only the mean update and who is in it are revealed."""

    @property
    def mean(self) -> Parameters: ...

    @property
    def contributors(self) -> tuple[str, ...]: ...

    @property
    def failures(self) -> dict[str, str]: ...


class MeanCollector(Protocol):
    """Collects a round's mean update without the coordinator seeing any single update: secure
    aggregation by pairwise masks or CKKS (``fedpharma.server.secure``). The train tasks carry
    ``task_settings``; the sites answer them with :class:`SecureReply` messages, and ``collect``
    runs the remaining phases over the channel."""

    def task_settings(self, rnd: int, n_sites: int) -> dict[str, Scalar]: ...

    def collect(
        self,
        channel: Channel,
        advertisements: Mapping[str, SecureReply],
        template: Parameters,
        *,
        n_sites: int,
        rnd: int,
        run_id: str,
        timeout: float | None = None,
    ) -> SecureMeanResult: ...


@dataclass(frozen=True)
class LoopSettings:
    """How the round loop runs, independent of the aggregation rule."""

    local_epochs: int = 1
    fraction_fit: float = 1.0
    min_sites: int = 1
    evaluate_every: int = 1  # 0: evaluate only after the last round
    timeout: float | None = None
    seed: int = 0
    train_settings: dict[str, Scalar] = field(default_factory=dict)  # sent with every TrainTask


class Strategy(ABC):
    """Template: ``run`` → per round select → configure → exchange → validate → aggregate."""

    def __init__(
        self,
        settings: LoopSettings,
        aggregator: UpdateAggregator | None = None,
        collector: MeanCollector | None = None,
    ) -> None:
        self.settings = settings
        self.aggregator = aggregator or SampleWeightedMean()
        self.collector = collector

    # ----- the round loop (not to be overridden) -----------------------------------------------

    def run(
        self,
        channel: Channel,
        initial: Parameters,
        rounds: int,
        *,
        run_id: str,
        observers: Sequence[RoundObserver] = (),
        first_round: int = 1,
    ) -> Parameters:
        parameters = initial
        for rnd in range(first_round, rounds + 1):
            started = time.perf_counter()
            parameters, train, contributors, refusals, failures = self._train_round(
                channel, parameters, rnd, run_id
            )
            evaluate: dict[str, EvaluateResult] = {}
            every = self.settings.evaluate_every
            if rnd == rounds or (every > 0 and rnd % every == 0):
                evaluate, eval_refusals, eval_failures = self.evaluate(
                    channel, parameters, rnd, run_id
                )
                refusals |= eval_refusals
                failures |= eval_failures
            record = RoundRecord(
                rnd,
                parameters,
                train,
                evaluate,
                refusals,
                failures,
                time.perf_counter() - started,
                contributors,
            )
            for observer in observers:
                observer.on_round(record)
        return parameters

    def _train_round(
        self, channel: Channel, parameters: Parameters, rnd: int, run_id: str
    ) -> tuple[
        Parameters, dict[str, TrainResult], tuple[str, ...], dict[str, Refusal], dict[str, str]
    ]:
        sites = self.select_sites(channel.available_sites(), rnd)
        if len(sites) < self.settings.min_sites:
            raise RoundFailed(
                f"round {rnd}: {len(sites)} site(s) available, at least "
                f"{self.settings.min_sites} needed; start more sites or lower min_sites"
            )
        secure = self.collector.task_settings(rnd, len(sites)) if self.collector is not None else {}
        tasks: dict[str, Task] = {
            site: TrainTask(run_id, rnd, parameters, self.configure_train(rnd, site) | secure)
            for site in sites
        }
        replies = channel.exchange(tasks, self.settings.timeout)
        results, refusals, failures = sort_replies(tasks, replies)
        if self.collector is not None:
            advertised = {s: r for s, r in results.items() if isinstance(r, SecureReply)}
            self._require_sites(rnd, len(advertised), len(sites), refusals, failures)
            outcome = self.collector.collect(
                channel,
                advertised,
                parameters,
                n_sites=len(sites),
                rnd=rnd,
                run_id=run_id,
                timeout=self.settings.timeout,
            )
            failures |= outcome.failures
            self._require_sites(rnd, len(outcome.contributors), len(sites), refusals, failures)
            new = self.apply_mean_update(rnd, parameters, outcome.mean)
            return new, {}, outcome.contributors, refusals, failures
        train = {site: r for site, r in results.items() if isinstance(r, TrainResult)}
        self._require_sites(rnd, len(train), len(sites), refusals, failures)
        ordered = [train[s] for s in sorted(train)]
        new = self.aggregate_train(rnd, parameters, ordered)
        return new, train, tuple(sorted(train)), refusals, failures

    def _require_sites(
        self,
        rnd: int,
        count: int,
        selected: int,
        refusals: Mapping[str, Refusal],
        failures: Mapping[str, str],
    ) -> None:
        if count < self.settings.min_sites:
            reasons = "; ".join(
                [f"{s}: {why}" for s, why in sorted(failures.items())]
                + [f"{s} refused: {r.reason}" for s, r in sorted(refusals.items())]
            )
            raise RoundFailed(
                f"round {rnd}: {count} of {selected} site(s) returned an update, "
                f"at least {self.settings.min_sites} needed ({reasons or 'no reason given'})"
            )

    def evaluate(
        self, channel: Channel, parameters: Parameters, rnd: int, run_id: str
    ) -> tuple[dict[str, EvaluateResult], dict[str, Refusal], dict[str, str]]:
        """Ask every available site to evaluate ``parameters`` on its held-out data."""
        tasks: dict[str, Task] = {
            site: EvaluateTask(run_id, rnd, parameters) for site in channel.available_sites()
        }
        replies = channel.exchange(tasks, self.settings.timeout)
        results, refusals, failures = sort_replies(tasks, replies)
        evaluate = {s: r for s, r in results.items() if isinstance(r, EvaluateResult)}
        return evaluate, refusals, failures

    # ----- what a strategy may customise -----------------------------------------------------

    def select_sites(self, available: Sequence[str], rnd: int) -> list[str]:
        """A seeded random fraction of the available sites (all of them by default)."""
        count = max(self.settings.min_sites, math.ceil(self.settings.fraction_fit * len(available)))
        if count >= len(available):
            return sorted(available)
        rng = np.random.default_rng([self.settings.seed, rnd])
        return sorted(rng.choice(sorted(available), size=count, replace=False).tolist())

    def configure_train(self, rnd: int, site: str) -> dict[str, Scalar]:
        """The per-site training configuration of round ``rnd``; strategies add their keys."""
        return (
            {"epochs": self.settings.local_epochs, "seed": site_seed(self.settings.seed, rnd, site)}
            | self.settings.train_settings
            | self.aggregator.task_settings(rnd)
        )

    @abstractmethod
    def aggregate_train(
        self, rnd: int, parameters: Parameters, results: Sequence[TrainResult]
    ) -> Parameters:
        """New global parameters from the current ones and the sites' validated updates."""

    def apply_mean_update(self, rnd: int, parameters: Parameters, mean: Parameters) -> Parameters:
        """New global parameters from a mean update Δ̄ computed elsewhere (securely)."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot apply a securely aggregated mean update"
        )


class SampleWeightedMean:
    """FedAvg's mean update Σ n_k Δ_k / Σ n_k (McMahan et al. 2017, Alg. 1)."""

    def task_settings(self, rnd: int) -> dict[str, Scalar]:
        return {}

    def mean_update(self, rnd: int, results: Sequence[TrainResult]) -> Parameters:
        weights = [r.n_examples for r in results]
        first = results[0].update
        return Parameters(
            first.names,
            tuple(
                weighted_average([r.update.arrays[i] for r in results], weights)
                for i in range(len(first))
            ),
        )


def site_seed(run_seed: int, rnd: int, site: str) -> int:
    """A reproducible 31-bit seed for one site's local training in one round."""
    entropy = [run_seed, rnd, zlib.crc32(site.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


def sort_replies(
    tasks: Mapping[str, Task], replies: Mapping[str, Reply | Failure]
) -> tuple[dict[str, Reply], dict[str, Refusal], dict[str, str]]:
    """Each site's reply validated against its task: (results, refusals, failure reasons)."""
    results: dict[str, Reply] = {}
    refusals: dict[str, Refusal] = {}
    failures: dict[str, str] = {}
    for site, task in tasks.items():
        reply = replies.get(site, Failure(site, "no reply"))
        if isinstance(reply, Failure):
            failures[site] = reply.reason
            continue
        try:
            checked = validate_reply(task, site, reply)
        except ProtocolError as exc:
            failures[site] = f"rejected: {exc}"
            continue
        if isinstance(checked, Refusal):
            refusals[site] = checked
        else:
            results[site] = checked
    return results, refusals, failures
