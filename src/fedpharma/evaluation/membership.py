"""Membership-inference audit: how well can an attacker tell training records from other records?

The empirical number a data owner reads beside the run's (ε, δ): the ROC-AUC and the membership
advantage max(TPR − FPR) of two black-box attacks against the final model and against one site's
raw update w + Δ_k: the loss threshold (Yeom et al. 2018, §3.2, Adversary 2) and the
difficulty-calibrated loss difference (Watson et al. 2022, §3, Eq. 2). The advantage is biased
upwards on small samples (≈ 0.9/√n); the AUC is the headline figure. The full account, with the
per-example loss used: ``docs/membership-audit.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt
from sklearn import metrics as sk

from fedpharma.core.errors import DataError
from fedpharma.core.params import Parameters
from fedpharma.evaluation.metrics import as_matrices

if TYPE_CHECKING:
    from fedpharma.core.dataset import Dataset, Objective

FloatArray = npt.NDArray[np.float64]

PROBABILITY_EPSILON = 1e-7
"""Class-1 probabilities are clipped to [ε, 1 − ε] so a confident mistake costs −log ε ≈ 16.1
instead of ∞. The trainers return float32 probabilities, whose spacing just below 1 is ≈ 6e-8, so
a smaller ε would not distinguish any more examples."""

LOSS_THRESHOLD = "loss-threshold"
CALIBRATED = "calibrated"


@dataclass(frozen=True)
class AttackResult:
    """One attack's success on a set of members and non-members.

    ``auc`` is the ROC-AUC of the attack score (members = positives): the probability that a
    random member scores above a random non-member, ties counting one half. ``advantage`` is
    max over thresholds of TPR − FPR (Yeom et al. 2018, Definition 4), in [0, 1].
    ``n_members`` / ``n_nonmembers`` count the examples that took part (those with a label).
    """

    name: str
    auc: float
    advantage: float
    n_members: int
    n_nonmembers: int


@dataclass(frozen=True)
class MembershipAudit:
    """Both attacks on one target (a final model, or global model + one site's update)."""

    loss_threshold: AttackResult
    calibrated: AttackResult

    @property
    def results(self) -> tuple[AttackResult, AttackResult]:
        return (self.loss_threshold, self.calibrated)


class Predictor(Protocol):
    """What the audit needs from a trainer (e.g. ``fedpharma.models.trainer.TorchTrainer``)."""

    def predict(self, params: Parameters, data: Dataset) -> npt.NDArray[np.float32]:
        """n×t predictions: regression values or class-1 probabilities."""
        ...


def per_example_loss(
    task: Objective, labels: npt.ArrayLike, predictions: npt.ArrayLike
) -> FloatArray:
    """Each example's loss, averaged over its observed labels; NaN for an example with none.

    ``labels`` and ``predictions`` are n×t (a 1-D array is one task); ``labels`` holds NaN where a
    label is missing. Regression: squared error. Classification: binary cross-entropy of 0/1
    labels against class-1 probabilities clipped to [ε, 1 − ε] (:data:`PROBABILITY_EPSILON`).
    Predictions at missing labels are ignored, whatever they are; a non-finite prediction at an
    observed label raises :class:`DataError` (it cannot be ranked against anything).
    """
    if task not in ("regression", "classification"):
        raise ValueError(f"unknown task {task!r}; expected 'regression' or 'classification'")
    try:
        truth, predicted = as_matrices(labels, predictions)
    except ValueError as exc:
        raise DataError(f"labels and predictions: {exc}") from exc
    observed = ~np.isnan(truth)
    if not np.all(np.isfinite(predicted[observed])):
        raise DataError("a prediction at an observed label is NaN or infinite (diverged model?)")
    # Missing entries get harmless stand-ins before the elementwise loss, then weight zero.
    targets = np.where(observed, truth, 0.0)
    values = np.where(observed, predicted, 0.5)
    if task == "regression":
        elementwise = np.square(values - targets)
    else:
        if not np.all(np.isin(targets, (0.0, 1.0))):
            raise DataError("classification labels must be 0 or 1 (or NaN when missing)")
        p = np.clip(values, PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)
        elementwise = -(targets * np.log(p) + (1.0 - targets) * np.log1p(-p))
    counts = observed.sum(axis=1)
    totals = np.where(observed, elementwise, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def loss_threshold_attack(
    member_losses: npt.ArrayLike, nonmember_losses: npt.ArrayLike
) -> AttackResult:
    """Yeom et al. (2018, §3.2) loss-threshold attack: score = −loss; NaN losses are skipped."""
    members = _losses(member_losses, "member_losses")
    nonmembers = _losses(nonmember_losses, "nonmember_losses")
    return attack_from_scores(
        LOSS_THRESHOLD, -members[~np.isnan(members)], -nonmembers[~np.isnan(nonmembers)]
    )


def calibrated_attack(
    member_losses: npt.ArrayLike,
    member_reference_losses: npt.ArrayLike,
    nonmember_losses: npt.ArrayLike,
    nonmember_reference_losses: npt.ArrayLike,
) -> AttackResult:
    """Watson et al. (2022, §3) difficulty-calibrated attack: score = −(loss − reference loss).

    Each reference loss is the same example's loss under a model that did not train on it (the
    model before training, the global model a site started from, or one trained on other data).
    Examples whose target or reference loss is NaN (no observed label) are skipped.
    """
    scores = []
    for side, target, reference in (
        ("member", member_losses, member_reference_losses),
        ("nonmember", nonmember_losses, nonmember_reference_losses),
    ):
        target_losses = _losses(target, f"{side}_losses")
        reference_losses = _losses(reference, f"{side}_reference_losses")
        if target_losses.shape != reference_losses.shape:
            raise DataError(
                f"{side} losses have shape {target_losses.shape} but their reference losses "
                f"{reference_losses.shape}; they must be the same examples in the same order"
            )
        difference = target_losses - reference_losses
        scores.append(-difference[~np.isnan(difference)])
    return attack_from_scores(CALIBRATED, scores[0], scores[1])


def attack_from_scores(
    name: str, member_scores: npt.ArrayLike, nonmember_scores: npt.ArrayLike
) -> AttackResult:
    """AUC and advantage of an attack whose score is higher for examples it calls members.

    Raises :class:`DataError` when either side is empty or a score is NaN.
    """
    members = np.asarray(member_scores, dtype=np.float64).ravel()
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    for side, scores in (("members", members), ("non-members", nonmembers)):
        if scores.size == 0:
            raise DataError(f"membership attack {name!r} has no {side} with an observed label")
        if np.isnan(scores).any():
            raise DataError(f"membership attack {name!r}: a score of the {side} is NaN")
    is_member = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    scores = np.concatenate([members, nonmembers])
    auc = float(sk.roc_auc_score(is_member, scores))
    fpr, tpr, _ = sk.roc_curve(is_member, scores, drop_intermediate=False)
    advantage = float(np.max(tpr - fpr))
    return AttackResult(name, auc, advantage, int(members.size), int(nonmembers.size))


def audit_membership(
    predictor: Predictor,
    target: Parameters,
    reference: Parameters,
    members: Dataset,
    nonmembers: Dataset,
    *,
    rng: np.random.Generator,
) -> MembershipAudit:
    """Run both attacks against the model ``target``, calibrated by the model ``reference``.

    ``members`` were in the target's training data; ``nonmembers`` should be drawn from the same
    distribution but were not (with a scaffold split they are also out of distribution, and the
    attack measures that shift on top of memorisation, so the AUC overstates the leak). Neither
    may have been in the reference model's training data.

    Examples without an observed label are dropped; then the larger side is subsampled without
    replacement (with ``rng``) to the size of the smaller, so both attacks see the same, balanced
    examples.
    """
    if members.task != nonmembers.task:
        raise DataError(
            f"members are a {members.task} dataset but non-members a {nonmembers.task} one"
        )
    member_rows = _labelled_rows(members, "members")
    nonmember_rows = _labelled_rows(nonmembers, "non-members")
    size = min(member_rows.size, nonmember_rows.size)
    member_set = members.subset(_subsample(member_rows, size, rng))
    nonmember_set = nonmembers.subset(_subsample(nonmember_rows, size, rng))

    def losses(params: Parameters, data: Dataset) -> FloatArray:
        return per_example_loss(data.task, data.dense_labels(), predictor.predict(params, data))

    member_losses = losses(target, member_set)
    nonmember_losses = losses(target, nonmember_set)
    return MembershipAudit(
        loss_threshold=loss_threshold_attack(member_losses, nonmember_losses),
        calibrated=calibrated_attack(
            member_losses,
            losses(reference, member_set),
            nonmember_losses,
            losses(reference, nonmember_set),
        ),
    )


def audit_update(
    predictor: Predictor,
    global_params: Parameters,
    update: Parameters,
    members: Dataset,
    nonmembers: Dataset,
    *,
    rng: np.random.Generator,
) -> MembershipAudit:
    """Both attacks against one site's raw update Δ_k, as a coordinator without SecAgg sees it.

    The attacker applies the update to the global model it sent (target w + Δ_k) and calibrates
    with that global model itself (reference w). ``members`` is the site's training data for
    that round; ``nonmembers`` data the site did not train on. See :func:`audit_membership`.
    """
    if not update.same_structure(global_params):
        raise DataError("the update's parameter names or shapes differ from the global model's")
    local = global_params.unflatten(global_params.flatten() + update.flatten())
    return audit_membership(predictor, local, global_params, members, nonmembers, rng=rng)


def _losses(values: npt.ArrayLike, what: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise DataError(f"{what} must be one loss per example (1-D), got shape {array.shape}")
    return array


def _labelled_rows(data: Dataset, what: str) -> npt.NDArray[np.int64]:
    rows = np.flatnonzero((~np.isnan(data.dense_labels())).any(axis=1)).astype(np.int64)
    if rows.size == 0:
        raise DataError(
            f"membership audit: the {what} ({data.name!r}, {len(data)} rows) have no observed label"
        )
    return rows


def _subsample(
    rows: npt.NDArray[np.int64], size: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    if rows.size <= size:
        return rows
    return np.sort(rng.choice(rows, size=size, replace=False))
