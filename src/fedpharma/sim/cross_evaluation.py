"""The cross-site evaluation matrix of a simulation: every model on every site's test data.

The rules of which cells exist are :mod:`fedpharma.evaluation.cross_site`'s; a simulation's
sites all follow the run's ``[site_policy] allow_cross_evaluation``. The matrix goes to the run
store's ``comparison`` table — the federated row and the diagonal are already there as models
``federated`` and ``local``; an off-diagonal cell is stored as model ``local:OWNER`` at the
test site — and to ``summary.json`` as ``cross_evaluation``: per row the primary metric per test
site, with a cell that was not evaluated left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from fedpharma.core.config import RunConfig
from fedpharma.core.dataset import SiteData
from fedpharma.core.params import Parameters
from fedpharma.evaluation.cross_site import LOCAL, CrossSiteMatrix, cross_site_matrix
from fedpharma.evaluation.membership import Predictor
from fedpharma.evaluation.metrics import PRIMARY_METRIC
from fedpharma.report.summary import CrossEvaluation, CrossSiteRow
from fedpharma.server.store import RunStore


def cross_evaluate(
    config: RunConfig,
    models: Mapping[str, Mapping[str, Parameters] | Parameters],
    predictors: Mapping[str, Mapping[str, Predictor]],
    comparison: Mapping[str, Mapping[str, Mapping[str, float]]],
    sites: Mapping[str, SiteData],
    store: RunStore,
) -> CrossEvaluation:
    """Evaluate the local-only models (if trained) across sites, beside the comparison's cells.

    ``models``, ``predictors`` and ``comparison`` are the engine's: ``models["local"]`` the
    local-only model per site, ``predictors["local"][site]`` applies it, and ``comparison`` the
    federated and local-only models already scored at each site. Records the cross cells in
    ``store`` and returns the ``cross_evaluation`` section of ``summary.json``.
    """
    local = models.get("local", {})
    if isinstance(local, Parameters):
        raise TypeError("expected a local-only model per site")
    allows = dict.fromkeys(sites, config.site_policy.allow_cross_evaluation)
    matrix = cross_site_matrix(
        comparison,
        local,
        predictors.get("local", {}),
        {name: data.test for name, data in sites.items()},
        allows,
    )
    for row in matrix.rows:
        if row.model == LOCAL:
            for site, metrics in row.cells.items():
                if site != row.trained_at:
                    store.record_comparison(f"{LOCAL}:{row.trained_at}", site, dict(metrics))
    task = next(iter(sites.values())).test.task
    return matrix_summary(matrix, PRIMARY_METRIC[task][0], allows)


def matrix_summary(
    matrix: CrossSiteMatrix, metric: str, allows: Mapping[str, bool]
) -> CrossEvaluation:
    """The matrix for the summary: ``metric`` per cell (``None`` where it is undefined, e.g. a
    test set of one class), a cell not evaluated absent; and each site's policy flag."""
    return CrossEvaluation(
        test_sites=tuple(matrix.test_sites),
        allowed=dict(allows),
        rows=tuple(
            CrossSiteRow(
                model=row.model,
                trained_at=row.trained_at,
                scores={site: _finite(cell.get(metric)) for site, cell in row.cells.items()},
            )
            for row in matrix.rows
        ),
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
