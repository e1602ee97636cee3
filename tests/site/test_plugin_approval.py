"""A site runs model plugin code only if its owner approved that code's digest.

Adversary: a coordinator (or a recipe author) who names plugin code the site's owner never
reviewed. The site refuses every task that would run it, before any record is read, with a
policy refusal naming the plugin; the weakened twin — the same site without the check — trains
with it. Simulated here and at the deployed site's start; over gRPC + mTLS in
tests/integration/test_plugin_approval_deployed.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedpharma.core.config import (
    ModelConfig,
    RunConfig,
    SitePolicyConfig,
    config_from_dict,
    load_site_policy,
    site_policy_toml,
)
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.deploy_config import SiteConfig, SiteDataConfig, SiteSection
from fedpharma.core.errors import PolicyRefused, RoundFailed
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    EvaluateTask,
    LocalTraining,
    Refusal,
    TrainResult,
    TrainSettings,
    TrainTask,
)
from fedpharma.core.protocol.codec import decode_message, encode_message
from fedpharma.models.factory import build_trainer
from fedpharma.models.plugin_identity import plugin_identity
from fedpharma.site.deploy import build_site
from fedpharma.site.plugin_approval import PluginApproval, RefusingSite
from fedpharma.site.runtime import SiteRuntime
from tests.models.plugin_samples import TARGET


class Watched:
    """A trainer that records every call: the one way a site reads its records to train."""

    def __init__(self, trainer):
        self.trainer, self.calls = trainer, []

    def initial_parameters(self, seed):
        return self.trainer.initial_parameters(seed)

    def fit(self, params, data, **kwargs):
        self.calls.append("fit")
        return self.trainer.fit(params, data, **kwargs)

    def predict(self, params, data):
        self.calls.append("predict")
        return self.trainer.predict(params, data)


def _data(n: int = 40) -> Dataset:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n, 8)).astype(np.float32)
    labels = features[:, :1] + 0.1
    return Dataset(features, labels, "regression", ("y",), np.arange(n))


def _site(approval: PluginApproval | None, recipe: RunConfig) -> tuple[SiteRuntime, Watched]:
    data = _data()
    trainer = Watched(build_trainer(recipe, data))
    runtime = SiteRuntime("site-a", SiteData(data, data), trainer, approval=approval)
    return runtime, trainer


def _train_task(recipe: RunConfig, trainer: Watched) -> TrainTask:
    settings = TrainSettings(LocalTraining(1, 3), plugin=plugin_identity(recipe.model.plugin))
    return TrainTask("run", 1, trainer.initial_parameters(0), settings)


@pytest.fixture
def acme_recipe(acme_plugin) -> RunConfig:
    return RunConfig(model=ModelConfig(plugin=TARGET, hidden=(8,)))


def test_an_unapproved_plugin_is_refused_naming_it_and_no_record_is_read(acme_recipe):
    identity = plugin_identity(TARGET)
    assert identity is not None
    site, trainer = _site(PluginApproval(identity, approved=()), acme_recipe)
    evaluate = EvaluateTask("run", 1, trainer.initial_parameters(0))
    for task in (_train_task(acme_recipe, trainer), evaluate):
        reply = site.handle(task)
        assert isinstance(reply, Refusal) and reply.kind == "policy"
        assert TARGET in reply.reason and identity.digest in reply.reason
        assert "acme-qsar 1.0" in reply.reason and "approved_plugins" in reply.reason
    assert trainer.calls == []


def test_the_weakened_twin_without_the_check_trains_the_unreviewed_code(acme_recipe):
    site, trainer = _site(None, acme_recipe)
    reply = site.handle(_train_task(acme_recipe, trainer))
    assert isinstance(reply, TrainResult) and trainer.calls == ["fit"]


def test_an_approved_digest_trains(acme_recipe):
    identity = plugin_identity(TARGET)
    assert identity is not None
    site, trainer = _site(PluginApproval(identity, (identity.digest,)), acme_recipe)
    assert isinstance(site.handle(_train_task(acme_recipe, trainer)), TrainResult)
    assert trainer.calls == ["fit"]


def test_a_task_for_other_code_than_the_installed_approved_plugin_is_refused(acme_recipe):
    identity = plugin_identity(TARGET)
    assert identity is not None
    site, trainer = _site(PluginApproval(identity, (identity.digest,)), acme_recipe)
    task = _train_task(acme_recipe, trainer)
    other = dataclasses.replace(identity, digest="sha256:" + "0" * 64)
    for settings in (
        dataclasses.replace(task.settings, plugin=other),
        dataclasses.replace(task.settings, plugin=None),  # "fedpharma's own network"
    ):
        reply = site.handle(dataclasses.replace(task, settings=settings))
        assert isinstance(reply, Refusal) and reply.kind == "policy"
        assert "install the code the consortium approved" in reply.reason
    assert trainer.calls == []


def test_fedpharmas_own_networks_need_no_approval():
    recipe = RunConfig(model=ModelConfig(hidden=(8,)))
    site, trainer = _site(PluginApproval(None, ()), recipe)
    assert isinstance(site.handle(_train_task(recipe, trainer)), TrainResult)


def test_the_plugin_identity_travels_in_the_train_task(acme_recipe):
    _, trainer = _site(None, acme_recipe)
    task = _train_task(acme_recipe, trainer)
    decoded = decode_message(encode_message(task))
    assert isinstance(decoded, TrainTask) and decoded.settings.plugin == task.settings.plugin


def test_a_refusing_deployed_site_answers_every_task_with_its_reason():
    site = RefusingSite("site-a", "not approved: acme")
    task = EvaluateTask("r", 4, Parameters.from_dict({"w": np.zeros(2, np.float32)}))
    reply = decode_message(b"".join(site.handle_encoded(encode_message(task))))
    assert reply == Refusal("r", 4, "site-a", "policy", "not approved: acme")
    garbage = decode_message(b"".join(site.handle_encoded(b"not a task")))
    assert isinstance(garbage, Refusal) and garbage.kind == "policy"


def test_a_deployed_site_refuses_before_loading_its_data(acme_plugin, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(site_policy_toml(SitePolicyConfig(record_epsilon=1.0)))
    config = SiteConfig(
        run_config=str(tmp_path / "run.toml"),
        state_dir=str(tmp_path / "state"),
        site=SiteSection(name="site-a", coordinator="127.0.0.1:1", insecure=True),
        data=SiteDataConfig(path=str(tmp_path / "no-such-file.csv"), label_columns=("y",)),
        policy=str(policy),
    )
    recipe = RunConfig(model=ModelConfig(plugin=TARGET))
    with pytest.raises(PolicyRefused, match="does not approve model plugin acme_qsar"):
        build_site("site-a", config, recipe)  # the data file does not even exist
    identity = plugin_identity(TARGET)
    assert identity is not None
    approving = SitePolicyConfig(approved_plugins=(identity.digest,))
    policy.write_text(site_policy_toml(approving))
    assert load_site_policy(policy) == approving  # the policy file round-trips the list
    with pytest.raises(Exception, match="no-such-file") as loading:
        build_site("site-a", config, recipe)  # approved: now it reads its data
    assert not isinstance(loading.value, PolicyRefused)


def _simulation(molecules_csv, **policy: object) -> RunConfig:
    return config_from_dict(
        {
            "rounds": 1,
            "seed": 3,
            "baselines": False,
            "privacy_audit": False,
            "dataset": {
                "path": str(molecules_csv),
                "label_columns": ["pIC50"],
                "task": "regression",
            },
            "features": {"n_bits": 128},
            "partition": {"n_sites": 3},
            "model": {"plugin": TARGET, "hidden": [16]},
            "site_policy": policy,
        }
    )


def test_simulated_sites_refuse_an_unapproved_plugin_and_approve_its_digest(
    acme_plugin, molecules_csv, tmp_path
):
    from fedpharma.sim.engine import simulate

    with pytest.raises(RoundFailed) as failed:
        simulate(_simulation(molecules_csv), tmp_path / "refused")
    message = str(failed.value)
    assert "site-1, site-2, site-3 refused" in message and TARGET in message
    identity = plugin_identity(TARGET)
    assert identity is not None
    approved = simulate(
        _simulation(molecules_csv, approved_plugins=[identity.digest]), tmp_path / "approved"
    )
    assert approved.summary.curves.rounds == (1,)


def test_the_weakened_simulated_twin_runs_the_unapproved_plugin(
    acme_plugin, molecules_csv, tmp_path
):
    from fedpharma.sim.engine import simulate

    def without_the_check(runtimes):
        for runtime in runtimes.values():
            runtime.approval = None
        return runtimes

    result = simulate(_simulation(molecules_csv), tmp_path / "twin", adversary=without_the_check)
    assert result.summary.curves.rounds == (1,)
