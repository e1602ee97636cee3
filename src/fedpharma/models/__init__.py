"""PyTorch models, their parameter adapters, the masked multitask loss and the local trainer.

Importing this package does not import torch: the names below load their module on first use, so
code that only needs :class:`FitOutput` or :class:`Trainer` (e.g. to type a site runtime) stays
light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fedpharma.models.base import FitOutput, Trainer

if TYPE_CHECKING:
    from fedpharma.models.loss import masked_multitask_loss
    from fedpharma.models.networks import FeedForwardNetwork, build_model
    from fedpharma.models.parameters import get_parameters, set_parameters
    from fedpharma.models.trainer import TorchTrainer

_LAZY = {
    "FeedForwardNetwork": "fedpharma.models.networks",
    "build_model": "fedpharma.models.networks",
    "get_parameters": "fedpharma.models.parameters",
    "set_parameters": "fedpharma.models.parameters",
    "masked_multitask_loss": "fedpharma.models.loss",
    "TorchTrainer": "fedpharma.models.trainer",
}

__all__ = [
    "FeedForwardNetwork",
    "FitOutput",
    "TorchTrainer",
    "Trainer",
    "build_model",
    "get_parameters",
    "masked_multitask_loss",
    "set_parameters",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
