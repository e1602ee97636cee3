"""Run a configured experiment end to end in one process.

About 470 lines, one job: the simulation's single pipeline; each step's own logic already lives
in its module (partition, federation, cross-evaluation, audit, privacy), this file only wires them.

Steps: load the dataset → partition it into sites (seeded) → each site splits its own data into
train / held-out test by scaffold → federated training through the same coordinator loop and site
runtime a deployment uses, over the in-process channel → the two references a consortium compares
against: each site's local-only model and a centralized model on the pooled data (which no real
consortium can train) → every model evaluated on every site's test set, pooled over the sites
as the federation pools its evaluation results → the cross-site matrix
(:mod:`fedpharma.sim.cross_evaluation`) and the membership-inference audit
(:mod:`fedpharma.sim.audit`) → ``run.sqlite`` + ``summary.json`` in the run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
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
from fedpharma.core.dataset import Dataset, Objective, SiteData, concatenate_rows
from fedpharma.core.errors import ConfigError
from fedpharma.core.params import Parameters
from fedpharma.data.datasets import featurizes_molecules
from fedpharma.evaluation.metrics import PRIMARY_METRIC, compute_metrics
from fedpharma.evaluation.selection import VALIDATION_PREFIX
from fedpharma.models.base import Trainer
from fedpharma.models.factory import build_trainer
from fedpharma.report.summary import (
    MODELS,
    SUMMARY_FORMAT,
    Curves,
    DatasetInfo,
    Metric,
    Partner,
    RoundActivity,
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
from fedpharma.sim.intervals import headline_intervals
from fedpharma.sim.overlap import chemical_overlap
from fedpharma.sim.privacy import PrivacyRecorder
from fedpharma.sim.selection import (
    HeadsOfBestRound,
    fit_reference,
    round_selection,
    selection_summary,
)
from fedpharma.sim.sites import Simulation, build_site_runtimes, prepare_sites, site_trainers
from fedpharma.sim.tabular import is_tabular_file, preprocess_sites
from fedpharma.sim.task_results import label_distributions, pooled_task_results
from fedpharma.site.checkpoint import SiteModelKeeper
from fedpharma.site.runtime import SiteRuntime
from fedpharma.strategy import Strategy
from fedpharma.strategy.aggregate import weighted_mean_metrics

Models = dict[str, dict[str, Parameters] | Parameters]
"""``models[model]``: one model, or one per site (the local-only family)."""

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
    adversary: Callable[[dict[str, SiteRuntime]], dict[str, SiteRuntime]] | None = None,
) -> SimulationResult:
    """Run ``config`` and write its run directory; return the summary it wrote.

    ``prepared`` reuses sites made by :func:`prepare_sites` (with the same data, partition and
    seed settings), e.g. to compare strategies on identical sites without reloading data.
    ``adversary``, for robustness experiments, may replace site runtimes before the run
    (:func:`fedpharma.sim.poisoning.poison`).
    """
    say = on_status or (lambda _msg: None)
    started = time.perf_counter()
    sim = prepared or prepare_sites(config)  # bad data fails before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    if sim.import_summary:
        say(f"import: {sim.import_summary}")
    say(_describe_sites(sim))
    # CKKS in simulation: a fresh consortium key; the coordinator gets only its public context.
    ckks_key = create_secret_context() if config.secure.mode == "ckks" else None
    if is_tabular_file(config):
        site_data, dataset, fitted = preprocess_sites(
            config, sim.sites, sim.dataset, run_dir, run_id, say, ckks_key
        )
        sim = Simulation(site_data, dataset, sim.invalid_molecules, targets=fitted.target_scaling)
    trainer = build_trainer(config, sim.dataset, targets=sim.targets)
    initial = trainer.initial_parameters(config.seed)

    store = RunStore.create(run_dir / "run.sqlite", run_id, config.to_dict(), durable=False)
    curves = CurveRecorder(sim.dataset.task)
    privacy = PrivacyRecorder()
    observers: list[Any] = [privacy, curves]
    if on_round is not None:
        observers.append(_Callback(on_round, config.rounds))
    trainers = site_trainers(config, sim, trainer)
    # [simulation] backend: here, in worker processes or on Ray actors (those load their own).
    local = config.simulation.backend == "sequential"
    if adversary is not None and not local:
        raise ConfigError(
            ["an adversary replaces site runtimes in this process: use the sequential backend"],
            "simulate",
        )
    runtimes = build_site_runtimes(config, sim, trainers, run_dir, ckks_key) if local else {}
    hosted = runtimes if adversary is None else adversary(runtimes)
    backend = contextlib.ExitStack()
    sites = backend.enter_context(
        open_sites(config, list(sim.sites), run_dir, hosted if local else None)
    )
    # As in deployment, only sites whose preprocessing matches the recipe's take part.
    channel = JoinGate(
        sites, run_id, expected_preprocessing(config), on_outcome=JoinLog(store, say)
    )
    selection = round_selection(config, sim.dataset.task)
    heads = HeadsOfBestRound(selection, trainers) if selection is not None else None
    if heads is not None:
        observers.append(heads)
    federation = build_federation(
        config,
        planned_sites=len(sim.sites),
        noise_rng=np.random.default_rng([config.seed, 0xD9]),
        ckks_context=ckks_key.public_context() if ckks_key is not None else None,
        store=store,
        observers=observers,
        selection=selection,
    )
    # All simulated sites are there from the start: calibrate once, before the federation and
    # the references, which all start from the same model.
    with backend:
        initial, how = calibrated_start(
            config,
            channel,
            run_id,
            initial,
            sim.dataset.task,
            sim.dataset.n_tasks,
            targets=sim.targets,
        )
        say(how)
        fed_started = time.perf_counter()
        final = federation.run(channel, initial, config.rounds, run_id=run_id)
        federated_seconds = time.perf_counter() - fed_started
    chosen_round = None
    if selection is not None and selection.chosen is not None:
        chosen_round, final = selection.chosen.step, selection.chosen.model
        if heads is not None:
            heads.restore()  # private heads: those trained with the chosen trunk
        say(f"model selection: federated model of round {chosen_round} (best pooled validation)")
    if config.model.private_heads:  # as a deployed site does: only the partner holds its head
        keep_site_models(config, run_id, runtimes, final, run_dir, privacy)

    models: dict[str, dict[str, Parameters] | Parameters] = {"federated": final}
    predictors = {"federated": trainers}
    baseline_started = time.perf_counter()
    chosen_epochs: dict[str, int | None] = {}
    if config.baselines:
        say(
            "training the references: local-only per site"
            + ("" if config.model.private_heads else " and centralized on pooled data")
        )
        baselines, baseline_predictors, chosen_epochs = train_baselines(
            config, sim, trainer, initial, federation.strategy
        )
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
        activity=curves.round_activity(len(sim.sites)),
        tasks=pooled_task_results(predictions["federated"], sim.sites),
        label_distributions=label_distributions(sim.sites),
        selection=selection_summary(config, sim.dataset.task, chosen_round, chosen_epochs),
        intervals=headline_intervals(predictions, sim.sites, config.seed),
        chemical_overlap=chemical_overlap(sim.sites)
        if featurizes_molecules(config.dataset.name, config.dataset.kind)
        else {},
    )
    write_summary(summary, run_dir)
    return SimulationResult(run_dir, summary, final, predictions)


def keep_site_models(
    config: RunConfig,
    run_id: str,
    runtimes: dict[str, SiteRuntime],
    final: Parameters,
    run_dir: Path,
    privacy: PrivacyRecorder,
) -> None:
    """Each simulated site keeps its final model (shared trunk + its own head) in its folder
    ``run_dir/sites/NAME``, for ``fedpharma export --site-state``."""
    spent = privacy.summary(config).final
    for name, runtime in runtimes.items():
        preprocessing = "" if runtime.preprocessing is None else runtime.preprocessing.to_json()
        keeper = SiteModelKeeper(run_dir / "sites" / name, name, config.to_dict(), preprocessing)
        train = runtime.data.train
        epsilon: dict[str, float] = {
            rel: v for rel, v in spent.get(name, {}).items() if v is not None
        }
        model = runtime.whole_model(final)
        keeper.keep(run_id, config.rounds, train.task, train.task_names, model, epsilon)


def train_baselines(
    config: RunConfig, sim: Simulation, trainer: Trainer, initial: Parameters, strategy: Strategy
) -> tuple[Models, dict[str, dict[str, Trainer]], dict[str, int | None]]:
    """Local-only models and a centralized model, each given as many epochs as federated training.

    Every site runs ``rounds × local_epochs`` epochs in the federation, so each reference gets the
    same number of passes over its own data — and, with a validation fold, is selected by the
    federated model's rule (:func:`fedpharma.sim.selection.fit_reference`). Returns the models,
    per model and site the trainer that applies it, and the epochs each was selected at. With
    private heads each local-only model is a fresh trunk and head of its own, and there is no
    pooled model: the partners' tasks differ, so no single head could be trained on the pooled
    data.
    """
    local_trainers = site_trainers(config, sim, trainer)
    local: dict[str, Parameters] = {}
    chosen: dict[str, int | None] = {}
    for name, data in sim.sites.items():
        local[name], chosen[name] = fit_reference(
            config,
            strategy,
            local_trainers[name],
            initial,
            data.train,
            {name: data},
            seed=site_seed(config.seed, 0, name),
            label=name,
        )
    if config.model.private_heads:
        return {"local": local}, {"local": local_trainers}, chosen
    pooled = concatenate([data.train for data in sim.sites.values()], "pooled")
    central, chosen["centralized"] = fit_reference(
        config, strategy, trainer, initial, pooled, sim.sites, seed=config.seed, label="centralized"
    )
    predictors = {"local": local_trainers, "centralized": dict.fromkeys(sim.sites, trainer)}
    return {"local": local, "centralized": central}, predictors, chosen


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
    ``pooled``: the test-size-weighted mean of the sites' metrics — the rule the federation
    aggregates the sites' evaluation results by (the learning curve's pooled value), so the
    pooled score of a model always lies between its sites' scores.

    Not a metric of the concatenated test sets: with sparse multitask labels that macro-average
    runs over every task of any site, and the tasks with a few test labels in all (rarely
    measured targets, the hardest) weigh far more there than at any one site — on ChEMBL at
    10 sites it put the pooled RMSE (1.20) above every site's (0.97–1.11).
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    same_tasks = len({data.test.task_names for data in sites.values()}) == 1
    sizes = [len(data.test) for data in sites.values()]
    for model, by_site_predictions in predictions.items():
        by_site = {
            name: compute_metrics(
                data.test.task, data.test.dense_labels(), by_site_predictions[name]
            )
            for name, data in sites.items()
        }
        if same_tasks:
            defined = [{k: v for k, v in m.items() if math.isfinite(v)} for m in by_site.values()]
            by_site["pooled"] = weighted_mean_metrics(defined, sizes)
        out[model] = by_site
    return out


def concatenate(parts: list[Dataset], name: str) -> Dataset:
    first = parts[0]
    return Dataset(
        features=concatenate_rows([p.features for p in parts]),
        labels=concatenate_rows([p.labels for p in parts]),
        task=first.task,
        task_names=first.task_names,
        groups=np.concatenate([p.groups for p in parts]),
        name=name,
        feature_names=first.feature_names,
        smiles=sum((p.smiles for p in parts), ()) if all(p.smiles for p in parts) else (),
    )


class CurveRecorder:
    """Learning curves: per round, train loss and each site's primary test metric."""

    def __init__(self, task: Objective) -> None:
        self.metric = PRIMARY_METRIC[task][0]
        self.rounds: list[int] = []
        self.train_loss: list[float | None] = []
        self.pooled: list[float | None] = []
        self.validation: list[float | None] = []
        self.sites: dict[str, list[float | None]] = {}
        self.activity: list[tuple[int, float, int]] = []

    def on_round(self, record: RoundRecord) -> None:
        self.activity.append((record.round, record.seconds, len(record.contributors)))
        if not record.evaluate_results:
            return
        self.rounds.append(record.round)
        self.train_loss.append(record.train_metrics.get("train_loss"))
        self.pooled.append(record.evaluate_metrics.get(self.metric))
        self.validation.append(record.evaluate_metrics.get(VALIDATION_PREFIX + self.metric))
        for site, result in record.evaluate_results.items():
            series = self.sites.setdefault(site, [None] * (len(self.rounds) - 1))
            series.append(result.metrics.get(self.metric))

    def curves(self) -> Curves:
        return Curves(
            rounds=tuple(self.rounds),
            train_loss=tuple(self.train_loss),
            pooled=tuple(self.pooled),
            sites={site: tuple(series) for site, series in self.sites.items()},
            validation=tuple(self.validation) if any(map(_present, self.validation)) else (),
        )

    def round_activity(self, planned_sites: int) -> RoundActivity:
        """Each round's seconds and number of aggregated updates."""
        return RoundActivity(
            rounds=tuple(r for r, _, _ in self.activity),
            seconds=tuple(s for _, s, _ in self.activity),
            participants=tuple(n for _, _, n in self.activity),
            planned_sites=planned_sites,
        )


def _present(value: float | None) -> bool:
    return value is not None


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
        config=_applicable(config, task),
    )


def _applicable(config: RunConfig, task: Objective) -> dict[str, Any]:
    """The config as the report shows it: only the tables that apply to this run's data
    (no chemistry settings for a tabular run, no tabular data checks or feature-sum noise for
    molecules, no class weights for regression)."""
    shown = config.to_dict()
    if featurizes_molecules(config.dataset.name, config.dataset.kind):
        shown.pop("data_checks")
    else:
        shown.pop("features")
        if not is_tabular_file(config):
            shown.pop("data_checks")
    if not is_tabular_file(config):
        shown["privacy"].pop("statistics_noise_multiplier", None)
    if task == "regression":
        shown["training"].pop("class_weight", None)
    return shown


def _json_float(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _describe_sites(sim: Simulation) -> str:
    sizes = ", ".join(f"{n}: {len(d.train)}+{len(d.test)}" for n, d in sim.sites.items())
    dropped = (
        f"; {sim.invalid_molecules} invalid molecule(s) excluded" if sim.invalid_molecules else ""
    )
    return f"{len(sim.dataset)} records → {len(sim.sites)} sites (train+test) {sizes}{dropped}"
