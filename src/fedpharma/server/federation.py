"""The Federation: the one round loop, over any :class:`~fedpharma.core.protocol.Channel`.

A simulation and a deployed coordinator each build one
(:func:`fedpharma.server.plan.build_federation`) and run it. Per round: wait for enough sites
(where the channel can wait) → select a seeded fraction → configure each site's train task (the
strategy's settings, the aggregator's and the secure collector's) → exchange → validate the
replies → each update's agreed weight (:mod:`fedpharma.server.influence`) → the round's mean
update Δ̄, in the clear by the :class:`UpdateAggregator` (FedAvg's weighted mean, a robust rule,
site-level DP's noisy clipped mean) or by the :class:`MeanCollector` of secure aggregation
→ the strategy's server step → evaluation → the strategy's state and the checkpoint
→ observers. A round below ``min_sites`` is retried ``retries`` times before the run stops.
Every round's randomness is a function of the run seed and the round number, and the strategy's
state is checkpointed with the model, so a run resumed from its store (:meth:`Federation.resume`)
ends with exactly the model of an uninterrupted one.

Over 400 lines on purpose: the one round loop and the protocols of its collaborators, kept
together so the loop reads in one place.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedpharma.core import params as params_codec
from fedpharma.core.errors import RoundFailed
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    Channel,
    EvaluateResult,
    EvaluateTask,
    LocalTraining,
    PluginIdentity,
    RecordDP,
    Refusal,
    SecureReply,
    SecureSettings,
    SiteDP,
    Task,
    TrainResult,
    TrainSettings,
    TrainTask,
)
from fedpharma.server.influence import AgreedWeights
from fedpharma.server.round import (
    AttemptFailed,
    Rejected,
    RoundObserver,
    RoundRecord,
    merge_failures,
    site_seed,
    sort_replies,
)
from fedpharma.server.selection import BestRound
from fedpharma.strategy import NO_STATE, SampleWeightedMean, SiteUpdate, Strategy


class UpdateAggregator(Protocol):
    """How the sites' updates of a round, with their agreed weights, become one Δ̄ in the clear.

    The default is FedAvg's sample-weighted mean; a robust rule (``fedpharma.strategy.robust``)
    or site-level DP's clipping and noise (``fedpharma.server.dp``, whose ``task_settings``
    tell the sites C and σ) replace it.
    """

    def task_settings(self, rnd: int) -> SiteDP | None: ...

    def mean_update(self, rnd: int, updates: Sequence[SiteUpdate]) -> Parameters: ...


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

    def task_settings(self, rnd: int, n_sites: int) -> SecureSettings: ...

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
        on_rejected: Rejected | None = None,
    ) -> SecureMeanResult: ...


class Checkpoints(Protocol):
    """Where a run's rounds, models and strategy state are kept (the run store)."""

    def on_round(self, record: RoundRecord) -> None: ...

    def latest_checkpoint(self) -> tuple[int, Parameters] | None: ...

    def save_server_state(self, rnd: int, state: bytes) -> None: ...

    def server_state(self, rnd: int) -> bytes | None: ...

    def record_attempt(self, rnd: int, attempt: int, reasons: Mapping[str, str]) -> None: ...


WaitForSites = Callable[[int, float | None], Sequence[str]]
"""``wait(count, seconds)``: wait until ``count`` sites are available or the time is up; return
the available sites (a deployed channel can wait; an in-process one has all its sites at once)."""


@dataclass(frozen=True)
class FederationSettings:
    """How the rounds run, independent of the aggregation rule."""

    local_epochs: int = 1
    fraction_fit: float = 1.0
    min_sites: int = 1
    evaluate_every: int = 1  # 0: evaluate only after the last round
    timeout: float | None = None  # seconds each exchange waits for the sites' answers
    seed: int = 0
    record_dp: RecordDP | None = None  # DP-SGD at every site
    plugin: PluginIdentity | None = None  # the model plugin code every site must run
    wait_for_sites: float | None = None  # seconds to wait for min_sites before a round
    retries: int = 0  # how often a failed round is tried again before the run stops
    max_site_examples: int = 1_000_000  # the largest example count (weight) a site may declare


def _quiet(_: str) -> None:
    return None


class Federation:
    """Runs rounds of ``strategy`` with its collaborators.

    ``aggregator`` computes the mean update in the clear (FedAvg's weighted mean by default);
    ``collector``, if given, computes it by secure aggregation instead. ``store`` receives every
    completed round (after the strategy's state) and is where :meth:`resume` reads from.
    ``prepare`` turns the initial model into the first round's, once enough sites are there (the
    output layer's calibration). ``observers`` see every completed round; ``on_status`` gets one
    line per wait and retry; ``on_rejected`` each reply the round loop rejects after the
    channel accepted it (e.g. an update that does not fit the model, or a weight above the
    site's declared count), in every phase of a secure round too. ``selection``, if given,
    keeps the round with the best pooled validation metric (:attr:`BestRound.chosen`) and stops
    the run once its patience is spent.
    """

    def __init__(
        self,
        strategy: Strategy,
        settings: FederationSettings,
        *,
        aggregator: UpdateAggregator | None = None,
        collector: MeanCollector | None = None,
        store: Checkpoints | None = None,
        observers: Sequence[RoundObserver] = (),
        prepare: Callable[[Parameters], Parameters] | None = None,
        on_status: Callable[[str], None] = _quiet,
        on_rejected: Rejected | None = None,
        selection: BestRound | None = None,
    ) -> None:
        self.strategy = strategy
        self.settings = settings
        self.aggregator: UpdateAggregator = aggregator or SampleWeightedMean()
        self.collector = collector
        self.store = store
        self.observers = tuple(observers)
        self.prepare = prepare
        self.say = on_status
        self.on_rejected = on_rejected
        self.selection = selection
        self._declines_evaluation: set[str] = set()
        self.weights = AgreedWeights(settings.max_site_examples)

    # ----- the run ---------------------------------------------------------------------------

    def resume(self, initial: Parameters) -> tuple[int, Parameters]:
        """The last completed round and its model from the store, the strategy's state put back;
        ``(0, initial)`` when no round completed."""
        checkpoint = None if self.store is None else self.store.latest_checkpoint()
        if self.store is None or checkpoint is None:
            return 0, initial
        completed, parameters = checkpoint
        parameters.check_matches(initial, "checkpoint")
        blob = self.store.server_state(completed)
        self.strategy.load_state(NO_STATE if blob is None else params_codec.decode(blob))
        return completed, parameters

    def run(
        self,
        channel: Channel,
        initial: Parameters,
        rounds: int,
        *,
        run_id: str,
        first_round: int = 1,
        wait_for_sites: WaitForSites | None = None,
    ) -> Parameters:
        """Rounds ``first_round`` … ``rounds`` from ``initial``; the final parameters.

        Raises :class:`RoundFailed` once a round has failed ``retries + 1`` times in a row.
        """
        parameters, prepared, failures = initial, first_round > 1, 0
        rnd = first_round
        while rnd <= rounds:
            reason = self._too_few_sites(channel, rnd, wait_for_sites)
            if reason is None:
                if not prepared and self.prepare is not None:
                    parameters = self.prepare(parameters)
                prepared = True
                try:
                    parameters = self.round(channel, parameters, rnd, rounds, run_id)
                    rnd, failures = rnd + 1, 0
                    if self.selection is not None and self.selection.exhausted:
                        self.say(f"early stop after round {rnd - 1}: {self._chosen_line()}")
                        break
                    continue
                except RoundFailed as exc:
                    reason, why = str(exc), _attempt_reasons(exc)
            else:
                why = {"": reason}
            failures += 1
            if self.store is not None:
                self.store.record_attempt(rnd, failures, why)
            if failures > self.settings.retries:
                retries = self.settings.retries
                raise RoundFailed(
                    f"stopped: {reason}" + (f"; gave up after {retries} retries" if retries else "")
                )
            self.say(f"{reason}; retry {failures} of {self.settings.retries}")
        return parameters

    def _too_few_sites(
        self, channel: Channel, rnd: int, wait_for_sites: WaitForSites | None
    ) -> str | None:
        """Wait for ``min_sites`` where the channel can; why the round cannot start, if so."""
        needed = self.settings.min_sites
        if wait_for_sites is None:
            return None  # nobody can come later: the round itself reports too few sites
        connected = channel.available_sites()
        if len(connected) >= needed:
            return None
        self.say(
            f"waiting for sites: {len(connected)} of {needed} needed admitted"
            + (f" ({', '.join(connected)})" if connected else "")
        )
        connected = tuple(wait_for_sites(needed, self.settings.wait_for_sites))
        if len(connected) >= needed:
            return None
        return (
            f"round {rnd}: only {len(connected)} of the {needed} site(s) needed "
            f"connected and admitted within {self.settings.wait_for_sites or 0:g} s"
        )

    def round(
        self, channel: Channel, parameters: Parameters, rnd: int, rounds: int, run_id: str
    ) -> Parameters:
        """One round: train, aggregate, evaluate when due, checkpoint, tell the observers."""
        started = time.perf_counter()
        parameters, train, contributors, refusals, failures = self._train_round(
            channel, parameters, rnd, run_id
        )
        evaluate: dict[str, EvaluateResult] = {}
        every = self.settings.evaluate_every
        if rnd == rounds or (every > 0 and rnd % every == 0):
            evaluate, eval_refusals, eval_failures = self.evaluate(channel, parameters, rnd, run_id)
            refusals = eval_refusals | refusals  # a site's train refusal is the one to keep
            failures = merge_failures(failures, eval_failures)
        record = RoundRecord(
            rnd,
            parameters,
            train,
            evaluate,
            refusals,
            failures,
            time.perf_counter() - started,
            contributors,
            self.strategy.aggregate_evaluate(rnd, list(evaluate.values())) if evaluate else {},
        )
        if self.store is not None:
            state = self.strategy.state()
            if state.names:  # before the checkpoint: see RunStore.save_server_state
                self.store.save_server_state(rnd, params_codec.encode(state))
            self.store.on_round(record)
        if self.selection is not None:
            self.selection.on_round(record)
        for observer in self.observers:
            observer.on_round(record)
        return parameters

    def _chosen_line(self) -> str:
        chosen = self.selection.chosen if self.selection is not None else None
        if chosen is None:
            return "no round scored on validation"
        return f"best round {chosen.step} (pooled validation score {chosen.score:.4g})"

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
        secure = (
            self.collector.task_settings(rnd, len(sites)) if self.collector is not None else None
        )
        sent = self.strategy.train_parameters(rnd, parameters)
        tasks: dict[str, Task] = {
            site: TrainTask(
                run_id,
                rnd,
                sent,
                dataclasses.replace(self.train_settings(rnd, site), secure=secure),
            )
            for site in sites
        }
        replies = channel.exchange(tasks, self.settings.timeout)
        results, refusals, failures = sort_replies(tasks, replies, self.on_rejected)
        if self.collector is not None:
            advertised = {s: r for s, r in results.items() if isinstance(r, SecureReply)}
            self._require_sites(rnd, len(advertised), len(sites), refusals, failures)
            try:
                outcome = self.collector.collect(
                    channel,
                    advertised,
                    sent,
                    n_sites=len(sites),
                    rnd=rnd,
                    run_id=run_id,
                    timeout=self.settings.timeout,
                    on_rejected=self.on_rejected,
                )
            except RoundFailed as exc:  # keep the first phase's reasons with the later ones'
                later = exc.failures if isinstance(exc, AttemptFailed) else {}
                raise AttemptFailed(str(exc), failures | later, refusals) from exc
            failures |= outcome.failures
            self._require_sites(rnd, len(outcome.contributors), len(sites), refusals, failures)
            new = self.strategy.aggregate_train(rnd, parameters, outcome.mean)
            return new, {}, outcome.contributors, refusals, failures
        train = {site: r for site, r in results.items() if isinstance(r, TrainResult)}
        updates, rejected = self.weights.weigh(rnd, train)
        failures |= rejected
        for site, reason in rejected.items():
            if self.on_rejected is not None:
                self.on_rejected(site, rnd, reason.removeprefix("rejected: "))
        train = {site: r for site, r in train.items() if site not in rejected}
        self._require_sites(rnd, len(train), len(sites), refusals, failures)
        mean = self.aggregator.mean_update(rnd, updates)
        new = self.strategy.aggregate_train(rnd, parameters, mean)
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
            # Sites that give the same reason (e.g. every budget exhausted alike) share one line.
            failed = _by_reason({s: why for s, why in failures.items()})
            refused = _by_reason({s: r.reason for s, r in refusals.items()})
            reasons = "; ".join(
                [f"{', '.join(sites)}: {why}" for why, sites in failed]
                + [f"{', '.join(sites)} refused: {why}" for why, sites in refused]
            )
            raise AttemptFailed(
                f"round {rnd}: {count} of {selected} site(s) returned an update, "
                f"at least {self.settings.min_sites} needed ({reasons or 'no reason given'})",
                failures,
                refusals,
            )

    def evaluate(
        self, channel: Channel, parameters: Parameters, rnd: int, run_id: str
    ) -> tuple[dict[str, EvaluateResult], dict[str, Refusal], dict[str, str]]:
        """Ask every available site to evaluate ``parameters`` on its held-out data. A site whose
        policy refused (e.g. ``require_dp``: metrics are an uncharged release) is recorded once
        and not asked again in this run."""
        chosen = self.strategy.configure_evaluate(rnd, channel.available_sites())
        sites = [site for site in chosen if site not in self._declines_evaluation]
        tasks: dict[str, Task] = {site: EvaluateTask(run_id, rnd, parameters) for site in sites}
        replies = channel.exchange(tasks, self.settings.timeout) if tasks else {}
        results, refusals, failures = sort_replies(tasks, replies, self.on_rejected)
        self._declines_evaluation |= {s for s, r in refusals.items() if r.kind == "policy"}
        evaluate = {s: r for s, r in results.items() if isinstance(r, EvaluateResult)}
        return evaluate, refusals, failures

    # ----- what each site is asked -------------------------------------------------------------

    def select_sites(self, available: Sequence[str], rnd: int) -> list[str]:
        """A seeded random fraction of the available sites (all of them by default)."""
        count = max(self.settings.min_sites, math.ceil(self.settings.fraction_fit * len(available)))
        if count >= len(available):
            return sorted(available)
        rng = np.random.default_rng([self.settings.seed, rnd])
        return sorted(rng.choice(sorted(available), size=count, replace=False).tolist())

    def train_settings(self, rnd: int, site: str) -> TrainSettings:
        """``site``'s training settings in round ``rnd``, without those of secure aggregation:
        the strategy's local training (epochs, the site's own seed, μ), record-level DP and the
        aggregator's site-level DP."""
        local = LocalTraining(self.settings.local_epochs, site_seed(self.settings.seed, rnd, site))
        return TrainSettings(
            local=self.strategy.configure_train(rnd, local),
            record_dp=self.settings.record_dp,
            site_dp=self.aggregator.task_settings(rnd),
            plugin=self.settings.plugin,
        )


def _attempt_reasons(exc: RoundFailed) -> dict[str, str]:
    """Each site's reason for a failed attempt, or the round's own where no site gave one."""
    if not isinstance(exc, AttemptFailed) or not (exc.failures or exc.refusals):
        return {"": str(exc)}
    refused = {site: f"refused ({r.kind}): {r.reason}" for site, r in exc.refusals.items()}
    return refused | exc.failures


def _by_reason(reasons: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    """(reason, the sites that gave it), in the order of each reason's first site by name."""
    grouped: dict[str, list[str]] = {}
    for site in sorted(reasons):
        grouped.setdefault(reasons[site], []).append(site)
    return list(grouped.items())
