"""Membership-inference audit: per-example losses, attack AUC / advantage, and the attacks on
real TorchTrainer models — near chance on a model that never saw the members, far above it on a
model overfitted to them."""

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from fedpharma.core.config import ModelConfig, TrainingConfig
from fedpharma.core.dataset import Dataset, Objective
from fedpharma.core.errors import DataError
from fedpharma.core.params import Parameters
from fedpharma.evaluation.membership import (
    CALIBRATED,
    LOSS_THRESHOLD,
    PROBABILITY_EPSILON,
    AttackResult,
    MembershipAudit,
    Predictor,
    attack_from_scores,
    audit_membership,
    audit_update,
    calibrated_attack,
    loss_threshold_attack,
    per_example_loss,
)
from fedpharma.models.trainer import TorchTrainer

NAN = np.nan
N_FEATURES, N_TASKS = 256, 3
BIG_MLP = ModelConfig(kind="mlp", hidden=(256, 256), dropout=0.0)
TRAINING = TrainingConfig(batch_size=32, learning_rate=1e-3, optimizer="adam")
OVERFIT_EPOCHS = 30


# ----- per-example loss ----------------------------------------------------------------------


def test_regression_loss_is_mean_squared_error_over_observed_labels() -> None:
    labels = [[1.0, NAN], [2.0, 3.0], [NAN, NAN], [0.0, -1.0]]
    predictions = [[0.0, 5.0], [2.0, 1.0], [7.0, 7.0], [0.5, 1.0]]
    losses = per_example_loss("regression", labels, predictions)
    np.testing.assert_allclose(losses[[0, 1, 3]], [1.0, 2.0, (0.25 + 4.0) / 2])
    assert math.isnan(losses[2])


def test_classification_loss_is_cross_entropy_on_probabilities() -> None:
    labels = [[1.0, 0.0], [NAN, 1.0]]
    predictions = [[0.8, 0.4], [0.3, 0.5]]
    losses = per_example_loss("classification", labels, predictions)
    np.testing.assert_allclose(losses, [-(math.log(0.8) + math.log(0.6)) / 2, math.log(2.0)])


def test_probabilities_are_clipped_so_a_confident_mistake_is_finite() -> None:
    losses = per_example_loss("classification", [1.0, 0.0, 1.0], [0.0, 1.0, 1.0])
    worst = -math.log(PROBABILITY_EPSILON)
    np.testing.assert_allclose(losses, [worst, worst, -math.log1p(-PROBABILITY_EPSILON)])


def test_predictions_at_missing_labels_are_ignored() -> None:
    labels = [[1.0, NAN, 0.0], [NAN, 0.0, NAN]]
    clean = per_example_loss("classification", labels, [[0.9, 0.5, 0.2], [0.5, 0.3, 0.5]])
    garbage = per_example_loss("classification", labels, [[0.9, NAN, 0.2], [np.inf, 0.3, -7.0]])
    np.testing.assert_array_equal(clean, garbage)
    regression = per_example_loss("regression", [[1.0, NAN]], [[1.5, NAN]])
    np.testing.assert_allclose(regression, [0.25])


@pytest.mark.parametrize(
    ("task", "labels", "predictions"),
    [
        ("regression", [[1.0, 2.0]], [[1.0]]),  # shapes differ
        ("classification", [[0.5]], [[0.5]]),  # not a 0/1 label
        ("regression", [[1.0]], [[NAN]]),  # diverged model at an observed label
        ("classification", [[1.0]], [[np.inf]]),
    ],
)
def test_unusable_labels_or_predictions_raise_data_error(
    task: Objective, labels: list[list[float]], predictions: list[list[float]]
) -> None:
    with pytest.raises(DataError):
        per_example_loss(task, labels, predictions)


def test_unknown_task_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        per_example_loss("ranking", [[1.0]], [[1.0]])  # type: ignore[arg-type]


# ----- attacks on given losses ---------------------------------------------------------------


def test_loss_threshold_attack_by_hand() -> None:
    # Member losses 0.1, 0.2, 0.5 vs non-member 0.3, 0.5, 0.9: of the 9 pairs the member has the
    # lower loss in 7, one is a tie (½) → AUC 7.5 / 9. Calling "loss ≤ 0.2" a member catches 2/3
    # of the members and no non-member → advantage 2/3. The NaN (no label) takes no part.
    result = loss_threshold_attack([0.1, NAN, 0.2, 0.5], [0.3, 0.5, 0.9])
    assert result == AttackResult(
        LOSS_THRESHOLD, pytest.approx(7.5 / 9), pytest.approx(2 / 3), 3, 3
    )


def test_calibration_removes_example_difficulty() -> None:
    # Members are hard examples (high reference loss) the target model learned; non-members are
    # easy ones it did not improve on. By raw loss the members look like non-members …
    member, member_reference = [1.0, 2.0], [3.0, 2.5]
    nonmember, nonmember_reference = [0.5, 1.0], [0.5, 0.5]
    raw = loss_threshold_attack(member, nonmember)
    assert raw.auc == pytest.approx(0.5 / 4)
    # … but each member's loss dropped (−2, −0.5) while each non-member's did not (0, +0.5).
    calibrated = calibrated_attack(member, member_reference, nonmember, nonmember_reference)
    assert calibrated == AttackResult(CALIBRATED, 1.0, 1.0, 2, 2)


def test_calibrated_attack_skips_unlabelled_examples_and_checks_alignment() -> None:
    result = calibrated_attack([1.0, NAN, 0.0], [1.0, NAN, 1.0], [2.0], [1.0])
    assert (result.n_members, result.n_nonmembers, result.auc) == (2, 1, 1.0)
    with pytest.raises(DataError, match="same examples"):
        calibrated_attack([1.0, 2.0], [1.0], [1.0], [1.0])


def test_auc_matches_a_brute_force_pair_count_with_ties() -> None:
    rng = np.random.default_rng(5)
    members, nonmembers = rng.integers(0, 6, 40), rng.integers(2, 8, 55)  # many ties
    wins = (members[:, None] > nonmembers[None, :]).sum()
    ties = (members[:, None] == nonmembers[None, :]).sum()
    expected_auc = (wins + 0.5 * ties) / (members.size * nonmembers.size)
    thresholds = np.unique(np.concatenate([members, nonmembers]))
    expected_advantage = max(
        0.0, max((members >= t).mean() - (nonmembers >= t).mean() for t in thresholds)
    )
    result = attack_from_scores("test", members, nonmembers)
    assert result.auc == pytest.approx(expected_auc)
    assert result.advantage == pytest.approx(expected_advantage)
    assert (result.n_members, result.n_nonmembers) == (40, 55)


def test_indistinguishable_scores_give_chance() -> None:
    result = loss_threshold_attack([0.7] * 5, [0.7] * 8)
    assert (result.auc, result.advantage) == (0.5, 0.0)


def test_a_perfectly_wrong_attack_has_auc_zero_but_no_negative_advantage() -> None:
    result = loss_threshold_attack([5.0, 6.0], [1.0, 2.0])
    assert (result.auc, result.advantage) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("members", "nonmembers"),
    [([], [1.0]), ([1.0], []), ([NAN, NAN], [1.0]), ([1.0], [NAN])],
)
def test_no_members_or_no_nonmembers_raise_data_error(
    members: list[float], nonmembers: list[float]
) -> None:
    with pytest.raises(DataError, match=r"no (non-)?members with an observed label"):
        loss_threshold_attack(members, nonmembers)


def test_losses_must_be_one_per_example() -> None:
    with pytest.raises(DataError, match="1-D"):
        loss_threshold_attack([[0.1, 0.2]], [0.3])


# ----- attacks on real models ----------------------------------------------------------------


def fingerprints(task: Objective, n: int, seed: int, *, unlabelled: int = 0) -> Dataset:
    """Sparse binary "fingerprints" with *random* labels (nothing to generalise, only to
    memorise), 30 % of labels missing, and the last ``unlabelled`` rows without any label."""
    rng = np.random.default_rng(seed)
    features = (rng.random((n, N_FEATURES)) < 0.1).astype(np.float32)
    if task == "classification":
        labels = (rng.random((n, N_TASKS)) < 0.5).astype(np.float64)
    else:
        labels = rng.normal(size=(n, N_TASKS))
    labels[rng.random(labels.shape) < 0.3] = NAN
    labels[n - unlabelled :] = NAN
    return Dataset(
        features=features,
        labels=labels.astype(np.float32),
        task=task,
        task_names=tuple(f"assay{i}" for i in range(N_TASKS)),
        groups=np.arange(n, dtype=np.int64),
        name=f"{task}-{seed}",
    )


def labelled(data: Dataset) -> int:
    return int((~np.isnan(data.labels)).any(axis=1).sum())


@pytest.fixture(autouse=True, scope="module")
def single_threaded_torch() -> Iterator[None]:
    """One intra-op thread (module-wide, so it also covers the module-scoped training below):
    these tiny models only lose from parallelism."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Trained:
    """A big MLP overfitted on 64 random-label members, and the model it started from."""

    def __init__(self, task: Objective) -> None:
        self.trainer = TorchTrainer(BIG_MLP, TRAINING, task, N_FEATURES, N_TASKS)
        self.initial = self.trainer.initial_parameters(seed=0)
        self.members = fingerprints(task, 64, seed=1, unlabelled=4)
        self.nonmembers = fingerprints(task, 300, seed=2)
        fit = self.trainer.fit(self.initial, self.members, epochs=OVERFIT_EPOCHS, seed=0)
        self.overfitted = fit.parameters


@pytest.fixture(scope="module", params=["classification", "regression"])
def trained(request: pytest.FixtureRequest) -> Trained:
    return Trained(request.param)


def test_attack_on_an_overfitted_model_is_clearly_above_chance(trained: Trained) -> None:
    predictor: Predictor = trained.trainer  # TorchTrainer satisfies the audit's protocol
    audit = audit_membership(
        predictor,
        trained.overfitted,
        trained.initial,
        trained.members,
        trained.nonmembers,
        rng=np.random.default_rng(0),
    )
    assert isinstance(audit, MembershipAudit)
    assert [r.name for r in audit.results] == [LOSS_THRESHOLD, CALIBRATED]
    for result in audit.results:
        assert result.auc >= 0.75, result
        assert result.advantage >= 0.4, result
        # Unlabelled members are dropped, then the 300 non-members are cut to as many.
        assert result.n_members == result.n_nonmembers == labelled(trained.members) < 64


def test_attack_on_a_model_that_never_saw_them_is_near_chance(trained: Trained) -> None:
    # The overfitted model saw neither of these two fresh samples from the same distribution.
    members, nonmembers = fingerprints(trained.trainer.task, 300, seed=3), trained.nonmembers
    audit = audit_membership(
        trained.trainer,
        trained.overfitted,
        trained.initial,
        members,
        nonmembers,
        rng=np.random.default_rng(0),
    )
    for result in audit.results:
        assert abs(result.auc - 0.5) < 0.1, result
        assert result.advantage < 0.2, result  # in-sample best threshold: ≈ 0.9/√n by chance
        assert (
            result.n_members == result.n_nonmembers == min(labelled(members), labelled(nonmembers))
        )


def test_attack_on_a_site_update_equals_attack_on_the_site_model(trained: Trained) -> None:
    update = trained.overfitted.minus(trained.initial)
    args = (trained.members, trained.nonmembers)
    on_update = audit_update(
        trained.trainer, trained.initial, update, *args, rng=np.random.default_rng(9)
    )
    on_model = audit_membership(
        trained.trainer, trained.overfitted, trained.initial, *args, rng=np.random.default_rng(9)
    )
    for a, b in zip(on_update.results, on_model.results, strict=True):
        assert a.name == b.name
        assert a.auc == pytest.approx(b.auc, abs=0.02)
        assert (a.n_members, a.n_nonmembers) == (b.n_members, b.n_nonmembers)
    assert on_update.loss_threshold.auc >= 0.75


def test_subsampling_is_reproducible_from_the_generator(trained: Trained) -> None:
    small = fingerprints(trained.trainer.task, 40, seed=6)

    def run(seed: int) -> MembershipAudit:
        # The 300 rows are cut to the 40 of the other side; which 40 depends on the generator.
        return audit_membership(
            trained.trainer,
            trained.initial,
            trained.initial,
            trained.nonmembers,
            small,
            rng=np.random.default_rng(seed),
        )

    first = run(1)
    assert first == run(1)
    assert first.loss_threshold.auc != run(2).loss_threshold.auc
    assert first.loss_threshold.n_members == first.loss_threshold.n_nonmembers == labelled(small)


def test_audit_rejects_unusable_datasets(trained: Trained) -> None:
    task = trained.trainer.task
    other: Objective = "regression" if task == "classification" else "classification"
    mismatched = fingerprints(other, 10, seed=4)
    unlabelled = fingerprints(task, 10, seed=5, unlabelled=10)
    rng = np.random.default_rng(0)
    model, reference = trained.overfitted, trained.initial
    with pytest.raises(DataError, match="non-members a"):
        audit_membership(trained.trainer, model, reference, trained.members, mismatched, rng=rng)
    with pytest.raises(DataError, match="no observed label"):
        audit_membership(trained.trainer, model, reference, unlabelled, trained.members, rng=rng)
    wrong_shape = Parameters.from_dict({"w": np.zeros(3)})
    with pytest.raises(DataError, match="update"):
        audit_update(
            trained.trainer,
            trained.initial,
            wrong_shape,
            trained.members,
            trained.nonmembers,
            rng=rng,
        )
