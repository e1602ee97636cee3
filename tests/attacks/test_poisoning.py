"""One poisoning site of five, through the real simulation path (codec, join, round loop):
each robust rule keeps the model close to the clean run where FedAvg's mean is taken over.

The poisoner is :class:`fedpharma.sim.poisoning.PoisoningSite`: a real site runtime that
trains on its data and then sends its update multiplied by −10 (sign flip). The weakened twin is
FedAvg itself under the same attack.
"""

import dataclasses

import pytest

from fedpharma.core.config import (
    DatasetConfig,
    ModelConfig,
    PartitionConfig,
    RobustConfig,
    RunConfig,
    StrategyConfig,
    TrainingConfig,
)
from fedpharma.sim.engine import prepare_sites, simulate
from fedpharma.sim.poisoning import PoisoningSite, poison

CONFIG = RunConfig(
    dataset=DatasetConfig(name="breast-cancer", kind="tabular"),
    partition=PartitionConfig(method="dirichlet", n_sites=5, alpha=100.0),
    model=ModelConfig(kind="mlp", hidden=(16,), dropout=0.0),
    training=TrainingConfig(local_epochs=2, learning_rate=0.01),
    strategy=StrategyConfig(min_sites=5, evaluate_every=0),
    rounds=4,
    baselines=False,
    privacy_audit=False,
)


@pytest.fixture(scope="module")
def prepared():
    return prepare_sites(CONFIG)


def auc(prepared, tmp_path, robust, attack=None):
    config = dataclasses.replace(CONFIG, robust=robust)
    adversary = None if attack is None else (lambda sites: poison(sites, "site-1", attack, 10.0))
    result = simulate(config, tmp_path, prepared=prepared, adversary=adversary)
    return result.summary.pooled.federated


@pytest.fixture(scope="module")
def clean(prepared, tmp_path_factory):
    return auc(prepared, tmp_path_factory.mktemp("clean"), RobustConfig())


def test_weakened_twin_fedavg_is_destroyed_by_one_sign_flipping_site(prepared, clean, tmp_path):
    assert clean > 0.9
    assert auc(prepared, tmp_path, RobustConfig(), "sign_flip") < clean - 0.2


@pytest.mark.parametrize(
    "robust",
    [
        RobustConfig(rule="median"),
        RobustConfig(rule="trimmed_mean"),
        RobustConfig(rule="multi_krum"),
        RobustConfig(norm_bound=0.05),
    ],
    ids=["median", "trimmed_mean", "multi_krum", "norm_bound"],
)
def test_each_robust_rule_stays_near_the_clean_run(prepared, clean, tmp_path, robust):
    assert auc(prepared, tmp_path, robust, "sign_flip") > clean - 0.03


def test_the_poisoner_is_a_real_site_that_trains_then_flips(prepared, tmp_path):
    seen = {}

    def spy(sites):
        poisoned = poison(sites, "site-1", "sign_flip", 10.0)
        seen.update(poisoned)
        return poisoned

    simulate(dataclasses.replace(CONFIG, rounds=1), tmp_path, prepared=prepared, adversary=spy)
    assert isinstance(seen["site-1"], PoisoningSite)
    assert not isinstance(seen["site-2"], PoisoningSite)
