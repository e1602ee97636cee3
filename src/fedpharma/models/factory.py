"""The trainer a run recipe names, for a given model input shape.

Shared by the simulation engine and a deployed site (and the coordinator, which needs the
initial parameters): both build the same :class:`TorchTrainer` from the same recipe, so the
model a deployment trains is the one a simulation trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedpharma.core.config import RunConfig
from fedpharma.models.base import Trainer
from fedpharma.models.private_head import PrivateHeadTrainer

if TYPE_CHECKING:
    from fedpharma.core.dataset import TargetScaling
    from fedpharma.models.dpsgd import DPSGDTrainer
    from fedpharma.models.plugin import ModelPlugin, ModelShape


def build_trainer(
    config: RunConfig,
    inputs: ModelShape,
    plugin: ModelPlugin | None = None,
    *,
    targets: TargetScaling | None = None,
) -> Trainer:
    """The recipe's model and local training, for ``inputs``' task and shape; with
    ``[model] private_heads`` a trainer of the trunk whose head stays at the site.
    ``targets``: regression targets standardized for training, predictions mapped back (a
    tabular run's fitted preprocessing; not with private heads, which fit their own head).

    ``plugin``: the recipe's ``[model] plugin``, loaded (:func:`load_recipe_plugin`); by
    default it is loaded here."""
    from fedpharma.models.trainer import TorchTrainer  # torch loads only when training

    network = TorchTrainer(
        config.model,
        config.training,
        inputs.task,
        inputs.n_features,
        inputs.n_tasks,
        load_recipe_plugin(config) if plugin is None else plugin,
        None if config.model.private_heads else targets,
    )
    if config.model.private_heads:
        return PrivateHeadTrainer(
            network, inputs.task, seed=config.seed, calibrate=config.training.calibrate_output
        )
    return network


def build_private_trainer(
    config: RunConfig,
    inputs: ModelShape,
    *,
    reproducible: bool = False,
    targets: TargetScaling | None = None,
) -> DPSGDTrainer:
    """The recipe's model trained with DP-SGD (record-level DP); σ and C come per task.

    Sampling and noise come from the OS CSPRNG; ``reproducible`` (simulation only) draws them
    from the task's seed instead, which whoever knows the seed can regenerate."""
    from fedpharma.models.dpsgd import DPSGDTrainer

    dp = config.privacy
    return DPSGDTrainer(
        config.model,
        config.training,
        inputs.task,
        inputs.n_features,
        inputs.n_tasks,
        noise_multiplier=1.0 if dp.noise_multiplier is None else dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        secure_mode=not reproducible,
        plugin=load_recipe_plugin(config),
        targets=None if config.model.private_heads else targets,
    )


def load_recipe_plugin(config: RunConfig) -> ModelPlugin:
    """The recipe's ``[model] plugin`` (imports its code: approve it first)."""
    from fedpharma.models.plugin import load_plugin

    return load_plugin(config.model.plugin)
