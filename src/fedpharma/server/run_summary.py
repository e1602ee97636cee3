"""A run's summary from its run store alone, so a deployed run gets a report too.

A simulation writes ``summary.json`` itself; a deployed coordinator keeps only ``run.sqlite``
(rounds, per-site metrics the sites chose to send, refusals). :func:`summary_from_store` turns
that into the same :class:`~fedpharma.report.summary.RunSummary`: the federated model's final
metrics per site and pooled (test-size-weighted, like the simulation's), learning curves, the
time and participation of each round, the ε the sites reported, and the final model's per-task
results pooled from the counts the sites sent (:mod:`fedpharma.server.task_summary`) and the
chemical-space overlap's counts (:mod:`fedpharma.server.chemical_overlap`). There are
no local-only or centralized references in a deployment: no party holds the data to train them.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from fedpharma.core import serde
from fedpharma.core.config import RunConfig, config_from_dict
from fedpharma.core.dataset import Objective
from fedpharma.core.errors import DataError
from fedpharma.evaluation.metrics import PRIMARY_METRIC
from fedpharma.report.summary import (
    SUMMARY_FORMAT,
    ConsortiumOverlap,
    Curves,
    DatasetInfo,
    Metric,
    Partner,
    Privacy,
    Refusal,
    Relation,
    RoundActivity,
    RunSummary,
    TaskSummaryInfo,
    Timings,
)
from fedpharma.server.coordinator import STORE_FILE
from fedpharma.server.task_summary import (
    RESOLUTION,
    TaskSummaries,
    label_distributions_from_summaries,
    summaries_from_json,
    task_results_from_summaries,
)
from fedpharma.strategy.aggregate import weighted_mean_metrics

_RELATIONS: dict[str, Relation] = {"epsilon_record": "record", "epsilon_site": "site"}


def summary_from_store(run_dir: Path) -> RunSummary:
    """The summary of the run whose store is ``run_dir/run.sqlite``."""
    path = run_dir / STORE_FILE
    if not path.is_file():
        raise DataError(f"no summary.json or {STORE_FILE} in {run_dir}: not a run directory")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            run = db.execute("SELECT run_id, created, config FROM run").fetchone()
            rounds = db.execute("SELECT round, seconds, n_updates FROM rounds ORDER BY round")
            round_rows = rounds.fetchall()
            metrics = db.execute(
                "SELECT round, site, phase, name, value, n_examples FROM site_metrics "
                "ORDER BY round, site"
            ).fetchall()
            incidents = db.execute("SELECT round, site, kind, reason FROM incidents").fetchall()
            summaries = _task_summaries(db)
            overlap = _chemical_overlap(db, str(path))
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise DataError(f"cannot read run store {path}: {exc}") from exc
    if run is None:
        raise DataError(f"{path} records no run")
    config = config_from_dict(json.loads(run[2]), source=f"{path} recipe")
    classification = config.dataset.task == "classification" or config.dataset.name in (
        "breast-cancer",
    )
    task: Objective = "classification" if classification else "regression"
    metric, higher_is_better = PRIMARY_METRIC[task]

    evaluate: dict[int, dict[str, tuple[dict[str, float], int]]] = defaultdict(dict)
    train: dict[int, dict[str, tuple[dict[str, float], int]]] = defaultdict(dict)
    for rnd, site, phase, name, value, n in metrics:
        table = evaluate if phase == "evaluate" else train
        table[rnd].setdefault(site, ({}, int(n)))[0][name] = float(value)

    sites = sorted({site for by in evaluate.values() for site in by})
    final: dict[str, tuple[dict[str, float], int]] = {}
    for rnd in sorted(evaluate):
        final |= evaluate[rnd]  # each site's last evaluation
    partners = {
        site: Partner(
            n_test=final[site][1],
            federated=final[site][0].get(metric),
            metrics={"federated": dict(final[site][0])},
        )
        for site in sites
    }
    pooled_metrics = _pooled(list(final.values()))
    pooled = Partner(
        n_test=sum(n for _, n in final.values()) or None,
        federated=pooled_metrics.get(metric),
        metrics={"federated": pooled_metrics} if pooled_metrics else {},
    )
    seconds = {int(r): float(s) for r, s, _ in round_rows}
    participants = {int(r): int(n) for r, _, n in round_rows}
    curve_rounds = sorted(evaluate)
    curves = Curves(
        rounds=tuple(curve_rounds),
        train_loss=tuple(
            _pooled(list(train.get(r, {}).values())).get("train_loss") for r in curve_rounds
        ),
        pooled=tuple(_pooled(list(evaluate[r].values())).get(metric) for r in curve_rounds),
        sites={
            site: tuple(evaluate[r].get(site, ({}, 0))[0].get(metric) for r in curve_rounds)
            for site in sites
        },
    )
    activity = RoundActivity(
        rounds=tuple(sorted(seconds)),
        seconds=tuple(seconds[r] for r in sorted(seconds)),
        participants=tuple(participants[r] for r in sorted(seconds)),
    )
    name = config.dataset.name or Path(config.dataset.path or "").name
    return RunSummary(
        format=SUMMARY_FORMAT,
        run_id=str(run[0]),
        created=str(run[1]),
        title=f"{name} · deployed · {config.strategy.name}",
        dataset=DatasetInfo(name=name, task=task, task_names=tuple(config.dataset.label_columns)),
        metric=Metric(metric, higher_is_better),
        strategy=config.strategy.name,
        rounds=max(participants, default=0),
        sites=partners,
        pooled=pooled,
        curves=curves,
        timings=Timings(total_seconds=sum(seconds.values()) or None),
        config=config.to_dict(),
        privacy=_privacy(config, train, incidents),
        activity=activity,
        deployed=True,
        tasks=task_results_from_summaries(summaries) if summaries is not None else {},
        label_distributions=(
            label_distributions_from_summaries(summaries) if summaries is not None else {}
        ),
        task_summary=_task_summary_info(summaries),
        consortium_overlap=overlap,
    )


def _latest(db: sqlite3.Connection, column: str, table: str) -> str | None:
    """The last round's ``column`` of ``table``; None for a store without one (a run of an
    earlier version, or one that did not finish)."""
    try:
        row = db.execute(f"SELECT {column} FROM {table} ORDER BY round DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else str(row[0])


def _task_summaries(db: sqlite3.Connection) -> TaskSummaries | None:
    """The final model's per-task counts the sites sent; None for a store without them."""
    text = _latest(db, "summary", "task_summaries")
    if text is None:
        return None
    try:
        return summaries_from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"the run store's per-task summary is unreadable: {exc}") from exc


def _chemical_overlap(db: sqlite3.Connection, source: str) -> ConsortiumOverlap | None:
    """The chemical-space overlap the coordinator kept; None for a store without one."""
    text = _latest(db, "overlap", "chemical_overlap")
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DataError(f"the run store's chemical overlap is unreadable: {exc}") from exc
    return serde.load(
        ConsortiumOverlap, data, source=f"{source} chemical overlap", error=_store_error
    )


def _store_error(problems: Sequence[str], source: str) -> DataError:
    return DataError(f"{source}: {'; '.join(problems)}")


def _task_summary_info(summaries: TaskSummaries | None) -> TaskSummaryInfo | None:
    if summaries is None:
        return None
    return TaskSummaryInfo(
        sites=tuple(sorted(summaries.sent)),
        declined=dict(summaries.declined),
        skipped=summaries.skipped,
        resolution=RESOLUTION if summaries.sent else None,
    )


def _pooled(results: list[tuple[dict[str, float], int]]) -> dict[str, float]:
    """Test-size-weighted mean of the sites' metrics (what ``POOLED_IS`` says)."""
    if not results:
        return {}
    return weighted_mean_metrics([m for m, _ in results], [n for _, n in results])


def _privacy(
    config: RunConfig,
    train: dict[int, dict[str, tuple[dict[str, float], int]]],
    incidents: list[tuple[int, str, str, str]],
) -> Privacy | None:
    """The ε each site reported per round; budgets are each site's own and not known here."""
    if not config.privacy.enabled and not config.site_policy.require_dp:
        return None
    rounds = sorted(train)
    epsilon: dict[str, dict[Relation, list[float | None]]] = {}
    for i, rnd in enumerate(rounds):
        for site, (values, _) in train[rnd].items():
            for metric_name, relation in _RELATIONS.items():
                if metric_name in values:
                    series = epsilon.setdefault(site, {}).setdefault(relation, [None] * len(rounds))
                    series[i] = values[metric_name]
    refusals = tuple(
        Refusal(int(r), site, kind.removeprefix("refused:"), reason)
        for r, site, kind, reason in incidents
        if kind.startswith("refused:")
    )
    return Privacy(
        record_level=config.privacy.record_level,
        site_level=config.privacy.site_level,
        accountant="each site's own",
        delta={"record": config.privacy.delta, "site": config.privacy.delta},
        rounds=tuple(rounds),
        epsilon={site: {rel: tuple(s) for rel, s in by.items()} for site, by in epsilon.items()},
        final={
            site: {
                rel: next((v for v in reversed(s) if v is not None), None) for rel, s in by.items()
            }
            for site, by in epsilon.items()
        },
        refusals=refusals,
    )
