import numpy as np
import pytest

from fedpharma.core.config import config_from_dict
from fedpharma.core.errors import ConfigError
from fedpharma.core.params import Parameters
from fedpharma.evaluation.label_statistics import label_sums
from fedpharma.models.output import calibrate_output_layer

PARAMS = Parameters.from_dict(
    {"trunk.w": np.ones((3, 2)), "head.weight": np.ones((2, 3)), "head.bias": np.zeros(2)}
)


def test_regression_head_starts_at_the_mean_with_weights_scaled_by_the_spread():
    out = calibrate_output_layer(
        PARAMS, "regression", np.array([6.5, np.nan]), np.array([2.0, 1.0])
    )
    named = out.to_dict()
    np.testing.assert_allclose(named["head.bias"], [6.5, 0.0])  # a task with no labels keeps 0
    np.testing.assert_allclose(named["head.weight"], [[2.0] * 3, [1.0] * 3])
    np.testing.assert_array_equal(named["trunk.w"], PARAMS.to_dict()["trunk.w"])


def test_classification_head_starts_at_the_logit_of_the_positive_rate():
    out = calibrate_output_layer(PARAMS, "classification", np.array([0.2, 0.5]), np.ones(2))
    np.testing.assert_allclose(out.to_dict()["head.bias"], [np.log(0.2 / 0.8), 0.0], atol=1e-6)


def test_site_label_statistics_ignore_missing_labels():
    labels = np.array([[1.0, np.nan], [3.0, 0.0], [np.nan, 1.0]])
    stats = label_sums(labels)
    assert stats.count[0] == 2 and stats.total[0] == 4 and stats.sum_of_squares[0] == 10
    assert stats.count[1] == 2 and stats.total[1] == 1


def test_label_prior_lengths_must_agree():
    with pytest.raises(ConfigError, match="one value per"):
        config_from_dict({"model": {"label_mean": [1.0, 2.0], "label_std": [1.0]}})


def test_a_label_prior_for_a_network_without_a_head_layer_is_a_config_error():
    # A plugin may name its output layer otherwise; this was a raw KeyError('head.bias').
    headless = Parameters.from_dict({"trunk.w": np.ones((3, 2)), "out.weight": np.ones((2, 3))})
    with pytest.raises(ConfigError, match="no layer named `head`"):
        calibrate_output_layer(headless, "regression", np.zeros(2), np.ones(2))
