"""Run a configured experiment end to end in one process.

About 440 lines, one job: the simulation's single pipeline; each step's own logic already lives
in its module (partition, federation, cross-evaluation, audit, privacy), this file only wires them.

Steps: load the dataset → partition it into sites (seeded) → each site splits its own data into
train / held-out test by scaffold → federated training through the same coordinator loop and site
runtime a deployment uses, over the in-process channel → the two references a consortium compares
against: each site's local-only model and a centralized model on the pooled data (which no real
consortium can train) → every model evaluated on every site's test set and on the pooled test set
→ the cross-site matrix (:mod:`fedpharma.sim.cross_evaluation`) and the membership-inference
audit (:mod:`fedpharma.sim.audit`) → ``run.sqlite`` + ``summary.json`` in the run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedpharma.core.config import RunConfig
from fedpharma.core.dataset import Dataset, Objective, SiteData
from fedpharma.core.params import Parameters
from fedpharma.evaluation.metrics import PRIMARY_METRIC, compute_metrics
from fedpharma.models.base import Trainer
from fedpharma.models.factory import build_trainer
from fedpharma.report.summary import (
    MODELS,
    SUMMARY_FORMAT,
    Curves,
    DatasetInfo,
    Metric,
    Partner,
    RunSummary,
    Timings,
    write_summary,
)
from fedpharma.secure.ckks import create_secret_context
from fedpharma.server.join import JoinGate, JoinLog, expected_preprocessing
from fedpharma.server.label_statistics import calibrated_start
from fedpharma.server.plan import build_federation
from fedpharma.server.round import RoundRecord, site_seed
from fedpharma.server.store import RunStore
from fedpharma.sim.audit import audit_privacy
from fedpharma.sim.backends import open_sites
from fedpharma.sim.cross_evaluation import cross_evaluate
from fedpharma.sim.privacy import PrivacyRecorder
from fedpharma.sim.sites import Simulation, build_site_runtimes, prepare_sites, site_trainers

Predictions = dict[str, dict[str, npt.NDArray[np.float64]]]
"""``predictions[model][site]``: a model's outputs on that site's test set (rows × tasks)."""


@dataclass(frozen=True)
class SimulationResult:
    """What a simulation wrote (``run_dir``, its ``summary``), its final federated model, and
    every compared model's test-set predictions, kept in memory only (e.g. for a benchmark's
    confidence intervals)."""

    run_dir: Path
    summary: RunSummary
    parameters: Parameters
    predictions: Predictions


def simulate(
    config: RunConfig,
    run_dir: Path,
    *,
    on_round: Callable[[RoundRecord, int], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    prepared: Simulation | None = None,
) -> SimulationResult:
    """Run ``config`` and write its run directory; return the summary it wrote.

    ``prepared`` reuses sites made by :func:`prepare_sites` (with the same data, partition and
    seed settings), e.g. to compare strategies on identical sites without reloading data.
    """
    say = on_status or (lambda _msg: None)
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    sim = prepared or prepare_sites(config)
    say(_describe_sites(sim))
    trainer = build_trainer(config, sim.dataset)
    initial = trainer.initial_parameters(config.seed)

    store = RunStore.create(run_dir / "run.sqlite", run_id, config.to_dict(), durable=False)
    curves = CurveRecorder(sim.dataset.task)
    privacy = PrivacyRecorder()
    observers: list[Any] = [privacy, curves]
    if on_round is not None:
        observers.append(_Callback(on_round, config.rounds))
    # CKKS in simulation: a fresh consortium key; the coordinator gets only its public context.
    ckks_key = create_secret_context() if config.secure.mode == "ckks" else None
    trainers = site_trainers(config, sim, trainer)
    # [simulation] backend: here, in worker processes or on Ray actors (those load their own).
    local = config.simulation.backend == "sequential"
    runtimes = build_site_runtimes(config, sim, trainers, run_dir, ckks_key) if local else None
    backend = contextlib.ExitStack()
    sites = backend.enter_context(open_sites(config, list(sim.sites), run_dir, runtimes))
    # As in deployment, only sites whose preprocessing matches the recipe's take part.
    channel = JoinGate(
        sites, run_id, expected_preprocessing(config), on_outcome=JoinLog(store, say)
    )
    federation = build_federation(
        config,
        planned_sites=len(sim.sites),
        noise_rng=np.random.default_rng([config.seed, 0xD9]),
        ckks_context=ckks_key.public_context() if ckks_key is not None else None,
        store=store,
        observers=observers,
    )
    # All simulated sites are there from the start: calibrate once, before the federation and
    # the references, which all start from the same model.
    with backend:
        initial, how = calibrated_start(
            config, channel, run_id, initial, sim.dataset.task, sim.dataset.n_tasks
        )
        say(how)
        fed_started = time.perf_counter()
        final = federation.run(channel, initial, config.rounds, run_id=run_id)
        federated_seconds = time.perf_counter() - fed_started

    models: dict[str, dict[str, Parameters] | Parameters] = {"federated": final}
    predictors = {"federated": trainers}
    baseline_started = time.perf_counter()
    if config.baselines:
        say(
            "training the references: local-only per site"
            + ("" if config.model.private_heads else " and centralized on pooled data")
        )
        baselines, baseline_predictors = train_baselines(config, sim, trainer, initial)
        models |= baselines
        predictors |= baseline_predictors
    baseline_seconds = time.perf_counter() - baseline_started

    predictions = predict_tests(models, predictors, sim.sites)
    comparison = compare_models(predictions, sim.sites)
    for model, by_site in comparison.items():
        for site, metrics in by_site.items():
            store.record_comparison(model, site, metrics)
    cross_site = cross_evaluate(config, models, predictors, comparison, sim.sites, store)
    store.close()
    audit = None
    if config.privacy_audit:
        say("privacy audit: membership inference on the final model and each site's raw update")
        audit = audit_privacy(
            config,
            sim.sites,
            trainers,
            federation,
            lambda recipe, folder: build_site_runtimes(recipe, sim, trainers, folder),
            run_id=run_id,
            reference=initial,
            final=final,
            rng=np.random.default_rng([config.seed, 0xA0D1]),
        )
    summary = dataclasses.replace(
        build_summary(config, run_id, sim, comparison, curves.curves()),
        timings=Timings(time.perf_counter() - started, federated_seconds, baseline_seconds),
        privacy=privacy.summary(config)
        if config.privacy.enabled or config.site_policy.require_dp
        else None,
        privacy_audit=audit,
        cross_evaluation=cross_site,
    )
    write_summary(summary, run_dir)
    return SimulationResult(run_dir, summary, final, predictions)


def train_baselines(
    config: RunConfig, sim: Simulation, trainer: Trainer, initial: Parameters
) -> tuple[dict[str, dict[str, Parameters] | Parameters], dict[str, dict[str, Trainer]]]:
    """Local-only models and a centralized model, each given as many epochs as federated training.

    Every site runs ``rounds × local_epochs`` epochs in the federation, so each reference gets the
    same number of passes over its own data. Returns the models and, per model and site, the
    trainer that applies it. With private heads each local-only model is a fresh trunk and head
    of its own, and there is no pooled model: the partners' tasks differ, so no single head
    could be trained on the pooled data.
    """
    epochs = config.rounds * config.training.local_epochs
    local_trainers = site_trainers(config, sim, trainer)
    local = {
        name: local_trainers[name]
        .fit(initial, data.train, epochs=epochs, seed=site_seed(config.seed, 0, name))
        .parameters
        for name, data in sim.sites.items()
    }
    if config.model.private_heads:
        return {"local": local}, {"local": local_trainers}
    pooled = concatenate([data.train for data in sim.sites.values()], "pooled")
    central = trainer.fit(initial, pooled, epochs=epochs, seed=config.seed).parameters
    predictors = {"local": local_trainers, "centralized": dict.fromkeys(sim.sites, trainer)}
    return {"local": local, "centralized": central}, predictors


def predict_tests(
    models: dict[str, dict[str, Parameters] | Parameters],
    predictors: dict[str, dict[str, Trainer]],
    sites: dict[str, SiteData],
) -> Predictions:
    """Each model's predictions on each site's test set; ``predictors[model][site]`` applies
    the model at the site, and a per-site model family (local-only) is applied at its own site."""
    return {
        model: {
            name: np.asarray(
                predictors[model][name].predict(
                    params[name] if isinstance(params, dict) else params, data.test
                ),
                dtype=np.float64,
            )
            for name, data in sites.items()
        }
        for model, params in models.items()
    }


def compare_models(
    predictions: Predictions, sites: dict[str, SiteData]
) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics of each model on each site's test set and, where every site has the same tasks,
    on the pooled test set (each site's predictions on its own test set, concatenated)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    same_tasks = len({data.test.task_names for data in sites.values()}) == 1
    for model, by_site_predictions in predictions.items():
        by_site = {
            name: compute_metrics(data.test.task, data.test.labels, by_site_predictions[name])
            for name, data in sites.items()
        }
        if same_tasks:
            task = next(iter(sites.values())).test.task
            labels = np.concatenate([data.test.labels for data in sites.values()])
            pooled_predictions = np.concatenate([by_site_predictions[name] for name in sites])
            by_site["pooled"] = compute_metrics(task, labels, pooled_predictions)
        out[model] = by_site
    return out


def concatenate(parts: list[Dataset], name: str) -> Dataset:
    first = parts[0]
    return Dataset(
        features=np.concatenate([p.features for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        task=first.task,
        task_names=first.task_names,
        groups=np.concatenate([p.groups for p in parts]),
        name=name,
        feature_names=first.feature_names,
    )


class CurveRecorder:
    """Learning curves: per round, train loss and each site's primary test metric."""

    def __init__(self, task: Objective) -> None:
        self.metric = PRIMARY_METRIC[task][0]
        self.rounds: list[int] = []
        self.train_loss: list[float | None] = []
        self.pooled: list[float | None] = []
        self.sites: dict[str, list[float | None]] = {}

    def on_round(self, record: RoundRecord) -> None:
        if not record.evaluate_results:
            return
        self.rounds.append(record.round)
        self.train_loss.append(record.train_metrics.get("train_loss"))
        self.pooled.append(record.evaluate_metrics.get(self.metric))
        for site, result in record.evaluate_results.items():
            series = self.sites.setdefault(site, [None] * (len(self.rounds) - 1))
            series.append(result.metrics.get(self.metric))

    def curves(self) -> Curves:
        return Curves(
            rounds=tuple(self.rounds),
            train_loss=tuple(self.train_loss),
            pooled=tuple(self.pooled),
            sites={site: tuple(series) for site, series in self.sites.items()},
        )


class _Callback:
    def __init__(self, fn: Callable[[RoundRecord, int], None], rounds: int) -> None:
        self.fn, self.rounds = fn, rounds

    def on_round(self, record: RoundRecord) -> None:
        self.fn(record, self.rounds)


def build_summary(
    config: RunConfig,
    run_id: str,
    sim: Simulation,
    comparison: dict[str, dict[str, dict[str, float]]],
    curves: Curves,
) -> RunSummary:
    """The run's summary without its optional sections (timings, privacy, audit, matrix)."""
    task = sim.dataset.task
    metric, higher_is_better = PRIMARY_METRIC[task]

    def entry(site: str, n_train: int | None, n_test: int) -> Partner:
        found = {m: comparison[m].get(site) if m in comparison else None for m in MODELS}
        values = {m: _json_float(r.get(metric)) if r else None for m, r in found.items()}
        details = {
            m: {k: _json_float(v) for k, v in r.items()} if r else None for m, r in found.items()
        }
        return Partner(n_train, n_test, **values, metrics=details)

    sites = {name: entry(name, len(data.train), len(data.test)) for name, data in sim.sites.items()}
    pooled = entry("pooled", None, sum(len(d.test) for d in sim.sites.values()))
    name = config.dataset.name or Path(config.dataset.path or "").name
    return RunSummary(
        format=SUMMARY_FORMAT,
        run_id=run_id,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        title=f"{name} · {len(sim.sites)} sites · {config.strategy.name}",
        dataset=DatasetInfo(
            name=name,
            task=task,
            task_names=tuple(sim.dataset.task_names),
            n_rows=len(sim.dataset),
            invalid_molecules=sim.invalid_molecules,
        ),
        metric=Metric(metric, higher_is_better),
        strategy=config.strategy.name,
        rounds=config.rounds,
        sites=sites,
        pooled=pooled,
        curves=curves,
        config=config.to_dict(),
    )


def _json_float(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _describe_sites(sim: Simulation) -> str:
    sizes = ", ".join(f"{n}: {len(d.train)}+{len(d.test)}" for n, d in sim.sites.items())
    dropped = (
        f"; {sim.invalid_molecules} invalid molecule(s) excluded" if sim.invalid_molecules else ""
    )
    return f"{len(sim.dataset)} records → {len(sim.sites)} sites (train+test) {sizes}{dropped}"
