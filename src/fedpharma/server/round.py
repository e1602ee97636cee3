"""What one round is made of: its record for observers, validated replies, per-site seeds."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedpharma.core.errors import ProtocolError, RoundFailed
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import EvaluateResult, Failure, Refusal, Reply, Task, TrainResult
from fedpharma.core.protocol.messages import validate_reply
from fedpharma.strategy.aggregate import weighted_mean_metrics


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
    # The strategy's aggregate of the evaluation results (Strategy.aggregate_evaluate).
    evaluate_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def train_metrics(self) -> dict[str, float]:
        results = list(self.train_results.values())
        return weighted_mean_metrics([r.metrics for r in results], [r.n_examples for r in results])


class AttemptFailed(RoundFailed):
    """A round attempt that failed, with each site's reason: the round leaves no record, so the
    run store keeps these for the attempt (:meth:`~fedpharma.server.store.RunStore.record_attempt`)
    whether the round is retried or the run stops."""

    def __init__(
        self,
        message: str,
        failures: Mapping[str, str],
        refusals: Mapping[str, Refusal] | None = None,
    ) -> None:
        super().__init__(message)
        self.failures = dict(failures)
        self.refusals = dict(refusals or {})


class RoundObserver(Protocol):
    def on_round(self, record: RoundRecord) -> None: ...


def site_seed(run_seed: int, rnd: int, site: str) -> int:
    """A reproducible 31-bit seed for one site's local training in one round."""
    entropy = [run_seed, rnd, zlib.crc32(site.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


Rejected = Callable[[str, int, str], None]
"""Told ``(site, round, reason)`` of each reply the round loop rejects after the channel took
it (the deployed coordinator audits it as ``result_rejected``)."""


def sort_replies(
    tasks: Mapping[str, Task],
    replies: Mapping[str, Reply | Failure],
    on_rejected: Rejected | None = None,
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
            if on_rejected is not None:
                on_rejected(site, task.round, str(exc))
            continue
        if isinstance(checked, Refusal):
            refusals[site] = checked
        else:
            results[site] = checked
    return results, refusals, failures


def merge_failures(train: Mapping[str, str], evaluate: Mapping[str, str]) -> dict[str, str]:
    """A round's failure reasons per site, keeping both when a site failed to train and to
    evaluate (neither overwrites the other)."""
    merged = dict(evaluate)
    for site, reason in train.items():
        merged[site] = f"{reason}; evaluate: {evaluate[site]}" if site in evaluate else reason
    return merged
