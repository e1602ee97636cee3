"""Per-task figures: parity (regression); ROC, precision–recall and reliability (classification).

Drawn from the aggregates of :class:`~fedpharma.report.summary.TaskResult` (histogram counts,
curve points, bin rates), in the style of :mod:`fedpharma.report.plots`.
"""

from __future__ import annotations

from fedpharma.report.plots import (
    MODEL_COLOURS,
    SITE_COLOUR,
    SITE_COLOURS,
    _figure,
    _plain_text,
    _shorten,
    _to_png,
)
from fedpharma.report.summary import Calibration, CurvePoints, LabelDistribution, Parity


def parity_png(parity: Parity, task: str) -> bytes:
    """Label against prediction as a 2-D histogram (darker: more test rows), with y = x."""
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter

    counts = np.array(parity.counts, dtype=float)
    low, high = parity.edges[0], parity.edges[-1]
    with _figure(width=4.6, height=4.0) as (fig, ax):
        shown = np.ma.masked_where(counts.T == 0, counts.T)  # x: label, y: prediction
        image = ax.imshow(
            shown,
            origin="lower",
            extent=(low, high, low, high),
            cmap="Blues",
            norm=LogNorm(vmin=1, vmax=max(1.0, float(counts.max()))),
            aspect="equal",
        )
        ax.plot([low, high], [low, high], color=SITE_COLOUR, linestyle="--", linewidth=1.0)
        ax.set_xlabel(f"measured {task}")
        ax.set_ylabel(f"predicted {task}")
        ax.grid(visible=False)
        bar = fig.colorbar(image, ax=ax, label="test rows", shrink=0.8)
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        bar.ax.yaxis.set_major_formatter(plain)
        bar.ax.yaxis.set_minor_formatter(plain)
        return _to_png(fig)


def classification_png(
    roc: CurvePoints | None, pr: CurvePoints | None, calibration: Calibration | None
) -> bytes:
    """Three panels: ROC, precision–recall, and reliability (observed rate per predicted bin)."""
    colour = MODEL_COLOURS["federated"]
    with _figure(width=10.5, height=3.4) as (fig, first):
        fig.delaxes(first)
        roc_ax, pr_ax, cal_ax = fig.subplots(1, 3)
        for ax, curve, (xlabel, ylabel) in (
            (roc_ax, roc, ("false positive rate", "true positive rate")),
            (pr_ax, pr, ("recall", "precision")),
        ):
            if curve is not None:
                ax.plot(curve.x, curve.y, color=colour, linewidth=2.0)
            else:
                ax.text(0.5, 0.5, "one class only", ha="center", va="center")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
        roc_ax.plot([0, 1], [0, 1], color=SITE_COLOUR, linestyle="--", linewidth=1.0)
        if calibration is not None:
            cal_ax.plot(
                calibration.predicted, calibration.observed, color=colour, marker="o", markersize=3
            )
        cal_ax.plot([0, 1], [0, 1], color=SITE_COLOUR, linestyle="--", linewidth=1.0)
        cal_ax.set_xlabel("mean predicted probability")
        cal_ax.set_ylabel("observed positive rate")
        cal_ax.set_xlim(0, 1)
        cal_ax.set_ylim(0, 1.02)
        return _to_png(fig)


def label_distribution_png(distribution: LabelDistribution, task: str) -> bytes:
    """Each site's training labels: the share of its rows per bin (regression, one step line
    per site) or its positive rate (classification, one bar per site, n on top)."""
    with _figure(width=7.5, height=3.2) as (fig, ax):
        sites = list(distribution.counts)
        if distribution.edges:
            edges = distribution.edges
            for i, site in enumerate(sites):
                counts = distribution.counts[site]
                total = sum(counts) or 1
                shares = [c / total for c in counts]
                ax.stairs(
                    shares,
                    edges,
                    color=SITE_COLOURS[i % len(SITE_COLOURS)],
                    linewidth=1.8,
                    label=_plain_text(_shorten(site)),
                )
            ax.set_xlabel(task)
            ax.set_ylabel("share of the site's rows")
        else:
            rates = []
            for site in sites:
                negatives, positives = distribution.counts[site]
                rates.append(positives / (negatives + positives) if negatives + positives else 0)
            bars = ax.bar(range(len(sites)), rates, color=MODEL_COLOURS["federated"], width=0.6)
            ax.bar_label(
                bars,
                labels=[f"n = {sum(distribution.counts[s])}" for s in sites],
                fontsize=7,
                padding=2,
            )
            ax.set_xticks(range(len(sites)))
            ax.set_xticklabels([_plain_text(_shorten(s)) for s in sites])
            ax.set_ylabel(f"positive rate ({task})")
            ax.set_ylim(0, 1.1)
        if distribution.edges and len(sites) > 1:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _to_png(fig)
