"""Terminal output: per-round progress and the per-partner comparison table."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from fedpharma.evaluation.metrics import PRIMARY_METRIC
from fedpharma.evaluation.selection import VALIDATION_PREFIX
from fedpharma.privacy import RELATIONS
from fedpharma.server.round import RoundRecord

if TYPE_CHECKING:
    from fedpharma.report.summary import RunSummary
    from fedpharma.site.policy import SitePolicy


def print_round(record: RoundRecord, rounds: int) -> None:
    parts = [f"round {record.round:>3}/{rounds}", f"{len(record.contributors)} sites"]
    loss = record.train_metrics.get("train_loss")
    if loss is not None:
        parts.append(f"train loss {loss:.3f}")
    for name, _ in PRIMARY_METRIC.values():
        if name in record.evaluate_metrics:
            parts.append(f"test {name} {record.evaluate_metrics[name]:.3f}")
        if (key := VALIDATION_PREFIX + name) in record.evaluate_metrics:
            parts.append(f"validation {name} {record.evaluate_metrics[key]:.3f}")
    spent = {
        relation: max(r.metrics[f"epsilon_{relation}"] for r in with_metric)
        for relation in ("record", "site")
        if (
            with_metric := [
                r for r in record.train_results.values() if f"epsilon_{relation}" in r.metrics
            ]
        )
    }
    parts += [f"ε_{relation} ≤ {value:.2f}" for relation, value in spent.items()]
    if record.refusals or record.failures:
        parts.append(f"{len(record.refusals)} refused, {len(record.failures)} failed")
    parts.append(f"{record.seconds:.1f} s")
    typer.echo(" · ".join(parts), err=True)


def print_comparison(summary: RunSummary) -> None:
    metric = summary.metric
    arrow = "higher is better" if metric.higher_is_better else "lower is better"
    typer.echo(f"\nTest {metric.name.upper()} per partner ({arrow})")
    header = (
        f"{'partner':<10} {'train':>6} {'test':>6} {'local':>9} {'federated':>10} {'central':>9}"
    )
    typer.echo(header)
    typer.echo("-" * len(header))
    rows = [*summary.sites.items(), ("pooled", summary.pooled)]
    for name, entry in rows:
        n_train, n_test = ("" if n is None else n for n in (entry.n_train, entry.n_test))
        typer.echo(
            f"{name:<10} {n_train:>6} {n_test:>6} "
            f"{_fmt(entry.local):>9} {_fmt(entry.federated):>10} "
            f"{_fmt(entry.centralized):>9}"
        )
    if (chosen := summary.selection) is not None:
        epochs = [e for e in chosen.local_epochs.values() if e is not None]
        typer.echo(
            f"\nmodel selection on {chosen.metric} (patience {chosen.patience or 'none'}): "
            f"federated round {chosen.federated_round or 'last'}, centralized at "
            f"{chosen.centralized_epochs or '—'} epochs, local at "
            f"{', '.join(map(str, epochs)) or '—'} epochs"
        )


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def print_ledger(policy: SitePolicy) -> None:
    ledger = policy.ledger
    if not any(ledger.entries(relation) for relation in RELATIONS):
        budgets = [
            f"{relation}-level ε = {budget.epsilon:g}"
            for relation in RELATIONS
            if (budget := ledger.budgets.get(relation)) is not None
        ]
        typer.echo(
            "the ledger holds no charge: this site has spent no privacy budget"
            + (f" (budgets: {', '.join(budgets)})" if budgets else " (the policy sets no budget)")
        )
        return
    for relation in RELATIONS:
        budget = ledger.budgets.get(relation)
        entries = ledger.entries(relation)
        if budget is None and not entries:
            continue
        label = f"{relation}-level"
        if budget is None:
            typer.echo(f"\n{label}: no budget in the policy (tasks of this kind are refused)")
        else:
            spent = ledger.spent(relation)
            typer.echo(
                f"\n{label} budget ε = {budget.epsilon:g} at δ = {budget.delta:.1e}; spent {spent}"
            )
        header = f"{'#':>4} {'run':<22} {'round':>5} {'cumulative ε':>13}  event"
        typer.echo(header)
        typer.echo("-" * len(header))
        for entry in entries:
            typer.echo(
                f"{entry.sequence:>4} {entry.run_id:<22} {entry.round:>5} "
                f"{entry.cumulative.epsilon:>13.4f}  {json.dumps(entry.event.to_dict())}"
            )
