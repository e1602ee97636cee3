"""The report's figures, each rendered to PNG bytes with matplotlib's Agg backend.

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
    format_score,
    metric_label,
)
from fedpharma.report.summary import MODELS, Curves, Metric, Model, Partner

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

_DPI = 150
_MAX_LABELLED_BARS = 30


def learning_curves_png(curves: Curves, metric: Metric, pooled: Partner) -> bytes:
    """Federated metric per round on the pooled test set, one thin line per site, and dashed
    horizontal references for the pooled local-only and centralized scores.

    Shows whether training converged and where it ended relative to the two baselines.
    """
    with _figure(width=7.5, height=3.8) as (fig, ax):
        rounds = list(curves.rounds)
        for i, series in enumerate(curves.sites.values()):
            ax.plot(
                rounds,
                list(series),
                color=SITE_COLOUR,
                linewidth=0.9,
                alpha=0.7,
                label=f"individual sites ({len(curves.sites)})" if i == 0 else None,
            )
        if curves.pooled:
            ax.plot(
                rounds,
                list(curves.pooled),
                color=MODEL_COLOURS["federated"],
                linewidth=2.4,
                marker="o" if len(rounds) <= 30 else None,
                markersize=3.5,
                label="federated, pooled test set",
            )
        for model in ("local", "centralized"):
            value = pooled.scores.headline[model]
            if value is not None:
                ax.axhline(
                    value,
                    color=MODEL_COLOURS[model],
                    linestyle="--",
                    linewidth=1.6,
                    label=f"{MODEL_LABELS[model].lower()}, pooled ({format_score(value)})",
                )
        references = [pooled.scores.headline[m] for m in ("local", "centralized")]
        _fit_y_limits(ax, [*curves.pooled, *chain(*curves.sites.values()), *references])
        ax.set_xlabel("round")
        ax.set_ylabel(_metric_axis_label(metric))
        _integer_ticks(ax)
        ax.legend(loc="best")
        return _to_png(fig)


def partner_bars_png(partners: Sequence[Partner], metric: Metric) -> bytes:
    """Grouped bars of the headline metric: local-only, federated, centralized per partner.

    The last partner is expected to be the pooled test set; a thin rule sets it apart. Bars are
    left out (not drawn as zero) when a model has no score.
    """
    width_in = min(14.0, max(7.5, 1.5 + 1.2 * len(partners)))
    with _figure(width=width_in, height=3.8) as (fig, ax):
        models = [m for m in MODELS if any(p.scores.headline[m] is not None for p in partners)]
        bar_width = 0.8 / max(1, len(models))
        label_bars = len(partners) * len(models) <= _MAX_LABELLED_BARS
        for offset, model in enumerate(models):
            xs = [
                i + (offset - (len(models) - 1) / 2) * bar_width
                for i, p in enumerate(partners)
                if p.scores.headline[model] is not None
            ]
            values = [p.scores.headline[model] for p in partners]
            heights = [v for v in values if v is not None]
            bars = ax.bar(
                xs,
                heights,
                width=bar_width * 0.92,
                color=MODEL_COLOURS[model],
                label=MODEL_LABELS[model],
            )
            if label_bars:
                ax.bar_label(
                    bars,
                    labels=[format_score(h) for h in heights],
                    fontsize=7,
                    padding=2,
                    color="#444444",
                )
        if len(partners) > 1:
            ax.axvline(len(partners) - 1.5, color="#BBBBBB", linewidth=0.8)
        ax.set_xticks(range(len(partners)))
        crowded = len(partners) > 6
        ax.set_xticklabels(
            [_plain_text(_shorten(p.name)) for p in partners],
            rotation=30 if crowded else 0,
            ha="right" if crowded else "center",
            rotation_mode="anchor" if crowded else "default",
        )
        ax.grid(axis="x", visible=False)
        ax.set_ylabel(_metric_axis_label(metric))
        ax.margins(y=0.12)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _to_png(fig)


def train_loss_png(curves: Curves) -> bytes:
    """Mean training loss per round; a log scale when it spans more than a factor of 20."""
    with _figure(width=7.5, height=3.0) as (fig, ax):
        rounds = list(curves.rounds)
        losses = list(curves.train_loss)
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
