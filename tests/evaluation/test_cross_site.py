"""The cross-site matrix: which cells exist (site policies, tasks) and what is in them."""

import numpy as np
import numpy.typing as npt
import pytest

from fedpharma.core.dataset import Dataset
from fedpharma.core.params import Parameters
from fedpharma.evaluation.cross_site import (
    FEDERATED,
    LOCAL,
    cross_evaluation_allowed,
    cross_site_matrix,
)
from fedpharma.evaluation.metrics import compute_metrics

SITES = ("site-1", "site-2", "site-3")


class ScaledFeature:
    """Predicts w × the first feature: the model w = 1 is perfect on labels = first feature."""

    def predict(self, params: Parameters, data: Dataset) -> npt.NDArray[np.float32]:
        weight = params.to_dict()["w"][0]
        return (data.features[:, :1] * weight).astype(np.float32)


def _model(weight: float) -> Parameters:
    return Parameters.from_dict({"w": [weight]})


def _test_set(seed: int, tasks: tuple[str, ...] = ("y",)) -> Dataset:
    x = np.random.default_rng(seed).normal(size=(20, 2)).astype(np.float32)
    labels = np.repeat(x[:, :1], len(tasks), axis=1)
    return Dataset(x, labels, "regression", tasks, np.zeros(20, dtype=np.int64))


TESTS = {site: _test_set(i) for i, site in enumerate(SITES)}
PREDICT = ScaledFeature()
LOCAL_MODELS = {"site-1": _model(1.0), "site-2": _model(0.5), "site-3": _model(2.0)}


def _score(model: Parameters, site: str, tests=TESTS) -> dict[str, float]:
    data = tests[site]
    return compute_metrics(data.task, data.labels, PREDICT.predict(model, data))


def _matrix(allows, tests=TESTS, local=LOCAL_MODELS):
    """The matrix, given the at-home cells the engine's comparison already holds."""
    at_home = {
        FEDERATED: {site: _score(_model(1.0), site, tests) for site in tests},
        LOCAL: {site: _score(model, site, tests) for site, model in local.items()},
    }
    return cross_site_matrix(at_home, local, dict.fromkeys(local, PREDICT), tests, allows)


def _rmse(weight: float, site: str) -> float:
    x = TESTS[site].features[:, 0].astype(np.float64)
    return float(np.sqrt(np.mean(((weight - 1.0) * x) ** 2)))


def test_every_model_on_every_site_when_all_sites_allow_it() -> None:
    matrix = _matrix(dict.fromkeys(SITES, True))

    assert matrix.test_sites == SITES
    assert [(r.model, r.trained_at) for r in matrix.rows] == [
        (FEDERATED, None),
        (LOCAL, "site-1"),
        (LOCAL, "site-2"),
        (LOCAL, "site-3"),
    ]
    for row in matrix.rows:
        assert set(row.cells) == set(SITES)
    site_2_model = matrix.rows[2]
    for site in SITES:
        assert matrix.rows[0].cells[site]["rmse"] == pytest.approx(0.0, abs=1e-6)
        assert site_2_model.cells[site]["rmse"] == pytest.approx(_rmse(0.5, site), rel=1e-5)


def test_a_site_that_disallows_neither_shares_its_model_nor_scores_others() -> None:
    matrix = _matrix({"site-1": True, "site-2": False, "site-3": True})
    cells = {row.trained_at: set(row.cells) for row in matrix.rows}

    assert cells[None] == set(SITES)  # the federated model is evaluated everywhere
    assert cells["site-2"] == {"site-2"}  # its own model stays home
    assert cells["site-1"] == {"site-1", "site-3"}  # not scored on site-2's data
    assert cells["site-3"] == {"site-3", "site-1"}


def test_by_default_only_the_federated_row_and_the_diagonal_exist() -> None:
    matrix = _matrix(dict.fromkeys(SITES, False))

    assert set(matrix.rows[0].cells) == set(SITES)
    assert [set(row.cells) for row in matrix.rows[1:]] == [{s} for s in SITES]


def test_a_local_model_is_not_scored_on_another_sites_tasks() -> None:
    tests = {**TESTS, "site-3": _test_set(2, tasks=("other",))}
    allows = dict.fromkeys(SITES, True)

    matrix = _matrix(allows, tests=tests)

    assert set(matrix.rows[1].cells) == {"site-1", "site-2"}
    assert set(matrix.rows[3].cells) == {"site-3"}
    assert not cross_evaluation_allowed("site-1", "site-3", allows, tests)
    assert cross_evaluation_allowed("site-3", "site-3", dict.fromkeys(SITES, False), tests)


def test_without_local_models_only_the_federated_row() -> None:
    matrix = _matrix(dict.fromkeys(SITES, True), local={})

    assert [row.model for row in matrix.rows] == [FEDERATED]


def test_a_site_without_a_policy_flag_is_an_error() -> None:
    with pytest.raises(KeyError, match="site-3"):
        _matrix({"site-1": True, "site-2": True})
