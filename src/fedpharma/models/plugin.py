"""Model plugins: any PyTorch network a consortium trains, named by the recipe.

A plugin says how to build the network from the recipe and the data's shape, and how a site
turns its own records into the network's minibatch inputs; :class:`~fedpharma.models.trainer.
TorchTrainer` does the rest (the masked multitask loss, FedAvg/FedProx/SCAFFOLD steps,
prediction), so every strategy, private heads, DP-SGD, SecAgg and CKKS see only
:class:`~fedpharma.core.params.Parameters`. fedpharma's own feed-forward networks are the plugin
:class:`FeedForwardPlugin`. ``[model] plugin`` names a built-in (``plugin_identity.BUILTINS``)
or a ``package.module:Class`` installed at every site; a site runs a plugin's code only once its
policy approves the plugin's digest (:mod:`fedpharma.models.plugin_identity`). Writing one:
``docs/model-plugins.md``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

from fedpharma.core.config import ModelConfig, plugin_problems
from fedpharma.core.errors import ConfigError
from fedpharma.models.batches import TensorData
from fedpharma.models.networks import build_model
from fedpharma.models.plugin_identity import BUILTINS, reads_smiles

if TYPE_CHECKING:
    from fedpharma.core.dataset import Dataset, Objective


class ModelShape(Protocol):
    """What a plugin may know about the data before seeing any: a Dataset, or a bare shape."""

    @property
    def task(self) -> Objective: ...

    @property
    def n_features(self) -> int: ...

    @property
    def n_tasks(self) -> int: ...


class PluginInputs(Protocol):
    """A site's data as the network reads it: the network's input for the given rows."""

    def features(self, rows: torch.Tensor) -> Any: ...


@runtime_checkable
class ModelPlugin(Protocol):
    """A network and its inputs (``docs/model-plugins.md``).

    - :meth:`build`: the network for ``model`` and ``shape``, its weights a function of
      ``seed`` alone (draw them from a local ``torch.Generator``); its per-task output layer,
      if it has one, is the ``nn.Linear`` named ``head`` (parameters ``head.weight`` and
      ``head.bias``), which private heads keep at each site and output calibration starts at
      the label statistics. Outputs are n × tasks: values (regression) or logits.
    - :meth:`inputs`: ``data`` as minibatch inputs on ``tensors.device``; ``tensors`` holds its
      features and labels there already.
    - :meth:`dp_sgd_problems`: why DP-SGD cannot train ``network`` (empty if it can). DP-SGD
      clips per row of the dense feature matrix, so a plugin may return nothing only if its
      network reads those rows (``tensors.dense_features``) and Opacus computes per-row
      gradients of all its layers.
    """

    def build(self, model: ModelConfig, shape: ModelShape, seed: int) -> nn.Module: ...

    def inputs(self, data: Dataset, tensors: TensorData) -> PluginInputs: ...

    def dp_sgd_problems(self, network: nn.Module) -> list[str]: ...


@runtime_checkable
class DescribesInputs(Protocol):
    """A plugin that builds its own inputs from molecules says how, for the join check: a few
    settings and a digest of its inputs for the public ``reference`` SMILES
    (``data.preprocessing.reference_smiles``)."""

    def featurization(self, reference: Sequence[str]) -> dict[str, str | int]: ...


def plugin_inputs(name: str | None, reference: Callable[[], Sequence[str]]) -> dict[str, str | int]:
    """How the plugin ``name`` builds its own inputs, for the join check (empty if it reads the
    feature rows). Imports the plugin: at a site, only after its approval."""
    if not reads_smiles(name):
        return {}
    plugin = load_plugin(name)
    return plugin.featurization(reference()) if isinstance(plugin, DescribesInputs) else {}


class FeedForwardPlugin:
    """fedpharma's own networks (``[model] kind``, or ``plugin = "mlp"`` / ``"linear"``):
    :func:`~fedpharma.models.networks.build_model` over the feature matrix, dense or sparse."""

    def __init__(self, kind: str | None = None) -> None:
        self.kind = kind

    def build(self, model: ModelConfig, shape: ModelShape, seed: int) -> nn.Module:
        config = model if self.kind is None else dataclasses.replace(model, kind=self.kind)
        return build_model(config, shape.n_features, shape.n_tasks, seed=seed)

    def inputs(self, data: Dataset, tensors: TensorData) -> PluginInputs:
        return tensors

    def dp_sgd_problems(self, network: nn.Module) -> list[str]:
        return []


def load_plugin(name: str | None) -> ModelPlugin:
    """The plugin ``[model] plugin`` names (``None``: ``[model] kind``), imported and made.

    Imports run the plugin's code: a site calls this only after its policy approved the
    plugin (:func:`fedpharma.site.plugin_approval.plugin_refusal`)."""
    if name is None:
        return FeedForwardPlugin()
    if name in ("mlp", "linear"):
        return FeedForwardPlugin(name)
    problems = plugin_problems(name)
    if problems:
        raise ConfigError(problems, source="model plugin")
    target = BUILTINS[name].target if name in BUILTINS else name
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            [
                f"[model] plugin = {name!r}: cannot import {module_name!r} ({exc}); install "
                "the plugin's distribution at this site"
                + (" (pip install 'fedpharma[chemprop]')" if name == "dmpnn" else "")
            ],
            source="model plugin",
        ) from exc
    made = getattr(module, class_name, None)
    plugin = made() if callable(made) else None
    if not isinstance(plugin, ModelPlugin):
        raise ConfigError(
            [
                f"[model] plugin = {name!r}: {target} is not a model plugin class (it needs "
                "build, inputs and dp_sgd_problems; docs/model-plugins.md)"
            ],
            source="model plugin",
        )
    return plugin
