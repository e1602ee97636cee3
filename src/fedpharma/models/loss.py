"""Masked multitask loss: sparse assay labels, where NaN marks a measurement nobody made.

A missing label must neither count in the mean nor push the model: the loss is the mean over the
*observed* (row, task) entries only, and its gradient at missing entries is exactly zero. This is
the usual treatment of sparse multitask bioactivity data (Ramsundar et al. 2015, "Massively
Multitask Networks for Drug Discovery", §4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn import functional

if TYPE_CHECKING:
    from fedpharma.core.dataset import Objective


def masked_multitask_loss(
    outputs: torch.Tensor, labels: torch.Tensor, task: Objective
) -> torch.Tensor:
    """Mean loss over the observed entries of ``labels`` (n×t, NaN = missing).

    Regression: squared error on ``outputs`` as values. Classification: binary cross-entropy on
    ``outputs`` as logits. A batch without a single observed label gives a loss of zero, with a
    zero gradient, so an unlucky minibatch is a no-op rather than a NaN.
    """
    observed = ~torch.isnan(labels)
    # Missing labels become 0 *before* the elementwise loss, so the loss and its derivative are
    # finite there; torch.where then routes exactly zero gradient to those entries.
    targets = torch.where(observed, labels, torch.zeros((), dtype=labels.dtype))
    if task == "regression":
        elementwise = (outputs - targets).square()
    elif task == "classification":
        elementwise = functional.binary_cross_entropy_with_logits(
            outputs, targets, reduction="none"
        )
    else:
        raise ValueError(f"unknown task {task!r}; expected 'regression' or 'classification'")
    masked = torch.where(observed, elementwise, torch.zeros((), dtype=elementwise.dtype))
    return masked.sum() / observed.sum().clamp(min=1)
