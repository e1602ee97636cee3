import pytest

from fedpharma.core.config import RunConfig, config_from_dict, load_config
from fedpharma.core.errors import ConfigError


def test_defaults_are_valid():
    assert config_from_dict({}) == RunConfig()


def test_every_problem_is_reported_at_once():
    raw = {
        "rouds": 3,
        "model": {"hiden": [3]},
        "training": {"learning_rate": -1, "optimizer": "adamw", "batch_size": "big"},
        "strategy": {"name": "fedsgd"},
    }
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    problems = info.value.problems
    assert len(problems) == 6
    text = str(info.value)
    assert "did you mean 'rounds'" in text
    assert "did you mean 'hidden'" in text
    assert "learning_rate = -1: must lie in" in text
    assert "'adamw': must be one of" in text
    assert "batch_size = 'big': expected an integer" in text
    assert "'fedsgd'" in text


def test_cross_field_problems_are_reported_together():
    raw = {
        "dataset": {"path": "x.csv", "name": "chembl2321810"},
        "partition": {"n_sites": 2},
        "strategy": {"min_sites": 3},
    }
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    text = str(info.value)
    assert "exactly one of `name`" in text
    assert "label_columns" in text
    assert "min_sites = 3 exceeds" in text


def test_toml_file_round_trip(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'rounds = 5\nseed = 7\n[dataset]\npath = "d.csv"\nlabel_columns = ["y"]\n'
        'task = "regression"\n[model]\nhidden = [32, 16]\n[strategy]\nname = "fedadam"\n'
    )
    cfg = load_config(path)
    assert (cfg.rounds, cfg.seed, cfg.model.hidden, cfg.strategy.name) == (
        5,
        7,
        (32, 16),
        "fedadam",
    )
    assert cfg.dataset.label_columns == ("y",)


def test_bad_toml_and_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_a_permutation_key_id_must_be_a_key_id_for_a_morgan_fingerprint():
    ok = config_from_dict({"features": {"permutation_key_id": "c413f0ea057b1536"}})
    assert ok.features.permutation_key_id == "c413f0ea057b1536"
    with pytest.raises(ConfigError) as info:
        config_from_dict(
            {
                "features": {
                    "permutation_key_id": "C413-not-hex",
                    "fingerprint": "none",
                    "descriptors": True,
                }
            }
        )
    text = str(info.value)
    assert "2 problem(s)" in text and "16 lowercase hex digits" in text
    assert 'set fingerprint = "morgan"' in text


def test_site_level_noise_is_refused_where_it_would_not_be_what_is_charged():
    site_level = {"site_level": True, "site_noise_multiplier": 1.0}
    distributed = {**site_level, "noise_placement": "distributed"}
    with pytest.raises(ConfigError, match="needs secure aggregation"):
        config_from_dict({"privacy": distributed})
    with pytest.raises(ConfigError, match="ring_bits = 64"):
        config_from_dict({"privacy": distributed, "secure": {"mode": "secagg", "ring_bits": 32}})
    config_from_dict({"privacy": distributed, "secure": {"mode": "secagg"}})
    config_from_dict({"privacy": site_level})
