"""Shared trunk, private heads: the head is trained and kept at its site and never sent."""

import dataclasses

import numpy as np
import pytest

from fedpharma.core.config import ModelConfig, PartitionConfig, RunConfig, TrainingConfig
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.errors import ConfigError
from fedpharma.core.protocol.codec import encode_message
from fedpharma.models.factory import build_trainer
from fedpharma.models.private_head import PrivateHeadTrainer, join_head, split_head
from fedpharma.sim.engine import Simulation, simulate
from fedpharma.transport.inprocess import InProcessChannel

N_FEATURES = 48
PARTNER_TASKS = {"site-1": 3, "site-2": 5, "site-3": 2}
CONFIG = RunConfig(
    model=ModelConfig(hidden=(32, 16), dropout=0.0, private_heads=True),
    training=TrainingConfig(batch_size=16, learning_rate=3e-3),
    partition=PartitionConfig(n_sites=3),
    rounds=3,
    seed=1,
)


def _partner(name: str, n_tasks: int, rng: np.random.Generator, rows: int) -> Dataset:
    """Fingerprint-like inputs; each partner's own sparse regression tasks (70 % missing)."""
    features = (rng.random((rows, N_FEATURES)) < 0.2).astype(np.float32)
    weights = rng.normal(size=(N_FEATURES, n_tasks))
    labels = (features @ weights + 6.0).astype(np.float32)
    labels[rng.random(labels.shape) < 0.7] = np.nan
    tasks = tuple(f"{name}-assay-{t}" for t in range(n_tasks))
    return Dataset(features, labels, "regression", tasks, np.arange(rows), name=name)


def _simulation() -> Simulation:
    rng = np.random.default_rng(0)
    sites = {
        name: SiteData(_partner(name, n, rng, 80), _partner(name, n, rng, 20))
        for name, n in PARTNER_TASKS.items()
    }
    everything = _partner("all", 1, rng, 10)  # the shape the coordinator builds its trunk from
    return Simulation(sites, everything, 0)


class RecordingChannel(InProcessChannel):
    """Keeps the encoded bytes of every reply a site sends."""

    def __init__(self, sites) -> None:
        super().__init__(sites)
        self.sent: list[bytes] = []
        self.sites = sites

    def exchange(self, tasks, timeout=None):
        replies = super().exchange(tasks, timeout)
        self.sent += [encode_message(r) for r in replies.values() if hasattr(r, "run_id")]
        return replies


def test_head_parameters_never_appear_in_any_message_a_site_sends(tmp_path, monkeypatch):
    channels: list[RecordingChannel] = []

    def recording(sites):
        channels.append(RecordingChannel(sites))
        return channels[-1]

    monkeypatch.setattr("fedpharma.sim.backends.InProcessChannel", recording)
    result = simulate(
        dataclasses.replace(CONFIG, baselines=False), tmp_path, prepared=_simulation()
    )
    (channel,) = channels
    assert all(not name.startswith("head.") for name in result.parameters.names)
    heads = {name: site.trainer.head for name, site in channel.sites.items()}
    for name, head in heads.items():
        assert head.to_dict()["head.weight"].shape[0] == PARTNER_TASKS[name]
    assert len(channel.sent) >= 3 * CONFIG.rounds
    for message in channel.sent:
        assert b"head." not in message
        for head in heads.values():
            for array in head.arrays:
                # no 16-byte run of any head tensor, in any message
                raw = np.ascontiguousarray(array).tobytes()
                assert all(raw[i : i + 16] not in message for i in range(0, len(raw) - 16, 64))


def test_federated_trunk_with_private_heads_learns_and_reports_per_partner(tmp_path):
    result = simulate(CONFIG, tmp_path, prepared=_simulation())
    sites = result.summary.sites
    assert set(sites) == set(PARTNER_TASKS)
    for site in sites.values():
        assert site.federated is not None and site.local is not None
        assert site.centralized is None  # the partners' tasks differ: no pooled model
    assert result.summary.pooled.federated is None


def test_the_head_is_trained_kept_and_used_for_prediction():
    data = _partner("p", 4, np.random.default_rng(3), 64)
    trainer = build_trainer(CONFIG, data)
    assert isinstance(trainer, PrivateHeadTrainer)
    trunk = trainer.initial_parameters(0)
    assert all(name.startswith("trunk.") for name in trunk.names)
    before = trainer.head
    out = trainer.fit(trunk, data, epochs=2, seed=0)
    assert out.parameters.names == trunk.names
    assert not np.allclose(trainer.head.flatten(), before.flatten())
    # The head starts at this site's own label means (local calibration, nothing released).
    fresh = build_trainer(CONFIG, data)
    fresh.fit(trunk, data, epochs=1, seed=0)
    np.testing.assert_allclose(
        fresh.head.to_dict()["head.bias"], np.nanmean(data.labels, axis=0), atol=0.1
    )
    whole = join_head(out.parameters, trainer.head)
    np.testing.assert_allclose(
        trainer.predict(out.parameters, data), trainer.network.predict(whole, data)
    )
    assert split_head(whole)[0].names == trunk.names


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (ModelConfig(kind="linear", private_heads=True), "needs a shared trunk"),
        (ModelConfig(private_heads=True, label_mean=(6.0,)), "remove label_mean"),
    ],
)
def test_private_heads_without_a_trunk_or_with_a_global_prior_is_a_config_error(model, match):
    from fedpharma.core.config import config_from_dict

    raw = RunConfig(model=model).to_dict()
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)
