"""The [robust] section: a rule with its parameters, refused where it cannot apply."""

import pytest

from fedpharma.core.config import RobustConfig, config_from_dict
from fedpharma.core.errors import ConfigError


def problems(raw):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    return info.value.problems


def test_a_rule_with_its_parameters_is_read():
    cfg = config_from_dict(
        {
            "partition": {"n_sites": 5},
            "strategy": {"min_sites": 5},
            "robust": {"rule": "multi_krum", "byzantine": 1, "krum_select": 3},
        }
    )
    assert cfg.robust == RobustConfig(rule="multi_krum", byzantine=1, krum_select=3)


def test_the_default_is_fedavg_s_mean_with_bounded_weights():
    assert config_from_dict({}).robust == RobustConfig("mean", 1, None, None, 1_000_000)


def test_typos_and_unknown_rules_are_named():
    found = " ".join(problems({"robust": {"rulle": "median", "rule": "krum"}}))
    assert "did you mean 'rule'" in found
    assert "'krum': must be one of" in found


@pytest.mark.parametrize("mode", ["secagg", "ckks"])
@pytest.mark.parametrize(
    "robust", [{"rule": "median"}, {"rule": "trimmed_mean"}, {"rule": "multi_krum"}]
)
def test_a_rule_that_needs_every_update_is_refused_under_secure_aggregation(mode, robust):
    raw = {
        "secure": {"mode": mode},
        "partition": {"n_sites": 5},
        "strategy": {"min_sites": 5},
        "robust": robust,
    }
    (problem,) = problems(raw)
    assert f'rule = "{robust["rule"]}"' in problem
    assert "only their sum" in problem


def test_norm_bounding_is_refused_under_secure_aggregation_too():
    (problem,) = problems({"secure": {"mode": "secagg"}, "robust": {"norm_bound": 1.0}})
    assert "[robust] norm_bound" in problem and "skip its own clipping" in problem


def test_a_rule_is_refused_with_site_level_dp():
    raw = {
        "privacy": {"site_level": True, "site_noise_multiplier": 1.0},
        "strategy": {"min_sites": 3},
        "robust": {"rule": "median"},
    }
    (problem,) = problems(raw)
    assert "site-level DP" in problem


@pytest.mark.parametrize(
    ("rule", "needed"), [("median", 3), ("trimmed_mean", 5), ("multi_krum", 7)]
)
def test_a_rule_needs_enough_sites_per_round_to_outvote_the_hostile_ones(rule, needed):
    byzantine = 2 if rule == "trimmed_mean" else 1 if rule == "median" else 2
    (problem,) = problems({"robust": {"rule": rule, "byzantine": byzantine}})
    assert f"set [strategy] min_sites = {needed} or more" in problem
    config_from_dict(
        {
            "partition": {"n_sites": needed},
            "strategy": {"min_sites": needed},
            "robust": {"rule": rule, "byzantine": byzantine},
        }
    )


def test_krum_select_belongs_to_multi_krum():
    raw = {"strategy": {"min_sites": 3}, "robust": {"rule": "median", "krum_select": 2}}
    assert "krum_select applies to" in problems(raw)[0]


def test_max_site_examples_must_be_positive():
    assert "max_site_examples" in problems({"robust": {"max_site_examples": 0}})[0]
