"""Cross-site evaluation: every model on every site's test data, where the sites allow it.

A consortium wants to know not only whether the federated model beats each partner's own
local-only model *at that partner*, but how each model transfers to the other partners'
chemistry or patient populations: the generalisability comparison of federated clinical
studies, where each site's locally trained model and the federated model are evaluated on the
other sites' data too (Dayan et al. 2021, "Federated learning for predicting clinical outcomes
in patients with COVID-19", Nat. Med. 27).

Rows are models, columns are test sets, a cell holds the model's metrics on that test set:

- the **federated** model on every site's test data — always: evaluating the consortium's own
  model on its held-out data is part of the protocol (an evaluate task), and only aggregate
  metrics leave the site;
- site A's **local-only** model on site A's test data — always: nothing leaves A;
- site A's local-only model on site B's test data (A ≠ B) only when **both** allow cross
  evaluation: A, because its local model is a function of A's data alone and would have to be
  shipped to B (it leaks A's records far more than the federated model, which averages every
  partner's updates); and B, because B evaluates a partner's model on its own test data and
  reports the metric. A cell is also left out when A's and B's test sets have different tasks
  (private task heads): A's model does not predict B's tasks.

A cell that is left out is absent from the matrix, not a number: "not allowed" and "not
comparable" are not scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedpharma.core.params import Parameters
from fedpharma.evaluation.membership import Predictor
from fedpharma.evaluation.metrics import compute_metrics

if TYPE_CHECKING:
    from fedpharma.core.dataset import Dataset

FEDERATED = "federated"
LOCAL = "local"


@dataclass(frozen=True)
class CrossSiteRow:
    """One model's metrics per test site; a site missing from ``cells`` was not evaluated.

    ``model`` is ``"federated"`` or ``"local"``; ``trained_at`` names the site whose data a
    local-only model was trained on (``None`` for the federated model).
    """

    model: str
    trained_at: str | None
    cells: Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class CrossSiteMatrix:
    """The federated row, then one local-only row per site, over ``test_sites`` columns."""

    test_sites: tuple[str, ...]
    rows: tuple[CrossSiteRow, ...]


def cross_evaluation_allowed(
    owner: str, test_site: str, allows: Mapping[str, bool], tests: Mapping[str, Dataset]
) -> bool:
    """Whether ``owner``'s local-only model may be (and can be) evaluated on ``test_site``'s
    test data: always at its own site; elsewhere only when both sites allow cross evaluation
    and both test sets have the same tasks (see the module docstring)."""
    if owner == test_site:
        return True
    same_tasks = tests[owner].task_names == tests[test_site].task_names
    return allows[owner] and allows[test_site] and same_tasks


def cross_site_matrix(
    at_home: Mapping[str, Mapping[str, Mapping[str, float]]],
    local: Mapping[str, Parameters],
    local_predictors: Mapping[str, Predictor],
    tests: Mapping[str, Dataset],
    allows: Mapping[str, bool],
) -> CrossSiteMatrix:
    """The matrix of the federated model and each local-only model on the test sets allowed.

    ``at_home`` holds the cells every run has already scored (the engine's comparison):
    ``at_home["federated"][site]``, the federated model at each site, and ``at_home["local"]
    [site]``, each local-only model at its own site. Only the cells across sites are evaluated
    here: ``local_predictors[owner]`` applies ``local[owner]`` at another site. ``local`` may be
    empty (no baselines were trained): then only the federated row. ``allows[site]`` is the
    site's policy flag (``SitePolicyConfig.allow_cross_evaluation``).
    """
    sites = tuple(tests)
    missing = [s for s in sites if s not in allows]
    if missing:
        raise KeyError(f"no cross-evaluation policy for site(s) {', '.join(missing)}")

    def cell(owner: str, params: Parameters, site: str) -> Mapping[str, float]:
        if owner == site:
            return at_home[LOCAL][site]
        data = tests[site]
        predictions = local_predictors[owner].predict(params, data)
        return compute_metrics(data.task, data.dense_labels(), predictions)

    rows = [CrossSiteRow(FEDERATED, None, {site: at_home[FEDERATED][site] for site in sites})]
    rows += [
        CrossSiteRow(
            LOCAL,
            owner,
            {
                site: cell(owner, params, site)
                for site in sites
                if cross_evaluation_allowed(owner, site, allows, tests)
            },
        )
        for owner, params in local.items()
    ]
    return CrossSiteMatrix(sites, tuple(rows))
