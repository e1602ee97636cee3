"""A hospital's multimodal model: tabular EMR features plus a per-patient 1-D signal.

The non-chemistry example plugin (``[model] plugin = "emr-signal"``), after the multimodal
clinical models federated learning is used for (e.g. EXAM, Dayan et al. 2021, Nat. Med.: EMR
values with an imaging input). Each row holds the patient's tabular EMR features followed by
:data:`SIGNAL_LENGTH` samples of one signal (say, an ECG lead resampled to a fixed length); a
small 1-D convolution reads the signal, a linear layer the EMR values, and the fused
representation (the ``trunk``) feeds one output per task (the ``head``). Only Linear and
Conv1d layers carry weights, so Opacus trains it with DP-SGD, per patient.
"""

from __future__ import annotations

import torch
from torch import nn

from fedpharma.core.config import ModelConfig
from fedpharma.core.dataset import Dataset
from fedpharma.core.errors import ConfigError
from fedpharma.models.batches import SparseBatch, TensorData
from fedpharma.models.plugin import ModelShape, PluginInputs

SIGNAL_LENGTH = 64
"""Samples of the signal at the end of each row."""
_CHANNELS = 8
_POOLED = 4


class EMRSignalNetwork(nn.Module):
    """``head(fuse(tabular(x_emr) ‖ signal(x_signal)))``; ``trunk.*`` is everything but the
    head."""

    def __init__(self, n_tabular: int, width: int, dropout: float, n_tasks: int) -> None:
        super().__init__()
        self.n_tabular = n_tabular
        self.trunk = nn.ModuleDict(
            {
                "signal": nn.Sequential(
                    nn.Conv1d(1, _CHANNELS, kernel_size=7, stride=2, padding=3),
                    nn.ReLU(),
                    nn.Conv1d(_CHANNELS, _CHANNELS, kernel_size=5, stride=2, padding=2),
                    nn.ReLU(),
                    nn.AdaptiveAvgPool1d(_POOLED),
                    nn.Flatten(),
                ),
                "tabular": nn.Sequential(nn.Linear(n_tabular, width), nn.ReLU()),
                "fuse": nn.Sequential(
                    nn.Linear(width + _CHANNELS * _POOLED, width), nn.ReLU(), nn.Dropout(dropout)
                ),
            }
        )
        self.head = nn.Linear(width, n_tasks)

    def forward(self, features: torch.Tensor | SparseBatch) -> torch.Tensor:
        rows = features.dense() if isinstance(features, SparseBatch) else features
        emr, signal = rows[:, : self.n_tabular], rows[:, self.n_tabular :]
        fused = torch.cat(
            [self.trunk["tabular"](emr), self.trunk["signal"](signal.unsqueeze(1))], dim=1
        )
        return self.head(self.trunk["fuse"](fused))  # type: ignore[no-any-return]


class EMRSignalPlugin:
    """Builds :class:`EMRSignalNetwork`; its inputs are the rows of the feature matrix."""

    def build(self, model: ModelConfig, shape: ModelShape, seed: int) -> nn.Module:
        n_tabular = shape.n_features - SIGNAL_LENGTH
        if n_tabular < 1:
            raise ConfigError(
                [
                    f'[model] plugin = "emr-signal" reads EMR columns followed by {SIGNAL_LENGTH} '
                    f"signal samples per row; the data has only {shape.n_features} columns"
                ],
                source="model plugin",
            )
        width = model.hidden[0] if model.hidden else 32
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the layers' default initialisation, a function of seed
            return EMRSignalNetwork(n_tabular, width, model.dropout, shape.n_tasks)

    def inputs(self, data: Dataset, tensors: TensorData) -> PluginInputs:
        return tensors

    def dp_sgd_problems(self, network: nn.Module) -> list[str]:
        return []
