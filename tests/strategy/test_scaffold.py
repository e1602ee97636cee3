"""SCAFFOLD (Karimireddy et al. 2020): corrected local steps beat FedAvg's drift on a strongly
non-IID split; each site's control variate survives its restart; the variate deltas travel in
the same secure sum as the model delta; DP and private heads are refused with a reason."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedpharma.core.config import (
    ModelConfig,
    RunConfig,
    SecureConfig,
    TrainingConfig,
    config_from_dict,
)
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.errors import ConfigError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    LocalTraining,
    RecordDP,
    Refusal,
    TrainResult,
    TrainSettings,
    TrainTask,
)
from fedpharma.core.protocol.control import attach_control, split_control
from fedpharma.data.partition import dirichlet_label_partition
from fedpharma.models.private_head import PrivateHeadTrainer
from fedpharma.models.trainer import TorchTrainer
from fedpharma.secure.identity import ephemeral_consortium
from fedpharma.server.federation import Federation, FederationSettings
from fedpharma.server.secure import SecAggCollector
from fedpharma.site.runtime import SiteRuntime
from fedpharma.site.scaffold import VARIATES_FILE, ControlVariates
from fedpharma.site.secure import SecureParticipation
from fedpharma.strategy import FedAvg, Scaffold, Strategy
from fedpharma.transport.inprocess import InProcessChannel


def _non_iid(n: int = 600, d: int = 8, sites: int = 5) -> tuple[Dataset, list[np.ndarray]]:
    """Logistic data split by label with Dirichlet α = 0.1 (Hsu et al. 2019): most sites hold
    one class only, so their local optima pull far apart."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    logits = x @ rng.normal(size=d) + 0.5 * np.sin(3 * x[:, 0])
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(np.float32)[:, None]
    data = Dataset(x, y, "classification", ("y",), np.arange(n))
    return data, dirichlet_label_partition(y, "classification", sites, 0.1, rng)


def _trainer(data: Dataset, hidden: tuple[int, ...] = ()) -> TorchTrainer:
    model = ModelConfig(kind="mlp" if hidden else "linear", hidden=hidden, dropout=0.0)
    training = TrainingConfig(batch_size=32, learning_rate=0.05, optimizer="sgd")
    return TorchTrainer(model, training, "classification", data.n_features, 1)


class PooledLoss:
    """The global model's log loss on all sites' training data, after every round."""

    def __init__(self, trainer: TorchTrainer, pooled: Dataset) -> None:
        self.trainer, self.pooled, self.curve = trainer, pooled, list[float]()

    def on_round(self, record) -> None:
        p = np.clip(self.trainer.predict(record.parameters, self.pooled), 1e-7, 1 - 1e-7)
        y = self.pooled.labels
        self.curve.append(float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()))


def _curve(strategy: Strategy, data: Dataset, parts: list[np.ndarray], rounds: int) -> list[float]:
    trainer = _trainer(data)
    sites = {
        f"site-{i}": SiteRuntime(f"site-{i}", SiteData(data.subset(p), data.subset(p[:1])), trainer)
        for i, p in enumerate(parts)
    }
    loss = PooledLoss(trainer, data)
    settings = FederationSettings(local_epochs=5, evaluate_every=0)
    federation = Federation(strategy, settings, observers=[loss])
    federation.run(InProcessChannel(sites), trainer.initial_parameters(0), rounds, run_id="r")
    return loss.curve


def test_scaffold_reaches_the_target_loss_in_fewer_rounds_than_fedavg_on_a_non_iid_split():
    data, parts = _non_iid()
    assert sum(float(data.labels[p].mean()) in (0.0, 1.0) for p in parts) >= 3  # label skew
    target, rounds = 0.41, 10
    scaffold = _curve(Scaffold(), data, parts, rounds)
    fedavg = _curve(FedAvg(), data, parts, rounds)
    assert scaffold[0] == pytest.approx(fedavg[0])  # c = c_i = 0 in round 1: FedAvg's step
    reached = [
        next((r for r, v in enumerate(c, 1) if v <= target), rounds + 1) for c in (scaffold, fedavg)
    ]
    assert reached[0] <= rounds, f"SCAFFOLD never reached {target}: {scaffold}"
    assert reached[0] < reached[1], (scaffold, fedavg)


def _task(run: str, rnd: int, model: Parameters, control: Parameters, **settings) -> TrainTask:
    local = LocalTraining(epochs=1, seed=rnd, scaffold=True)
    return TrainTask(run, rnd, attach_control(model, control), TrainSettings(local, **settings))


def test_a_site_keeps_its_variate_across_a_restart(tmp_path):
    data, parts = _non_iid()
    trainer = _trainer(data)
    site_data = SiteData(data.subset(parts[0]), data.subset(parts[0][:1]))
    x = trainer.initial_parameters(0)
    c = Parameters(x.names, tuple(np.full_like(a, 0.01) for a in x.arrays))
    first = SiteRuntime("site-a", site_data, trainer, variates=ControlVariates(tmp_path))
    reply = first.handle(_task("run-1", 1, x, c))
    assert isinstance(reply, TrainResult)
    _, delta_c = split_control(reply.update)
    kept = trainer.gradient(x, site_data.train)  # Option I: c_i⁺ = ∇f_i(x), from c_i = 0
    np.testing.assert_allclose(delta_c.flatten(), kept.flatten(), rtol=1e-5, atol=1e-7)
    assert (tmp_path / VARIATES_FILE).exists()

    restarted = SiteRuntime("site-a", site_data, trainer, variates=ControlVariates(tmp_path))
    x2 = reply.update.to_dict()  # any next model will do
    x2 = x.minus(Parameters(x.names, tuple(-np.asarray(x2[n]) for n in x.names)))
    second = restarted.handle(_task("run-1", 2, x2, c))
    assert isinstance(second, TrainResult)
    _, delta_c2 = split_control(second.update)
    expected = trainer.gradient(x2, site_data.train).minus(kept)  # c_i⁺ − the c_i kept on disk
    np.testing.assert_allclose(delta_c2.flatten(), expected.flatten(), rtol=1e-4, atol=1e-6)
    # A site that forgot (no state dir) would start again from c_i = 0: the restart test bites.
    forgetful = SiteRuntime("site-a", site_data, trainer)
    third = forgetful.handle(_task("run-1", 2, x2, c))
    assert isinstance(third, TrainResult)
    assert not np.allclose(split_control(third.update)[1].flatten(), expected.flatten())


def test_a_new_run_starts_from_a_zero_variate_and_a_corrupt_file_is_refused(tmp_path):
    x = Parameters.from_dict({"w": np.ones(3)})
    store = ControlVariates(tmp_path)
    store.save("run-1", x)
    assert ControlVariates(tmp_path).load("run-1", x).to_dict()["w"].tolist() == [1, 1, 1]
    assert ControlVariates(tmp_path).load("run-2", x).to_dict()["w"].tolist() == [0, 0, 0]
    (tmp_path / VARIATES_FILE).write_bytes(b"not an npz")
    with pytest.raises(Exception, match="move it away"):
        ControlVariates(tmp_path).load("run-1", x)


def test_variate_deltas_are_averaged_in_the_same_secure_sum_as_the_model_delta():
    data, parts = _non_iid(sites=3)
    trainer = _trainer(data)
    consortium, identities = ephemeral_consortium([f"site-{i}" for i in range(3)])
    config = SecureConfig(mode="secagg", clip=10.0)

    def runtimes(secure: bool) -> dict[str, SiteRuntime]:
        return {
            f"site-{i}": SiteRuntime(
                f"site-{i}",
                SiteData(data.subset(p), data.subset(p[:1])),
                trainer,
                secure=SecureParticipation(identities[f"site-{i}"], consortium) if secure else None,
            )
            for i, p in enumerate(parts)
        }

    x = trainer.initial_parameters(0)
    finals, controls = [], []
    for secure in (False, True):
        strategy = Scaffold()
        collector = SecAggCollector(config, min_sites=3) if secure else None
        federation = Federation(strategy, FederationSettings(evaluate_every=0), collector=collector)
        channel = InProcessChannel(runtimes(secure))
        finals.append(federation.run(channel, x, 2, run_id="r").flatten())
        assert strategy.control is not None
        controls.append(strategy.control.flatten())
    assert np.abs(controls[1]).max() > 1e-3  # the secure sum carried the variates
    np.testing.assert_allclose(controls[1], controls[0], atol=1e-5)
    np.testing.assert_allclose(finals[1], finals[0], atol=1e-5)


def test_the_server_steps_the_model_by_eta_and_the_variate_by_the_participation():
    x = Parameters.from_dict({"w": np.ones(2)})
    strategy = Scaffold(eta=0.5, participation=0.25)
    sent = strategy.train_parameters(1, x)
    assert split_control(sent)[1].to_dict()["w"].tolist() == [0, 0]
    mean = attach_control(
        Parameters.from_dict({"w": [2.0, 4.0]}), Parameters.from_dict({"w": [4.0, 8.0]})
    )
    new = strategy.aggregate_train(1, x, mean)
    assert new.to_dict()["w"].tolist() == [2.0, 3.0]
    assert strategy.state().arrays[0].tolist() == [1.0, 2.0]
    resumed = Scaffold(eta=0.5, participation=0.25)
    resumed.load_state(strategy.state())
    assert split_control(resumed.train_parameters(2, new))[1].to_dict()["w"].tolist() == [1, 2]
    with pytest.raises(Exception, match="no SCAFFOLD control variate"):
        Scaffold().load_state(Parameters((), ()))


def test_scaffold_is_refused_with_dp_and_private_heads(tmp_path):
    base = RunConfig().to_dict()
    for extra in (
        {"privacy": {"record_level": True, "noise_multiplier": 1.0}},
        {"privacy": {"site_level": True, "site_noise_multiplier": 1.0}},
        {"model": {"private_heads": True}},
    ):
        raw = base | {"strategy": {"name": "scaffold"}} | extra
        with pytest.raises(ConfigError, match="scaffold"):
            config_from_dict(raw)
    config_from_dict(base | {"strategy": {"name": "scaffold"}})  # on its own it is fine

    data, parts = _non_iid()
    site_data = SiteData(data.subset(parts[0]), data.subset(parts[0][:1]))
    trainer = _trainer(data)
    x = trainer.initial_parameters(0)
    dp = RecordDP(max_grad_norm=1.0, delta=1e-5, planned_rounds=1, noise_multiplier=1.0)
    refused = SiteRuntime("s", site_data, trainer).handle(_task("r", 1, x, x, record_dp=dp))
    assert isinstance(refused, Refusal) and "no DP mechanism bounds" in refused.reason
    heads = PrivateHeadTrainer(_trainer(data, hidden=(4,)), "classification", seed=0)
    trunk = heads.initial_parameters(0)
    refused = SiteRuntime("s", site_data, heads).handle(_task("r", 1, trunk, trunk))
    assert isinstance(refused, Refusal) and "private heads" in refused.reason
    assert dataclasses.replace(LocalTraining(), scaffold=True).scaffold
