"""Feed-forward networks for (multitask) molecular property prediction.

Every network is a :class:`FeedForwardNetwork`: a ``trunk`` of hidden layers followed by a linear
``head`` with one output per task. Parameter names are stable and readable
(``trunk.hidden1.weight`` … ``head.bias``), so a coordinator can match them across sites and a
later personalisation scheme can keep the ``head.*`` parameters private.

There is deliberately no BatchNorm: its running statistics are buffers computed from batches of
private records (they would leak data and are not averaged by FedAvg), and per-batch statistics
couple examples, which breaks per-example gradient clipping in DP-SGD (Abadi et al. 2016, §3.1).

Sparse inputs (folded fingerprint counts) enter the first layer as an EmbeddingBag-style sum
(as SparseChem does; Arany et al. 2022), computing the same function as the dense layer with the
same parameters, so the codec, private heads and checkpoints see no difference.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional

from fedpharma.core.config import ModelConfig
from fedpharma.models.batches import SparseBatch


class FeedForwardNetwork(nn.Module):
    """``head(trunk(x))``: an MLP trunk (empty for a linear model) and a multitask linear head."""

    def __init__(self, trunk: nn.Sequential, head: nn.Linear) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, features: torch.Tensor | SparseBatch) -> torch.Tensor:
        if not isinstance(features, SparseBatch):
            return self.head(self.trunk(features))  # type: ignore[no-any-return]
        # A sparse batch enters the first Linear layer as a weighted sum of the weight columns
        # of its stored entries (an EmbeddingBag over the transposed weight): x·Wᵀ + b, the
        # dense layer's function, without a dense input.
        first = self.first_layer()
        hidden = (
            functional.embedding_bag(
                features.indices,
                first.weight.t(),
                features.offsets,
                mode="sum",
                per_sample_weights=features.values,
            )
            + first.bias
        )
        if len(self.trunk) == 0:
            return hidden
        return self.head(self.trunk[1:](hidden))  # type: ignore[no-any-return]

    def first_layer(self) -> nn.Linear:
        """The layer that reads the input features: ``trunk.hidden1``, or the head alone."""
        return self.trunk[0] if len(self.trunk) else self.head  # type: ignore[return-value]


def build_model(
    config: ModelConfig, n_features: int, n_tasks: int, *, seed: int = 0
) -> FeedForwardNetwork:
    """The network ``config`` describes, with ``n_tasks`` outputs (logits or regression values).

    ``kind = "mlp"``: per hidden width, Linear → ReLU → Dropout, then the head.
    ``kind = "linear"``: the head alone, i.e. linear regression, or logistic regression once the
    loss applies a sigmoid.

    Weights are drawn from a local generator seeded with ``seed`` (PyTorch's default ``nn.Linear``
    initialisation, U(±1/√fan_in)), so the result depends on ``seed`` only and the global torch
    RNG is neither read nor advanced.
    """
    if n_features < 1 or n_tasks < 1:
        raise ValueError(f"need n_features ≥ 1 and n_tasks ≥ 1, got {n_features} and {n_tasks}")
    if config.kind not in ("mlp", "linear"):
        raise ValueError(f"unknown model kind {config.kind!r}; expected 'mlp' or 'linear'")
    hidden = config.hidden if config.kind == "mlp" else ()
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width = n_features
    # Built on the meta device (no memory, no RNG use), then materialised and initialised below.
    with torch.device("meta"):
        for i, out_width in enumerate(hidden, start=1):
            layers[f"hidden{i}"] = nn.Linear(width, out_width)
            layers[f"relu{i}"] = nn.ReLU()
            if config.dropout > 0:
                layers[f"dropout{i}"] = nn.Dropout(config.dropout)
            width = out_width
        network = FeedForwardNetwork(nn.Sequential(layers), nn.Linear(width, n_tasks))
    network.to_empty(device="cpu")
    _initialize(network, torch.Generator().manual_seed(seed))
    _store_transposed(network.first_layer())
    return network


def trainable_weights(network: nn.Module, config: ModelConfig) -> list[nn.Parameter]:
    """The weights local training updates: all, or the head's alone with ``freeze_trunk``."""
    module = network.get_submodule("head") if config.freeze_trunk else network
    return [w for w in module.parameters() if w.requires_grad]


def _store_transposed(layer: nn.Linear) -> None:
    """Keep the first layer's (out × in) weight in column-major memory, same shape and values.

    Its transpose is then contiguous, which the sparse input path reads as an embedding table
    (one row per input column): ~10× faster than a transposed copy, and the dense path's matmul
    reads either layout at the same speed.
    """
    with torch.no_grad():
        layer.weight = nn.Parameter(layer.weight.t().contiguous().t())


def _initialize(network: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default ``nn.Linear`` initialisation, drawn from ``generator``."""
    with torch.no_grad():
        for layer in network.modules():
            if isinstance(layer, nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
