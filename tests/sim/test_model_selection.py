"""Model selection: every model kind is chosen at the argmax of its pooled validation metric.

A planted overfitting case: a "trainer" whose model is a clock (its one weight counts the epochs
trained) and whose validation error at each site is the distance of the clock from a planted
best epoch, while its test error keeps falling. The federated round, the local-only epochs and
the centralized epochs must all land on the validation optimum that an independent computation
of the pooled (test-size-weighted) validation metric gives — never on the test set's.
"""

import dataclasses

import numpy as np
import pytest

from fedpharma.core.config import EvaluationConfig, RunConfig, TrainingConfig
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.params import Parameters
from fedpharma.models.base import FitOutput
from fedpharma.server.federation import Federation, FederationSettings
from fedpharma.server.selection import BestRound
from fedpharma.sim.selection import fit_reference
from fedpharma.site.runtime import SiteRuntime
from fedpharma.strategy import FedAvg
from fedpharma.transport.inprocess import InProcessChannel

ROUNDS, EPOCHS = 10, 2
# Planted best clock (epochs trained) on each site's validation fold, and its test-set size.
PEAKS = {"site-a": 6.0, "site-b": 14.0}
TEST_SIZES = {"site-a": 30, "site-b": 10}


class ClockTrainer:
    """Model = epochs trained. Validation error |clock − peak of the fold|; test error falls
    forever (1 / clock): selecting on the test set would pick the last round."""

    def initial_parameters(self, seed):
        return Parameters.from_dict({"clock": np.zeros(1)})

    def fit(self, params, data, *, epochs, seed, proximal_mu=0.0):
        clock = params.to_dict()["clock"] + epochs
        return FitOutput(Parameters.from_dict({"clock": clock}), len(data), 0.0, 0.0)

    def predict(self, params, data):
        clock = float(params.to_dict()["clock"][0])
        if data.name.startswith("validation"):
            error = abs(clock - PEAKS[data.name.removeprefix("validation-")])
        else:
            error = 1.0 / max(clock, 1.0)
        return (np.nan_to_num(data.labels) + error).astype(np.float32)


def _fold(name, n):
    rng = np.random.default_rng(len(name) + n)
    return Dataset(
        features=np.zeros((n, 1), np.float32),
        labels=rng.normal(size=(n, 1)).astype(np.float32),
        task="regression",
        task_names=("y",),
        groups=np.arange(n),
        name=name,
    )


def _sites():
    return {
        name: SiteData(
            _fold(f"train-{name}", 20),
            _fold(f"test-{name}", TEST_SIZES[name]),
            _fold(f"validation-{name}", 8),
        )
        for name in PEAKS
    }


def _expected_step(peaks):
    """The checkpoint (round) minimising the test-size-weighted mean validation RMSE, computed
    independently of the code under test."""
    pooled = [
        np.average(
            [abs(step * EPOCHS - peaks[s]) for s in peaks], weights=[TEST_SIZES[s] for s in peaks]
        )
        for step in range(1, ROUNDS + 1)
    ]
    return int(np.argmin(pooled)) + 1


def _config(patience=0):
    return RunConfig(
        training=TrainingConfig(local_epochs=EPOCHS),
        evaluation=EvaluationConfig(validation_fraction=0.2, patience=patience),
        rounds=ROUNDS,
    )


def _federate(selection):
    channel = InProcessChannel(
        {name: SiteRuntime(name, data, ClockTrainer()) for name, data in _sites().items()}
    )
    federation = Federation(FedAvg(), FederationSettings(local_epochs=EPOCHS), selection=selection)
    final = federation.run(channel, ClockTrainer().initial_parameters(0), ROUNDS, run_id="r")
    return federation, final


def test_the_federated_round_is_the_argmax_of_the_pooled_validation_metric():
    selection = BestRound("rmse", higher_is_better=False)
    _, final = _federate(selection)
    expected = _expected_step(PEAKS)
    assert expected not in (1, ROUNDS)  # the plant overfits: neither first nor last is best
    assert float(final.to_dict()["clock"][0]) == ROUNDS * EPOCHS  # the run itself goes on
    assert selection.chosen is not None
    assert selection.chosen.step == expected
    assert float(selection.chosen.model.to_dict()["clock"][0]) == expected * EPOCHS


def test_local_centralized_and_federated_models_follow_the_same_rule():
    config, sites = _config(), _sites()
    selection = BestRound("rmse", higher_is_better=False)
    _federate(selection)
    assert selection.chosen is not None
    pooled = dataclasses.replace(sites["site-a"].train, name="pooled")
    _, central_epochs = fit_reference(
        config,
        FedAvg(),
        ClockTrainer(),
        ClockTrainer().initial_parameters(0),
        pooled,
        sites,
        seed=0,
        label="centralized",
    )
    assert central_epochs == selection.chosen.step * EPOCHS
    for name, data in sites.items():
        model, epochs = fit_reference(
            config,
            FedAvg(),
            ClockTrainer(),
            ClockTrainer().initial_parameters(0),
            data.train,
            {name: data},
            seed=0,
            label=name,
        )
        assert epochs == _expected_step({name: PEAKS[name]}) * EPOCHS
        assert float(model.to_dict()["clock"][0]) == epochs


@pytest.mark.parametrize("patience", [1, 2])
def test_patience_stops_every_model_kind_the_same_number_of_checkpoints_after_the_best(patience):
    selection = BestRound("rmse", higher_is_better=False, patience=patience)
    _, final = _federate(selection)
    best = _expected_step(PEAKS)
    assert float(final.to_dict()["clock"][0]) == (best + patience) * EPOCHS
    sites = _sites()
    pooled = dataclasses.replace(sites["site-a"].train, name="pooled")
    trained = []

    class Counting(ClockTrainer):
        def fit(self, params, data, **kwargs):
            trained.append(1)
            return super().fit(params, data, **kwargs)

    fit_reference(
        _config(patience),
        FedAvg(),
        Counting(),
        Counting().initial_parameters(0),
        pooled,
        sites,
        seed=0,
        label="centralized",
    )
    assert len(trained) == best + patience


def test_without_a_validation_fold_references_train_every_epoch_and_nothing_is_selected():
    sites = _sites()
    config = dataclasses.replace(_config(), evaluation=EvaluationConfig())
    model, epochs = fit_reference(
        config,
        FedAvg(),
        ClockTrainer(),
        ClockTrainer().initial_parameters(0),
        sites["site-a"].train,
        sites,
        seed=0,
        label="centralized",
    )
    assert epochs is None and float(model.to_dict()["clock"][0]) == ROUNDS * EPOCHS


def test_a_simulation_reports_the_chosen_round_and_epochs_in_its_summary(tmp_path):
    from fedpharma.cli.main import DEMO_CONFIG
    from fedpharma.report.summary import load_summary
    from fedpharma.sim.engine import prepare_sites, simulate

    config = dataclasses.replace(DEMO_CONFIG, rounds=6, privacy_audit=False)
    assert config.evaluation.validation_fraction > 0  # the demo selects its models
    prepared = prepare_sites(config)
    for data in prepared.sites.values():
        assert data.validation is not None and len(data.validation) > 0
        folds = [set(d.groups) for d in (data.train, data.validation, data.test)]
        assert not (folds[0] & folds[1] or folds[0] & folds[2] or folds[1] & folds[2])
    simulate(config, tmp_path, prepared=prepared)
    summary = load_summary(tmp_path)
    chosen, curves = summary.selection, summary.curves
    assert chosen is not None and chosen.metric == "validation_rmse"
    assert len(curves.validation) == len(curves.rounds) == config.rounds
    values = [np.inf if v is None else v for v in curves.validation]
    assert chosen.federated_round == curves.rounds[int(np.argmin(values))]
    assert chosen.centralized_epochs is not None
    assert set(chosen.local_epochs) == set(prepared.sites)


class _Network(ClockTrainer):
    """Trunk and head, both counting the epochs trained."""

    def initial_parameters(self, seed):
        return Parameters.from_dict(
            {"trunk.w": np.zeros(1), "head.weight": np.zeros((1, 1)), "head.bias": np.zeros(1)}
        )

    def fit(self, params, data, *, epochs, seed, proximal_mu=0.0):
        named = {k: v + epochs for k, v in params.to_dict().items()}
        return FitOutput(Parameters.from_dict(named), len(data), 0.0, 0.0)


def test_private_heads_of_the_chosen_round_come_back_with_its_trunk():
    from fedpharma.models.private_head import PrivateHeadTrainer
    from fedpharma.server.round import RoundRecord
    from fedpharma.sim.selection import HeadsOfBestRound

    trainer = PrivateHeadTrainer(_Network(), "regression", seed=0, calibrate=False)
    selection = BestRound("rmse", higher_is_better=False)
    heads = HeadsOfBestRound(selection, {"site-a": trainer})
    trunk = trainer.initial_parameters(0)
    data = _sites()["site-a"].train
    for rnd, score in enumerate([0.9, 0.5, 0.7, 0.8], start=1):
        trunk = trainer.fit(trunk, data, epochs=1, seed=rnd).parameters
        record = RoundRecord(rnd, trunk, {}, {}, evaluate_metrics={"validation_rmse": score})
        selection.on_round(record)
        heads.on_round(record)
    assert float(trainer.head.to_dict()["head.bias"][0]) == 4.0
    heads.restore()
    assert selection.chosen is not None and selection.chosen.step == 2
    assert float(trainer.head.to_dict()["head.bias"][0]) == 2.0
