"""The report's figures, each rendered to PNG bytes with matplotlib's Agg backend.

About 420 lines, one job: every figure of the report (and the benchmarks' privacy–utility plot),
sharing one style, palette and set of axis helpers.

matplotlib is imported inside the functions, never at module level, so ``import
fedpharma.report`` stays cheap. Figures are built with ``matplotlib.figure.Figure`` on an Agg
canvas rather than through pyplot: no global state, no GUI backend, safe to call from any thread.
Colours come from the Okabe–Ito palette, which stays distinguishable with colour-blindness.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import TYPE_CHECKING

from fedpharma.report.formatting import (
    MODEL_LABELS,
    direction_text,
    format_parameter,
    format_score,
    metric_label,
)
from fedpharma.report.summary import (
    MODELS,
    Curves,
    Metric,
    Model,
    Partner,
    Privacy,
    Relation,
    RoundActivity,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Okabe–Ito colours, one fixed meaning each throughout the report.
MODEL_COLOURS: dict[Model, str] = {
    "local": "#E69F00",  # orange
    "federated": "#0072B2",  # blue
    "centralized": "#009E73",  # bluish green
}
SITE_COLOUR = "#8C8C8C"
LOSS_COLOUR = "#D55E00"  # vermillion
TEXT_COLOUR = "#222222"

# One colour per site in the privacy plot (Okabe–Ito without yellow, then repeating).
SITE_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
RELATION_STYLES: dict[Relation, tuple[str, str]] = {"record": ("-", "o"), "site": (":", "s")}
RELATION_LABELS: dict[Relation, str] = {"record": "record-level", "site": "site-level"}
BUDGET_COLOURS: dict[Relation, str] = {"record": "#444444", "site": "#999999"}

_DPI = 150
_MAX_LABELLED_BARS = 30


def learning_curves_png(curves: Curves, metric: Metric, pooled: Partner) -> bytes:
    """Federated metric per round (the test-size-weighted mean over sites), one thin line per
    site, and dashed horizontal references for the local-only and centralized scores.

    Shows whether training converged and where it ended relative to the two baselines.
    """
    with _figure(width=7.5, height=3.8) as (fig, ax):
        rounds = list(curves.rounds)
        for i, series in enumerate(curves.sites.values()):
            ax.plot(
                rounds,
                _values(series),
                color=SITE_COLOUR,
                linewidth=0.9,
                alpha=0.7,
                label=f"individual sites ({len(curves.sites)})" if i == 0 else None,
            )
        if curves.pooled:
            ax.plot(
                rounds,
                _values(curves.pooled),
                color=MODEL_COLOURS["federated"],
                linewidth=2.4,
                marker="o" if len(rounds) <= 30 else None,
                markersize=3.5,
                label="federated, weighted mean over sites",
            )
        for model in ("local", "centralized"):
            value = pooled.score(model)
            if value is not None:
                ax.axhline(
                    value,
                    color=MODEL_COLOURS[model],
                    linestyle="--",
                    linewidth=1.6,
                    label=f"{MODEL_LABELS[model].lower()}, weighted mean ({format_score(value)})",
                )
        references = [pooled.score("local"), pooled.score("centralized")]
        _fit_y_limits(ax, [*curves.pooled, *chain(*curves.sites.values()), *references])
        ax.set_xlabel("round")
        ax.set_ylabel(_metric_axis_label(metric))
        _integer_ticks(ax)
        ax.legend(loc="best")
        return _to_png(fig)


def partner_bars_png(partners: Sequence[tuple[str, Partner]], metric: Metric) -> bytes:
    """Grouped bars of the headline metric: local-only, federated, centralized per partner.

    The last partner is expected to be the pooled test set; a thin rule sets it apart. Bars are
    left out (not drawn as zero) when a model has no score.
    """
    width_in = min(14.0, max(7.5, 1.5 + 1.2 * len(partners)))
    with _figure(width=width_in, height=3.8) as (fig, ax):
        models = [m for m in MODELS if any(p.score(m) is not None for _, p in partners)]
        bar_width = 0.8 / max(1, len(models))
        label_bars = len(partners) * len(models) <= _MAX_LABELLED_BARS
        for offset, model in enumerate(models):
            xs = [
                i + (offset - (len(models) - 1) / 2) * bar_width
                for i, (_, p) in enumerate(partners)
                if p.score(model) is not None
            ]
            values = [p.score(model) for _, p in partners]
            heights = [v for v in values if v is not None]
            bars = ax.bar(
                xs,
                heights,
                width=bar_width * 0.92,
                color=MODEL_COLOURS[model],
                label=MODEL_LABELS[model],
            )
            if label_bars:
                # Upright labels of neighbouring bars overlap when the bars are narrower than
                # the text; rotated, each stays within its own bar's width.
                ax.bar_label(
                    bars,
                    labels=[format_score(h) for h in heights],
                    fontsize=7,
                    padding=2,
                    color="#444444",
                    rotation=90 if len(models) > 1 else 0,
                )
        if len(partners) > 1:
            ax.axvline(len(partners) - 1.5, color="#BBBBBB", linewidth=0.8)
        ax.set_xticks(range(len(partners)))
        crowded = len(partners) > 6
        ax.set_xticklabels(
            [_plain_text(_shorten(name)) for name, _ in partners],
            rotation=30 if crowded else 0,
            ha="right" if crowded else "center",
            rotation_mode="anchor" if crowded else "default",
        )
        ax.grid(axis="x", visible=False)
        ax.set_ylabel(_metric_axis_label(metric))
        ax.margins(y=0.2 if label_bars and len(models) > 1 else 0.12)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _to_png(fig)


def train_loss_png(curves: Curves) -> bytes:
    """Mean training loss per round; a log scale when it spans more than a factor of 20."""
    with _figure(width=7.5, height=3.0) as (fig, ax):
        rounds = list(curves.rounds)
        losses = _values(curves.train_loss)
        ax.plot(
            rounds,
            losses,
            color=LOSS_COLOUR,
            linewidth=2.0,
            marker="o" if len(rounds) <= 30 else None,
            markersize=3,
        )
        finite = [v for v in losses if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
            ax.set_yscale("log")
        ax.set_xlabel("round")
        ax.set_ylabel("training loss")
        _integer_ticks(ax)
        return _to_png(fig)


def privacy_epsilon_png(privacy: Privacy) -> bytes:
    """Cumulative ε per round: one line per site and relation (colour = site, line style =
    relation), and a dashed horizontal line at each relation's budget.

    Rounds a site did not train are gaps; markers keep a lone point visible.
    """
    relations = privacy.relations()
    groups = identical_epsilon_groups(privacy)
    many = len(groups) > 8
    with _figure(width=7.5, height=3.8) as (fig, ax):
        rounds = list(privacy.rounds)
        marker_ok = len(rounds) <= 30
        drawn: list[float] = []
        for i, (relation, sites, values) in enumerate(groups):
            colour = SITE_COLOURS[i % len(SITE_COLOURS)]
            series = _values(values)
            linestyle, marker = RELATION_STYLES[relation]
            suffix = f", {RELATION_LABELS[relation]}" if len(relations) > 1 else ""
            # Sites that spent identical ε share one line, named once in the legend.
            who = _shorten(sites[0]) if len(sites) == 1 else _sites_label(sites)
            ax.plot(
                rounds,
                series,
                color=colour,
                linestyle=linestyle,
                linewidth=2.0,
                marker=marker if marker_ok else None,
                markersize=4.5,
                label=None if many else _plain_text(who) + suffix,
            )
            drawn.extend(v for v in series if math.isfinite(v))
        for relation in relations:
            budget = privacy.budget.get(relation)
            if budget is not None and math.isfinite(budget):
                ax.axhline(
                    budget,
                    color=BUDGET_COLOURS[relation],
                    linestyle="--",
                    linewidth=1.4,
                    label=f"{RELATION_LABELS[relation]} budget (ε = {format_parameter(budget)})",
                )
                drawn.append(budget)
        ax.set_ylim(0, max(drawn, default=1.0) * 1.08 or 1.0)
        ax.set_xlabel("round")
        ax.set_ylabel("cumulative ε spent")
        _integer_ticks(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _to_png(fig)


def identical_epsilon_groups(
    privacy: Privacy,
) -> list[tuple[Relation, tuple[str, ...], tuple[float | None, ...]]]:
    """Per relation, the sites grouped by identical ε series: (relation, sites, series)."""
    groups: dict[tuple[Relation, tuple[float | None, ...]], list[str]] = {}
    for site, by in privacy.epsilon.items():
        for relation in privacy.relations():
            series = tuple(by.get(relation, ()))
            if series:
                groups.setdefault((relation, series), []).append(site)
    return [(relation, tuple(sites), series) for (relation, series), sites in groups.items()]


def _sites_label(sites: Sequence[str]) -> str:
    names = ", ".join(_shorten(s, 12) for s in sites[:3]) + (", …" if len(sites) > 3 else "")
    return f"{len(sites)} sites, identical ε ({names})"


def round_activity_png(activity: RoundActivity) -> bytes:
    """Seconds per round (bars) and the number of sites aggregated (line, right axis)."""
    with _figure(width=7.5, height=3.0) as (fig, ax):
        rounds = list(activity.rounds)
        ax.bar(rounds, activity.seconds, color=SITE_COLOUR, width=0.7, label="seconds")
        ax.set_xlabel("round")
        ax.set_ylabel("seconds")
        _integer_ticks(ax)
        right = ax.twinx()
        right.plot(
            rounds,
            activity.participants,
            color=MODEL_COLOURS["federated"],
            linewidth=2.0,
            marker="o" if len(rounds) <= 30 else None,
            markersize=3,
        )
        top = max([*activity.participants, activity.planned_sites or 0, 1])
        right.set_ylim(0, top + 0.5)
        right.set_ylabel("sites aggregated", color=MODEL_COLOURS["federated"])
        right.grid(visible=False)
        from matplotlib.ticker import MaxNLocator

        right.yaxis.set_major_locator(MaxNLocator(integer=True))
        return _to_png(fig)


def privacy_utility_png(
    points: Sequence[tuple[float | None, float]],
    metric_name: str,
    higher_is_better: bool,
    title: str,
) -> bytes:
    """The privacy–utility trade-off: score against ε (log scale), for a benchmark sweep.

    ``points`` are ``(ε, score)`` pairs; ε ``None`` means trained without DP and is drawn as a
    horizontal reference line labelled "no DP". Several points at one ε (e.g. seeds) are all
    drawn, joined through their mean. Non-finite scores are skipped. Raises ``ValueError`` for
    an ε that is not positive and finite, or when no point has a finite score.
    """
    by_epsilon: dict[float, list[float]] = {}
    no_dp: list[float] = []
    for epsilon, score in points:
        if epsilon is not None and not (math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"ε must be positive and finite for a log axis, got {epsilon}")
        if not math.isfinite(score):
            continue
        if epsilon is None:
            no_dp.append(score)
        else:
            by_epsilon.setdefault(epsilon, []).append(score)
    if not by_epsilon and not no_dp:
        raise ValueError("no point with a finite score to draw")
    metric = Metric(metric_name, higher_is_better)
    with _figure(width=6.5, height=3.8) as (fig, ax):
        xs = sorted(by_epsilon)
        means = [sum(by_epsilon[x]) / len(by_epsilon[x]) for x in xs]
        colour = MODEL_COLOURS["federated"]
        repeated = any(len(v) > 1 for v in by_epsilon.values())
        dp_label = "with DP (mean)" if repeated else "with DP"
        if repeated:
            ax.scatter(
                [x for x in xs for _ in by_epsilon[x]],
                [v for x in xs for v in by_epsilon[x]],
                color=colour,
                alpha=0.45,
                s=14,
                label="individual runs",
            )
        if xs:
            ax.plot(
                xs, means, color=colour, linewidth=2.0, marker="o", markersize=4, label=dp_label
            )
        if no_dp:
            reference = sum(no_dp) / len(no_dp)
            ax.axhline(
                reference,
                color=SITE_COLOUR,
                linestyle="--",
                linewidth=1.6,
                label=f"no DP ({format_score(reference)})",
            )
        ax.set_xscale("log")
        from matplotlib.ticker import FuncFormatter

        plain = FuncFormatter(lambda x, _: f"{x:g}")  # 0.5, 1, 8 rather than 5×10⁻¹
        ax.xaxis.set_major_formatter(plain)
        # Label only the 2s and 5s between decades, so minor labels never run together.
        ax.xaxis.set_minor_formatter(
            FuncFormatter(lambda x, _: f"{x:g}" if f"{x:.0e}"[0] in "25" else "")
        )
        if xs and min(xs) == max(xs):
            ax.set_xlim(xs[0] / 2, xs[0] * 2)
        _fit_y_limits(ax, [*chain(*by_epsilon.values()), *no_dp])
        ax.set_xlabel("ε (log scale)")
        ax.set_ylabel(_metric_axis_label(metric))
        ax.set_title(_plain_text(title))
        ax.legend(loc="best")
        return _to_png(fig)


@contextmanager
def _figure(width: float, height: float) -> Iterator[tuple[Figure, Axes]]:
    """A fresh single-axes figure on an Agg canvas, drawn in the report's style."""
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with rc_context(
        {
            "font.size": 9.5,
            "axes.edgecolor": "#BBBBBB",
            "axes.labelcolor": TEXT_COLOUR,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "axes.axisbelow": True,
            "grid.color": "#E6E6E6",
            "grid.linewidth": 0.8,
            "xtick.color": "#555555",
            "ytick.color": "#555555",
            "legend.frameon": False,
            "legend.fontsize": 8.5,
        }
    ):
        fig = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasAgg(fig)
        yield fig, fig.subplots()


def _to_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


def _metric_axis_label(metric: Metric) -> str:
    name = _plain_text(metric_label(metric.name))
    return f"{name} ({direction_text(metric.higher_is_better)})"


def _values(series: Iterable[float | None]) -> list[float]:
    """A series to plot: NaN (a gap) where it has no value."""
    return [math.nan if v is None else v for v in series]


def _fit_y_limits(ax: Axes, values: Iterable[float | None]) -> None:
    """Show every finite value with some air, so a reference line never hides under a spine."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return
    low, high = min(finite), max(finite)
    pad = (high - low) * 0.08 or abs(high) * 0.05 or 0.05
    ax.set_ylim(low - pad, high + pad)


def _integer_ticks(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _shorten(name: str, limit: int = 24) -> str:
    """Keep tick labels readable; the HTML tables carry the full names."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _plain_text(text: str) -> str:
    """Stop matplotlib reading ``$...$`` in a site name as mathtext."""
    return text.replace("$", r"\$")
