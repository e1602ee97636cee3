"""Masked multitask loss: sparse assay labels, where NaN marks a measurement nobody made.

A missing label must neither count in the mean nor push the model: the loss is the mean over the
*observed* (row, task) entries only, and its gradient at missing entries is exactly zero. This is
the usual treatment of sparse multitask bioactivity data (Ramsundar et al. 2015, "Massively
Multitask Networks for Drug Discovery", §4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional

from fedpharma.models.batches import LabelTriples

if TYPE_CHECKING:
    from fedpharma.core.dataset import Objective


def masked_multitask_loss(
    outputs: torch.Tensor,
    labels: torch.Tensor | LabelTriples,
    task: Objective,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss over the observed entries of ``labels``: dense (n×t, NaN = missing) or the
    batch's observed (row, task, value) triples, which give the same loss.

    Regression: squared error on ``outputs`` as values. Classification: binary cross-entropy on
    ``outputs`` as logits. A batch without a single observed label gives a loss of zero, with a
    zero gradient, so an unlucky minibatch is a no-op rather than a NaN. ``class_weights``
    (classification, 2 × t: per task the weight of a negative and of a positive label, see
    :func:`balanced_class_weights`) weighs each entry by its class.
    """
    if isinstance(labels, LabelTriples):
        predicted = outputs[labels.rows, labels.tasks].float()
        entries = _elementwise(predicted, labels.values, task)
        if class_weights is not None:
            entries = entries * class_weights[labels.values.long(), labels.tasks]
        return entries.sum() / max(labels.values.numel(), 1)
    observed = ~torch.isnan(labels)
    # Missing labels become 0 *before* the elementwise loss, so the loss and its derivative are
    # finite there; torch.where then routes exactly zero gradient to those entries.
    targets = torch.where(observed, labels, torch.zeros((), dtype=labels.dtype))
    elementwise = _elementwise(outputs, targets, task)
    if class_weights is not None:
        elementwise = elementwise * torch.where(
            targets == 1, class_weights[1][None, :], class_weights[0][None, :]
        )
    masked = torch.where(observed, elementwise, torch.zeros((), dtype=elementwise.dtype))
    return masked.sum() / observed.sum().clamp(min=1)


def _elementwise(outputs: torch.Tensor, targets: torch.Tensor, task: Objective) -> torch.Tensor:
    if task == "regression":
        return (outputs - targets).square()
    if task == "classification":
        return functional.binary_cross_entropy_with_logits(outputs, targets, reduction="none")
    raise ValueError(f"unknown task {task!r}; expected 'regression' or 'classification'")


def balanced_class_weights(labels: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Per task (columns of n×t 0/1 ``labels``, NaN missing) the weights n / (2 n₀) and
    n / (2 n₁) of a negative and a positive label, so each class weighs half of the loss
    (scikit-learn's ``class_weight="balanced"``); a task with one class only keeps weight 1."""
    observed = ~np.isnan(labels)
    n = observed.sum(axis=0).astype(np.float64)
    positives = np.where(observed, labels, 0.0).sum(axis=0)
    negatives = n - positives
    both = (positives > 0) & (negatives > 0)
    weights = np.ones((2, labels.shape[1]))
    weights[0, both] = n[both] / (2 * negatives[both])
    weights[1, both] = n[both] / (2 * positives[both])
    return weights.astype(np.float32)
