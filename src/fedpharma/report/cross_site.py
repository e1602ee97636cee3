"""The cross-site evaluation matrix in the report: each model on every site's test data.

Rows are the federated model and each site's local-only model, columns the sites' test sets,
cells the run's headline metric. The best value in each column (the best model for that site's
data) is highlighted, a local-only model's own site is outlined, and a cell that was not
evaluated — a site's policy does not allow cross evaluation, or the two sites' tasks differ —
shows "—" with the reason on hover.
"""

from __future__ import annotations

from html import escape

from fedpharma.report.formatting import (
    MISSING,
    MODEL_LABELS,
    direction_text,
    format_score,
    metric_label,
)
from fedpharma.report.summary import CrossEvaluation, CrossSiteRow, RunSummary

NOT_EVALUATED = "not evaluated: cross evaluation needs both sites' policy to allow it"
UNDEFINED = "undefined on this test set"


def cross_site_html(summary: RunSummary) -> str:
    """The matrix as a report card; '' when the run has none."""
    matrix = summary.cross_evaluation
    if matrix is None or not matrix.rows:
        return ""
    metric = summary.metric
    best = _column_best(matrix, metric.higher_is_better)
    head = "".join(f'<th scope="col">{escape(site)}</th>' for site in matrix.test_sites)
    body = "".join(
        f'<tr><th scope="row">{escape(_row_label(row))}</th>'
        + "".join(_cell_html(row, site, best[site]) for site in matrix.test_sites)
        + "</tr>"
        for row in matrix.rows
    )
    refusing = [site for site, allowed in matrix.allowed.items() if not allowed]
    policy = (
        f"Cross evaluation not allowed by: {', '.join(refusing)} (a local-only model is shared "
        "with a partner, and a partner's model evaluated on a site's data, only when both "
        "sites' policies allow it; the federated model is evaluated at every site)."
        if refusing
        else "Every site allows cross evaluation."
    )
    return (
        '<section class="card">\n<h2>Cross-site evaluation</h2>\n'
        f'<p class="hint">{escape(metric_label(metric.name))} of each model (rows) on each '
        f"site's test data (columns), {direction_text(metric.higher_is_better)}. Best in each "
        "column highlighted; outlined: a local-only model on its own site's data.</p>\n"
        '<div class="scroll"><table class="cross-site">\n'
        f'<thead><tr><th scope="col">Model</th>{head}</tr></thead>\n'
        f"<tbody>{body}</tbody>\n</table></div>\n"
        f'<p class="hint">{escape(policy)}</p>\n</section>'
    )


def _row_label(row: CrossSiteRow) -> str:
    label = MODEL_LABELS.get(row.model, row.model)
    return f"{label} · {row.trained_at}" if row.trained_at is not None else label


def _column_best(matrix: CrossEvaluation, higher_is_better: bool) -> dict[str, str]:
    """Per test site, the best score as displayed (ties after rounding all highlight); ''
    when fewer than two models were scored there."""
    best = {}
    for site in matrix.test_sites:
        values = [v for row in matrix.rows if (v := row.scores.get(site)) is not None]
        if len(values) < 2:
            best[site] = ""
        else:
            best[site] = format_score(max(values) if higher_is_better else min(values))
    return best


def _cell_html(row: CrossSiteRow, site: str, best: str) -> str:
    classes = ["own"] if row.trained_at == site else []
    if site not in row.scores:
        classes.append("missing")
        return f'<td class="{" ".join(classes)}" title="{NOT_EVALUATED}">{MISSING}</td>'
    value = row.scores[site]
    if value is None:
        classes.append("missing")
        return f'<td class="{" ".join(classes)}" title="{UNDEFINED}">{MISSING}</td>'
    shown = format_score(value)
    if shown == best:
        classes.append("best")
    attribute = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{attribute}>{escape(shown)}</td>"
