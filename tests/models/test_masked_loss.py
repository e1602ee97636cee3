"""The masked multitask loss ignores missing labels exactly, in value and in gradient."""

import numpy as np
import pytest
import torch
from torch.nn import functional

from fedpharma.models.loss import masked_multitask_loss

NAN = float("nan")
LABELS = {
    "regression": [[1.5, NAN, -0.3], [NAN, NAN, 2.0], [0.2, 4.0, NAN], [NAN, 1.0, 0.0]],
    "classification": [[1.0, NAN, 0.0], [NAN, NAN, 1.0], [0.0, 1.0, NAN], [NAN, 0.0, 0.0]],
}


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_equals_loss_on_observed_entries_and_zero_gradient_where_missing(task: str) -> None:
    labels = torch.tensor(LABELS[task])
    outputs = torch.randn(labels.shape, generator=torch.Generator().manual_seed(0))
    outputs.requires_grad_(True)
    observed = ~torch.isnan(labels)

    loss = masked_multitask_loss(outputs, labels, task)  # type: ignore[arg-type]
    torch.autograd.backward(loss)

    kept_outputs, kept_labels = outputs.detach()[observed], labels[observed]
    if task == "regression":
        expected = functional.mse_loss(kept_outputs, kept_labels)
    else:
        expected = functional.binary_cross_entropy_with_logits(kept_outputs, kept_labels)
    torch.testing.assert_close(loss.detach(), expected)
    assert outputs.grad is not None
    assert torch.all(outputs.grad[~observed] == 0)
    assert torch.all(outputs.grad[observed] != 0)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_batch_without_labels_gives_zero_loss_and_zero_gradient(task: str) -> None:
    outputs = torch.randn(3, 2, requires_grad=True)
    loss = masked_multitask_loss(outputs, torch.full((3, 2), NAN), task)  # type: ignore[arg-type]
    torch.autograd.backward(loss)
    assert loss.item() == 0.0
    assert outputs.grad is not None
    assert torch.count_nonzero(outputs.grad) == 0


def test_huge_logits_at_missing_positions_stay_harmless() -> None:
    outputs = torch.tensor([[1e30, 0.5]], requires_grad=True)
    loss = masked_multitask_loss(outputs, torch.tensor([[NAN, 1.0]]), "regression")
    torch.autograd.backward(loss)
    assert np.isfinite(loss.item())
    assert outputs.grad is not None
    assert outputs.grad[0, 0] == 0


def test_unknown_task_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        masked_multitask_loss(torch.zeros(1, 1), torch.zeros(1, 1), "ranking")  # type: ignore[arg-type]
