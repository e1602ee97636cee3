"""Terminal output: per-round progress and the per-partner comparison table."""

from __future__ import annotations

from typing import Any

import typer

from fedpharma.evaluation.metrics import PRIMARY_METRIC
from fedpharma.strategy import RoundRecord


def print_round(record: RoundRecord, rounds: int) -> None:
    parts = [f"round {record.round:>3}/{rounds}", f"{len(record.train_results)} sites"]
    loss = record.train_metrics.get("train_loss")
    if loss is not None:
        parts.append(f"train loss {loss:.3f}")
    for name, _ in PRIMARY_METRIC.values():
        if name in record.evaluate_metrics:
            parts.append(f"test {name} {record.evaluate_metrics[name]:.3f}")
    if record.refusals or record.failures:
        parts.append(f"{len(record.refusals)} refused, {len(record.failures)} failed")
    parts.append(f"{record.seconds:.1f} s")
    typer.echo(" · ".join(parts), err=True)


def print_comparison(summary: dict[str, Any]) -> None:
    metric = summary["metric"]
    arrow = "higher is better" if metric["higher_is_better"] else "lower is better"
    typer.echo(f"\nTest {metric['name'].upper()} per partner ({arrow})")
    header = (
        f"{'partner':<10} {'train':>6} {'test':>6} {'local':>9} {'federated':>10} {'central':>9}"
    )
    typer.echo(header)
    typer.echo("-" * len(header))
    rows = [*summary["sites"].items(), ("pooled", summary["pooled"])]
    for name, entry in rows:
        typer.echo(
            f"{name:<10} {entry.get('n_train', ''):>6} {entry['n_test']:>6} "
            f"{_fmt(entry['local']):>9} {_fmt(entry['federated']):>10} "
            f"{_fmt(entry['centralized']):>9}"
        )


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"
