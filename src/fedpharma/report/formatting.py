"""Turn raw values into the words and numbers a reader sees: metric names, scores, durations.

Shared by the plots and the HTML so both say "ROC AUC" and "0.873" the same way.
"""

from __future__ import annotations

import math
from datetime import datetime

MISSING = "—"

_METRIC_LABELS = {
    "rmse": "RMSE",
    "mae": "MAE",
    "mse": "MSE",
    "r2": "R²",
    "spearman": "Spearman ρ",
    "pearson": "Pearson r",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "brier": "Brier score",
    "f1": "F1",
    "log_loss": "Log loss",
}

# Direction of the secondary metrics, so each table row can highlight its best model.
_HIGHER_IS_BETTER = {
    "rmse": False,
    "mae": False,
    "mse": False,
    "log_loss": False,
    "r2": True,
    "spearman": True,
    "pearson": True,
    "roc_auc": True,
    "pr_auc": True,
    "accuracy": True,
    "sensitivity": True,
    "specificity": True,
    "brier": False,
    "f1": True,
}

MODEL_LABELS = {
    "local": "Local-only",
    "federated": "Federated",
    "centralized": "Centralized",
}


def metric_label(name: str) -> str:
    """Display name of a metric key (``roc_auc`` → ``ROC AUC``); unknown keys pass through."""
    return _METRIC_LABELS.get(name, name)


def metric_direction(name: str) -> bool | None:
    """True if higher is better, False if lower is, None if the metric is unknown."""
    return _HIGHER_IS_BETTER.get(name)


def direction_text(higher_is_better: bool) -> str:
    return "higher is better" if higher_is_better else "lower is better"


def format_score(value: float | None) -> str:
    """About three significant digits without scientific notation; ``—`` when missing."""
    if value is None:
        return MISSING
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_duration(seconds: float | None) -> str:
    """``42.0 s``, ``3 min 12 s`` or ``1 h 02 min``: precise enough for a wall-clock time."""
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def format_timestamp(value: str | None) -> str:
    """An ISO-8601 timestamp as ``2026-11-27 20:30 UTC``; unparseable text is shown as is."""
    if value is None:
        return MISSING
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    zone = moment.tzname()
    shown = moment.strftime("%Y-%m-%d %H:%M")
    return f"{shown} {zone}" if zone else shown


def format_count(value: int | None) -> str:
    return MISSING if value is None else f"{value:,}"


def format_epsilon(value: float | None) -> str:
    """A spent ε with :func:`format_score`'s precision, rounded *up* so an "at most" stays true."""
    if value is None:
        return MISSING
    if math.isinf(value):
        return "∞"
    decimals = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2 if abs(value) >= 1 else 3
    scaled = value * 10**decimals
    nearest = round(scaled)
    # 3.23 is stored as 3.2300000000000004: don't let float noise round it up to 3.24.
    whole = nearest if math.isclose(scaled, nearest, rel_tol=1e-9) else math.ceil(scaled)
    return format_score(whole / 10**decimals)


def format_parameter(value: float | None) -> str:
    """A configured privacy parameter (budget ε, δ) as written: ``5``, ``0.5``, ``1e-5``."""
    if value is None:
        return MISSING
    if math.isinf(value):
        return "∞"
    text = f"{value:.3g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text
