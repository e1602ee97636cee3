"""Render a run directory's ``summary.json`` into one self-contained ``report.html``.

The page carries everything inline (CSS, plots as base64 PNG, no scripts), so it can be mailed,
archived or opened offline. The markup lives in ``templates/`` (jinja2, autoescaping): site
names and titles come from user config and must never become markup. This module computes
what the page says; the templates say how it looks.

About 460 lines, one job: what each card of the page says, in words and figures (the sections
with a life of their own, the audit and the cross-site matrix, have their modules).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpharma import __version__
from fedpharma.report import plots
from fedpharma.report.comparison import (
    consortium_overlap_table,
    interval_verdict,
    overlap_rows,
    small_test_caveat,
)
from fedpharma.report.cross_site import cross_site_html
from fedpharma.report.formatting import (
    direction_text,
    format_count,
    format_duration,
    format_epsilon,
    format_parameter,
    format_score,
    format_timestamp,
    metric_direction,
    metric_label,
)
from fedpharma.report.membership import NO_DP_SENTENCE, privacy_audit_html
from fedpharma.report.summary import (
    MODELS,
    POOLED_IS,
    POOLED_NAME,
    SUMMARY_FILE,
    Model,
    Partner,
    Refusal,
    Relation,
    RunSummary,
    load_summary,
)
from fedpharma.report.templating import render

REPORT_FILE = "report.html"


def render_report(run_dir: Path, summary: RunSummary | None = None) -> Path:
    """Write ``run_dir/report.html`` from ``summary`` (default: ``run_dir/summary.json``) and
    return its path.

    Raises :class:`~fedpharma.core.errors.DataError` naming the problem if the summary is missing or
    malformed. The file is written atomically, so a browser never sees half a report.
    """
    summary = summary if summary is not None else load_summary(run_dir)
    target = run_dir / REPORT_FILE
    partial = run_dir / f".{REPORT_FILE}.tmp"
    partial.write_text(build_report_html(summary), encoding="utf-8")
    os.replace(partial, target)
    return target


def build_report_html(summary: RunSummary) -> str:
    """The whole report page as a string (pure: no file access)."""
    partners = [(POOLED_NAME, summary.pooled), *summary.sites.items()]
    models = [
        m for m in MODELS if any(p.score(m) is not None or m in p.details() for _, p in partners)
    ]
    config = summary.config
    return render(
        "report.html.j2",
        summary=summary,
        facts=_facts(summary),
        headline=headline_sentence(summary),
        verdict=verdict_sentence(summary),
        headline_hint=_headline_hint(summary),
        plots=_plots(summary),
        privacy=_privacy(summary),
        models=models,
        partners=[_partner_table(name, p, models, summary) for name, p in partners],
        cross_site=cross_site_html(summary),
        tasks=_task_table(summary),
        overlap=overlap_rows(summary),
        consortium_overlap=consortium_overlap_table(summary),
        config=None if config is None else json.dumps(config, indent=2, ensure_ascii=False),
        version=__version__,
        source=SUMMARY_FILE,
    )


def headline_sentence(summary: RunSummary) -> str:
    """The one line a reader should take away: the federated score next to the baselines."""
    scores = summary.pooled.headline()
    label = metric_label(summary.metric.name)
    federated = scores["federated"]
    if federated is None:
        return f"No federated {label} was recorded on the sites' test sets."
    comparisons = []
    if scores["local"] is not None:
        comparisons.append(f"{format_score(scores['local'])} for local-only models (mean)")
    if scores["centralized"] is not None:
        comparisons.append(
            f"{format_score(scores['centralized'])} centralized (training rows pooled)"
        )
    against = (
        " vs " + " and ".join(comparisons)
        if comparisons
        else " (no local-only or centralized baseline was run)"
    )
    return (
        f"Federated model: {label} {format_score(federated)} on the sites' test sets "
        f"(weighted mean){against}."
    )


def verdict_sentence(summary: RunSummary) -> str | None:
    """How federation compares with the baselines, in words; None without a local baseline.
    With bootstrap intervals the words follow them (:mod:`fedpharma.report.comparison`)."""
    worded = interval_verdict(summary)
    if worded is not None:
        return worded
    scores = summary.pooled.headline()
    federated, local, centralized = scores["federated"], scores["local"], scores["centralized"]
    if federated is None or local is None:
        return None
    sign = 1.0 if summary.metric.higher_is_better else -1.0
    improvement = sign * (federated - local)
    if format_score(federated) == format_score(local):
        return "The federated model scores the same as training on each site alone."
    if improvement < 0:
        return "The federated model does worse than training on each site alone."
    if centralized is not None and sign * (centralized - local) > 0:
        share = improvement / (sign * (centralized - local))
        if share > 1:
            return (
                "The federated model beats training on each site alone, and even the "
                "centralized model on pooled data (on these test sets; the difference may be "
                "within their noise)."
            )
        return (
            f"Federation recovers {share:.0%} of the gain that pooling all data centrally "
            "brings over local-only training."
        )
    return "The federated model beats training on each site alone."


def _facts(summary: RunSummary) -> list[tuple[str, str]]:
    dataset = summary.dataset
    task = dataset.task
    if dataset.task_names:
        task += f" · {', '.join(dataset.task_names)}"
    rows = format_count(dataset.n_rows)
    if dataset.invalid_molecules:
        rows += f" ({format_count(dataset.invalid_molecules)} invalid molecules skipped)"
    timings = summary.timings
    wall_time = format_duration(timings.total_seconds)
    parts = [
        f"{name} {format_duration(seconds)}"
        for name, seconds in (
            ("federated", timings.federated_seconds),
            ("baselines", timings.baseline_seconds),
        )
        if seconds is not None
    ]
    breakdown = ", ".join(parts)
    return [
        ("Dataset", dataset.name),
        ("Task", task),
        ("Rows", rows),
        ("Strategy", summary.strategy),
        ("Rounds", str(summary.rounds)),
        ("Sites", str(len(summary.sites))),
        ("Created", format_timestamp(summary.created)),
        ("Wall time", f"{wall_time} ({breakdown})" if breakdown else wall_time),
    ]


def _headline_hint(summary: RunSummary) -> str:
    size = summary.pooled.n_test
    return (
        f"{metric_label(summary.metric.name)}: the {POOLED_IS} on their own test sets"
        + (f" (n = {format_count(size)})" if size is not None else "")
        + f", {direction_text(summary.metric.higher_is_better)}."
    )


@dataclass(frozen=True)
class _Card:
    """A figure card (``png``: base64 PNG), or a note card saying why there is no figure."""

    heading: str
    note: str = ""
    png: str = ""
    alt: str = ""
    caption: str = ""


def _plots(summary: RunSummary) -> list[_Card]:
    """The figure cards: learning curves, partner bars, training loss (or why there is none)."""
    curves, metric = summary.curves, summary.metric
    label = metric_label(metric.name)
    sections = []
    if curves.rounds and (curves.pooled or curves.sites):
        sections.append(
            _figure(
                "Learning curves",
                plots.learning_curves_png(curves, metric, summary.pooled),
                alt=f"{label} per round for the federated model",
                caption=f"Federated {label} per round, the {POOLED_IS} (thick), and on each "
                "site's own test set (thin). Dashed lines: local-only and centralized "
                "(training rows pooled) models, the same weighted mean.",
            )
        )
    else:
        sections.append(_Card("Learning curves", note="No rounds were recorded."))
    partners = summary.partners()
    scored = {m for _, p in partners for m, score in p.headline().items() if score is not None}
    bars_title = (
        "Local-only vs federated vs centralized"
        if scored - {"federated"}
        else "Federated model per partner"
    )
    if scored:
        sections.append(
            _figure(
                bars_title,
                plots.partner_bars_png(partners, metric),
                alt=f"{label} per partner for local-only, federated and centralized models",
                caption=f"Final {label} on each partner's own test set, and on all of them "
                f"pooled (right), {direction_text(metric.higher_is_better)}."
                + (
                    ""
                    if scored - {"federated"}
                    else " No local-only or centralized baseline was run."
                ),
            )
        )
    else:
        sections.append(_Card(bars_title, note="No scores."))
    if curves.rounds and any(v is not None for v in curves.train_loss):
        sections.append(
            _figure(
                "Training loss",
                plots.train_loss_png(curves),
                alt="training loss per round",
                caption="Training loss per round, averaged over the sites.",
            )
        )
    elif summary.privacy is not None and summary.privacy.relations():
        sections.append(_Card("Training loss", note=NO_LOSS_UNDER_DP))
    sections += _task_cards(summary)
    activity = summary.activity
    if activity is not None and activity.rounds:
        sections.append(
            _figure(
                "Time and participation per round",
                plots.round_activity_png(activity),
                alt="seconds and number of aggregated sites per round",
                caption="Wall-clock seconds of each round (bars, left axis) and the number of "
                "sites whose update it aggregated (line, right axis).",
            )
        )
    return sections


MAX_TASK_FIGURES = 6


def _task_cards(summary: RunSummary) -> list[_Card]:
    """A figure per task (the first :data:`MAX_TASK_FIGURES`): parity, or ROC / PR /
    reliability; drawn from counts and curve points over every site's test rows."""
    from fedpharma.report import task_plots

    cards = []
    for name, result in list(summary.tasks.items())[:MAX_TASK_FIGURES]:
        rows = f"{format_count(result.n_test)} test rows of every site together"
        if result.parity is not None:
            cards.append(
                _figure(
                    f"Parity · {name}",
                    task_plots.parity_png(result.parity, name),
                    alt=f"predicted against measured {name}",
                    caption=f"Federated model: predicted against measured {name}, {rows} "
                    "(a 2-D histogram; dashed: perfect prediction).",
                )
            )
        elif result.roc is not None or result.calibration is not None:
            cards.append(
                _figure(
                    f"ROC, precision–recall and calibration · {name}",
                    task_plots.classification_png(result.roc, result.pr, result.calibration),
                    alt=f"ROC, precision-recall and reliability curves for {name}",
                    caption=f"Federated model on {name}, {rows}. Right: observed positive rate "
                    "per bin of predicted probability (dashed: perfectly calibrated).",
                )
            )
    for name, distribution in list(summary.label_distributions.items())[:MAX_TASK_FIGURES]:
        cards.append(
            _figure(
                f"Label distribution per site · {name}",
                task_plots.label_distribution_png(distribution, name),
                alt=f"each site's training labels of {name}",
                caption=f"Each site's training labels of {name}, as counts per bin (shares of "
                "the site's rows) or its positive rate: how differently the partners' data "
                "is distributed.",
            )
        )
    return cards


NO_LOSS_UNDER_DP = (
    "No training-loss curve: under differential privacy a site sends only what the guarantee "
    "covers, and its raw training loss is not covered, so no site reported one."
)


def _task_table(summary: RunSummary) -> dict[str, Any] | None:
    """Per-task metrics of the federated model (rows: tasks; columns: metrics), with where a
    deployed run's come from (the sites that sent counts, those that declined, or why none was
    asked) and each site's own metrics."""
    info = summary.task_summary
    if not summary.tasks and (info is None or info.skipped is None):
        return None
    names: list[str] = []
    for result in summary.tasks.values():
        names.extend(n for n in result.metrics if n not in names)
    rows = [
        (task, format_count(r.n_test), [format_score(r.metrics.get(n)) for n in names])
        for task, r in summary.tasks.items()
    ]
    notes: list[str] = []
    if info is not None:
        if info.skipped is not None:
            notes.append(f"No per-task results: {info.skipped}.")
        if info.sites:
            notes.append(f"From the counts of {', '.join(info.sites)}.")
        notes += [f"{site} sent none ({why})." for site, why in sorted(info.declined.items())]
        if info.resolution:
            notes.append(f"Resolution: {info.resolution}.")
    tolerances = [
        f"{task} ± {r.auc_tolerance:.2g}"
        for task, r in summary.tasks.items()
        if r.auc_tolerance is not None
    ]
    if tolerances:
        notes.append(
            f"ROC AUC from binned scores, at most this far from the exact: {'; '.join(tolerances)}."
        )
    sites = [
        (task, site, [format_score(values.get(n)) for n in names])
        for task, r in summary.tasks.items()
        for site, values in r.sites.items()
    ]
    return {"metrics": names, "rows": rows, "notes": notes, "sites": sites}


def _figure(heading: str, png: bytes, alt: str, caption: str) -> _Card:
    return _Card(heading, png=base64.b64encode(png).decode("ascii"), alt=alt, caption=caption)


_MECHANISMS: dict[Relation, str] = {"record": "Record-level DP-SGD", "site": "Site-level DP-FedAvg"}


def privacy_sentence(summary: RunSummary) -> str | None:
    """What the privacy guarantee is, in words, per relation; None when DP was not recorded.

    Spent ε is rounded up, so "at most" holds for the number shown.
    """
    privacy = summary.privacy
    if privacy is None:
        return None
    relations = privacy.relations()
    if not relations:
        return "No differential privacy was applied in this run."
    last = f"round {privacy.rounds[-1]}" if privacy.rounds else "the run"
    accountant = _accountant_text(privacy.accountant)
    parts = []
    for relation in relations:
        mechanism = _MECHANISMS[relation]
        spent = privacy.max_final(relation)
        delta = format_parameter(privacy.delta.get(relation))
        if spent is None:
            parts.append(f"{mechanism}: no site reported ε.")
            continue
        budget = privacy.budget.get(relation)
        if budget is None:
            limit = "no ε budget was set"
        else:
            over = [
                site
                for site, by in privacy.final.items()
                if (value := by.get(relation)) is not None and value > budget
            ]
            limit = f"budgets ε = {format_parameter(budget)} per site, enforced by each site"
            if over:
                limit += f", were exceeded by {', '.join(over)}"
        missing = [s for s in summary.sites if privacy.final.get(s, {}).get(relation) is None]
        unreported = f" (no ε reported by {', '.join(missing)})" if missing else ""
        parts.append(
            f"{mechanism}: every site's cumulative ε after {last} is at most "
            f"{format_epsilon(spent)} at δ = {delta}{unreported} ({accountant}); {limit}."
        )
    return " ".join(parts)


def _accountant_text(accountant: str) -> str:
    name, _, rest = accountant.partition(" (")
    detail = f", {rest.removesuffix(')')}" if rest else ""
    return f"{name.upper()} accountant{detail}"


@dataclass(frozen=True)
class _PrivacyCard:
    sentence: str
    audit: str
    epsilon_png: str | None = None
    final_rows: tuple[tuple[str, Relation, float | None, float | None, float | None], ...] = ()
    refusals: tuple[Refusal, ...] = ()


def _privacy(summary: RunSummary) -> _PrivacyCard | None:
    """The privacy card: the guarantee, ε per round, final ε per site, refusals, and the
    membership-inference audit (shown without DP too: it is the baseline); None without any."""
    privacy = summary.privacy
    sentence = privacy_sentence(summary)
    audit = privacy_audit_html(summary)
    if privacy is None or sentence is None:
        if not audit:
            return None
        return _PrivacyCard(NO_DP_SENTENCE, audit)
    relations = privacy.relations()
    epsilon_png = None
    if privacy.rounds and any(privacy.epsilon.values()):
        epsilon_png = base64.b64encode(plots.privacy_epsilon_png(privacy)).decode("ascii")
    final_rows = tuple(
        (site, rel, by.get(rel), privacy.budget.get(rel), privacy.delta.get(rel))
        for site, by in privacy.final.items()
        for rel in relations
    )
    return _PrivacyCard(sentence, audit, epsilon_png, final_rows, privacy.refusals)


def _partner_table(
    name: str, partner: Partner, models: list[Model], summary: RunSummary
) -> dict[str, Any]:
    """One test set's table: every metric × the models that were trained, best marked."""
    sizes = []
    if partner.n_train is not None:
        sizes.append(f"{format_count(partner.n_train)} train")
    if partner.n_test is not None:
        sizes.append(f"{format_count(partner.n_test)} test")
    caveat = small_test_caveat(partner.n_test) if partner.n_train is not None else None
    if caveat is not None:
        sizes.append(caveat)
    rows = []
    for metric in _metric_names(partner, summary):
        values = [_metric_value(partner, model, metric, summary) for model in models]
        best = _best_display_value(values, _higher_is_better(metric, summary))
        shown = [format_score(value) for value in values]
        rows.append((metric, [(text, text == best) for text in shown]))
    return {"name": name, "sizes": sizes, "rows": rows}


def _metric_names(partner: Partner, summary: RunSummary) -> list[str]:
    """The headline metric first, then every other metric in the order the summary lists it."""
    names = [summary.metric.name]
    for values in partner.details().values():
        names.extend(name for name in values if name not in names)
    return names


def _metric_value(partner: Partner, model: Model, metric: str, summary: RunSummary) -> float | None:
    """A metric from the detailed ``metrics`` block, falling back to the headline score."""
    detailed = partner.details().get(model, {})
    if metric in detailed:
        return detailed[metric]
    return partner.score(model) if metric == summary.metric.name else None


def _higher_is_better(metric: str, summary: RunSummary) -> bool | None:
    if metric == summary.metric.name:
        return summary.metric.higher_is_better
    return metric_direction(metric)


def _best_display_value(values: Iterable[float | None], higher_is_better: bool | None) -> str:
    """The best value as displayed (so ties after rounding all highlight); '' if none is."""
    present = [v for v in values if v is not None]
    if higher_is_better is None or len(present) < 2:
        return ""
    return format_score(max(present) if higher_is_better else min(present))
