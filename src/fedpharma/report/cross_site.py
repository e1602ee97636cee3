"""The cross-site evaluation matrix in the report: each model on every site's test data.

Rows are the federated model and each site's local-only model, columns the sites' test sets,
cells the run's headline metric. The best value in each column (the best model for that site's
data) is highlighted, a local-only model's own site is outlined, and a cell that was not
evaluated — a site's policy does not allow cross evaluation, or the two sites' tasks differ —
shows "—" with the reason on hover. The markup is ``templates/cross_site.html.j2``.
"""

from __future__ import annotations

from typing import NamedTuple

from fedpharma.report.formatting import MISSING, MODEL_LABELS, format_score
from fedpharma.report.summary import CrossEvaluation, CrossSiteRow, RunSummary
from fedpharma.report.templating import render

NOT_EVALUATED = "not evaluated: cross evaluation needs both sites' policy to allow it"
UNDEFINED = "undefined on this test set"


class Cell(NamedTuple):
    """One cell as shown: its text, CSS classes and hover title ('' for none)."""

    text: str
    classes: tuple[str, ...] = ()
    title: str = ""


def cross_site_html(summary: RunSummary) -> str:
    """The matrix as a report card; '' when the run has none."""
    matrix = summary.cross_evaluation
    if matrix is None or not matrix.rows:
        return ""
    best = _column_best(matrix, summary.metric.higher_is_better)
    rows = [
        (_row_label(row), [_cell(row, site, best[site]) for site in matrix.test_sites])
        for row in matrix.rows
    ]
    refusing = [site for site, allowed in matrix.allowed.items() if not allowed]
    return render(
        "cross_site.html.j2", matrix=matrix, metric=summary.metric, rows=rows, refusing=refusing
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


def _cell(row: CrossSiteRow, site: str, best: str) -> Cell:
    own = ("own",) if row.trained_at == site else ()
    if site not in row.scores:
        return Cell(MISSING, (*own, "missing"), NOT_EVALUATED)
    value = row.scores[site]
    if value is None:
        return Cell(MISSING, (*own, "missing"), UNDEFINED)
    shown = format_score(value)
    return Cell(shown, (*own, "best") if shown == best else own)
