"""Local training at one site: minibatch Adam / SGD on its data, optionally with FedProx.

:meth:`TorchTrainer.fit` is FedAvg's ClientUpdate (McMahan et al. 2017, "Communication-Efficient
Learning of Deep Networks from Decentralized Data", Algorithm 1): E epochs of minibatch gradient
steps starting from the global weights. With ``proximal_mu = μ > 0`` it is FedProx's local solver
(Li et al. 2020, "Federated Optimization in Heterogeneous Networks", §3, Eq. 2), which minimises
F_k(w) + (μ/2)‖w − wᵗ‖², keeping a heterogeneous site's update near the global model wᵗ.

Centralised and local-only baselines are the same :meth:`~TorchTrainer.fit` on pooled or local
data, so there is no separate API for them.

The network and its minibatch inputs come from a model plugin (:mod:`fedpharma.models.plugin`):
fedpharma's own feed-forward networks by default, or any network the recipe names.

Speed matters (the overhead benchmark compares a federated run with a bare PyTorch loop): the
Dataset becomes tensors once per call without copying, minibatches are index gathers over those
tensors (no DataLoader), the optimizer step is fused, the optimizer's state memory is reused from
call to call (zeroed, not reallocated), each step frees the last step's gradients before making
its own, and the per-step Python work is the forward, the backward and the step.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from fedpharma.core.config import ModelConfig, TrainingConfig
from fedpharma.core.errors import DataError
from fedpharma.core.params import Parameters
from fedpharma.models.base import FitOutput
from fedpharma.models.batches import TensorData
from fedpharma.models.device import autocast, resolve_device
from fedpharma.models.loss import balanced_class_weights, masked_multitask_loss
from fedpharma.models.networks import trainable_weights
from fedpharma.models.parameters import HostCopies, get_parameters, host_array, set_parameters
from fedpharma.models.plugin import FeedForwardPlugin, ModelPlugin, PluginInputs
from fedpharma.models.pretrained import apply_pretrained, load_weights

if TYPE_CHECKING:
    from fedpharma.core.dataset import Dataset, Objective, TargetScaling

PREDICT_BATCH_ROWS = 8192  # large: inference keeps no activations for backward


class TorchTrainer:
    """Trains and applies one network architecture (``plugin``'s; by default
    :func:`~fedpharma.models.networks.build_model`'s) on a site's data.

    Holds one network instance that every call overwrites with the parameters it is given, and
    the optimizer's state (with Adam, two more copies of the trainable weights), so a trainer is
    cheap to call repeatedly but must not be shared between threads. Inputs a plugin
    builds itself are kept while their dataset lives (a graph plugin featurizes each molecule
    once); the feature tensors are made afresh per call (they share the arrays' memory).
    """

    def __init__(
        self,
        model_config: ModelConfig,
        training_config: TrainingConfig,
        task: Objective,
        n_features: int,
        n_tasks: int,
        plugin: ModelPlugin | None = None,
        targets: TargetScaling | None = None,
    ) -> None:
        if training_config.optimizer not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {training_config.optimizer!r}")
        self.model_config = model_config
        self.training_config = training_config
        self.task: Objective = task
        self.n_features = n_features
        self.n_tasks = n_tasks
        self.plugin: ModelPlugin = FeedForwardPlugin() if plugin is None else plugin
        # Regression targets standardized for training, outputs mapped back (core.dataset)
        self.targets = targets if task == "regression" else None
        self._network = self.build_network()
        self._device: torch.device | None = None  # resolved when the site first trains
        self._inputs: dict[int, tuple[weakref.ref[Dataset], PluginInputs]] = {}
        self._stepper: _Stepper | None = None  # the optimizer; its state memory is reused
        self._copies = HostCopies()  # what fit returns, in memory the last result freed

    def build_network(self, seed: int = 0) -> torch.nn.Module:
        """A fresh network of this trainer's architecture, initialised from ``seed``."""
        return self.plugin.build(self.model_config, self, seed)

    def initial_parameters(self, seed: int) -> Parameters:
        """Freshly initialised parameters; the same ``seed`` always gives the same values."""
        params = get_parameters(self.build_network(seed))
        if self.model_config.init is None:
            return params
        return apply_pretrained(
            params, load_weights(self.model_config.init, self.model_config.init_sha256)
        )

    def fit(
        self,
        params: Parameters,
        data: Dataset,
        *,
        epochs: int,
        seed: int,
        proximal_mu: float = 0.0,
        correction: Parameters | None = None,
    ) -> FitOutput:
        """Train from ``params`` on ``data`` for ``epochs`` epochs and return the new parameters.

        Deterministic given ``seed``: it seeds a local generator for the minibatch order and,
        inside :func:`torch.random.fork_rng`, the CPU generator that dropout draws from, so the
        caller's global RNG state is left as it was. The optimizer is fresh on every call (its
        moments are not carried across rounds), as in FedAvg's ClientUpdate. ``correction``
        (SCAFFOLD's c − c_i, Karimireddy et al. 2020, Alg. 1 line 10) is added to every step's
        gradient.
        """
        started = time.perf_counter()
        if epochs < 1:
            raise ValueError(f"epochs must be ≥ 1, got {epochs}")
        if proximal_mu < 0:
            raise ValueError(f"proximal_mu must be ≥ 0, got {proximal_mu}")
        tensors, inputs = self._prepared(data)
        n_examples = len(data)
        if n_examples == 0:
            raise DataError(f"cannot train on {data.name!r}: it has no rows")
        class_weights = self._class_weights(data, tensors.device)

        network = self._network
        set_parameters(network, params)
        device, precision = tensors.device, self.training_config.precision
        weights = trainable_weights(network, self.model_config)
        global_weights = [w.detach().clone() for w in weights] if proximal_mu > 0 else []
        corrections = [] if correction is None else self._aligned(correction, weights)
        stepped, optimizer = self._fresh_optimizer(weights)
        gradients = [*weights, *stepped]
        shuffle_seed, dropout_seed = np.random.SeedSequence(seed).generate_state(2, np.uint64)
        shuffler = torch.Generator().manual_seed(int(shuffle_seed))
        batch_size = self.training_config.batch_size

        network.train()
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.default_generator.manual_seed(int(dropout_seed))
            if devices:
                torch.cuda.manual_seed(int(dropout_seed))
            for _ in range(epochs):
                order = torch.randperm(n_examples, generator=shuffler)
                batch_losses = []
                for rows in torch.split(order.to(device), batch_size):
                    for w in gradients:  # frees the last step's before this one's is made
                        w.grad = None
                    with autocast(device, precision):
                        outputs = network(inputs.features(rows))
                    loss = masked_multitask_loss(
                        outputs.float(), tensors.labels(rows), self.task, class_weights
                    )
                    torch.autograd.backward(loss)
                    if global_weights:
                        # Gradient of (μ/2)‖w − wᵗ‖² is μ(w − wᵗ); adding it directly is the same
                        # update as adding the term to the loss, without growing the graph.
                        with torch.no_grad():
                            for w, w_global in zip(weights, global_weights, strict=True):
                                w.grad.add_(w - w_global, alpha=proximal_mu)  # type: ignore[union-attr]
                    for w, c in zip(weights, corrections, strict=False):
                        w.grad.add_(c)  # type: ignore[union-attr]
                    for alias, w in zip(stepped, weights, strict=True):
                        if alias is not w and w.grad is not None:
                            alias.grad = w.grad.t()
                    optimizer.step()
                    batch_losses.append(loss.detach())
        observed = tensors.observed_per_row[order.to(device)]
        train_loss = _mean_over_observed_labels(batch_losses, observed, batch_size)
        return FitOutput(
            parameters=self._copies.copy(network),
            n_examples=n_examples,
            train_loss=train_loss,
            seconds=time.perf_counter() - started,
        )

    def gradient(self, params: Parameters, data: Dataset) -> Parameters:
        """∇f(params): the gradient of the mean loss over all observed labels of ``data``, the
        network in evaluation mode (SCAFFOLD's Option I variate, Karimireddy et al. 2020)."""
        tensors, inputs = self._prepared(data)
        network = self._network
        set_parameters(network, params)
        network.eval()
        weights = [w for w in network.parameters() if w.requires_grad]
        network.zero_grad()
        total = max(int(tensors.observed_per_row.sum()), 1)
        class_weights = self._class_weights(data, tensors.device)
        everything = torch.arange(len(data), device=tensors.device)
        for rows in torch.split(everything, self.training_config.batch_size * 16):
            observed = int(tensors.observed_per_row[rows].sum())
            outputs = network(inputs.features(rows)).float()
            loss = masked_multitask_loss(outputs, tensors.labels(rows), self.task, class_weights)
            torch.autograd.backward(loss * (observed / total))
        grads = [torch.zeros_like(w) if w.grad is None else w.grad for w in weights]
        names = get_parameters(network).names
        arrays = tuple(host_array(g) for g in grads)
        return Parameters(names, arrays)

    def predict(self, params: Parameters, data: Dataset) -> npt.NDArray[np.float32]:
        """n×t predictions for ``data``: regression values (in label units, with standardized
        ``targets`` too), or class-1 probabilities (sigmoid)."""
        tensors, inputs = self._prepared(data)
        network = self._network
        set_parameters(network, params)
        network.eval()
        rows = torch.arange(len(data), device=tensors.device)
        with torch.inference_mode(), autocast(tensors.device, self.training_config.precision):
            chunks = [
                network(inputs.features(chunk)).float()
                for chunk in torch.split(rows, PREDICT_BATCH_ROWS)
            ]
            outputs = torch.cat(chunks) if chunks else torch.zeros((0, self.n_tasks))
            if self.task == "classification":
                outputs = torch.sigmoid(outputs)
            predicted = outputs.cpu().numpy().astype(np.float32, copy=False)
        return predicted if self.targets is None else self.targets.restore(predicted)

    def _class_weights(self, data: Dataset, device: torch.device) -> torch.Tensor | None:
        """``[training] class_weight = "balanced"``: this site's balanced weights per task,
        from its own training labels (nothing leaves the site); None otherwise."""
        if self.training_config.class_weight != "balanced" or self.task != "classification":
            return None
        return torch.from_numpy(balanced_class_weights(data.dense_labels())).to(device)

    def _fresh_optimizer(
        self, weights: list[torch.nn.Parameter]
    ) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer]:
        """The weights the optimizer steps (:func:`_row_major`) and an optimizer over them in the
        state a new one starts in (FedAvg's ClientUpdate: no moments carried across calls).

        The previous call's optimizer is kept and its state zeroed in place: Adam's lazily made
        state is its step count and two moment buffers, all zeros, so the steps are the same bit
        for bit, without faulting in fresh memory the size of two models on every call (the
        trainer holds that memory between calls). fedpharma's SGD has no momentum, so no state.
        """
        kept = self._stepper
        if kept is None:  # the network, hence its trainable weights, is this trainer's for good
            stepped = [_row_major(w) for w in weights]
            kept = self._stepper = _Stepper(stepped, self._optimizer(stepped))
        for state in kept.optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    value.zero_()
        return kept.stepped, kept.optimizer

    def _optimizer(self, weights: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        cfg = self.training_config
        if cfg.optimizer == "adam":
            return torch.optim.Adam(
                weights, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True
            )
        return torch.optim.SGD(
            weights, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True
        )

    @staticmethod
    def _aligned(values: Parameters, weights: list[torch.nn.Parameter]) -> list[torch.Tensor]:
        """``values`` as tensors, one per trainable weight (same shapes)."""
        if len(values) != len(weights) or any(
            tuple(w.shape) != a.shape for w, a in zip(weights, values.arrays, strict=True)
        ):
            raise DataError("the SCAFFOLD correction does not fit the model's parameters")
        return [
            torch.tensor(a, dtype=torch.float32, device=w.device)
            for a, w in zip(values.arrays, weights, strict=True)
        ]

    def _tensors(self, data: Dataset) -> TensorData:
        """``data``'s features and labels on this trainer's device (sharing memory on the CPU);
        the network moves there on first use."""
        if data.task != self.task:
            raise DataError(f"{data.name!r} is a {data.task} dataset; this model does {self.task}")
        if data.n_features != self.n_features or data.n_tasks != self.n_tasks:
            raise DataError(
                f"{data.name!r} has {data.n_features} features and {data.n_tasks} tasks; "
                f"this model expects {self.n_features} and {self.n_tasks}"
            )
        if self._device is None:
            self._device = resolve_device(self.training_config.device)
            self._network.to(self._device)
        labels = data.labels if self.targets is None else self.targets.standardize(data.labels)
        return TensorData(data.features, labels, self._device)

    def _prepared(self, data: Dataset) -> tuple[TensorData, PluginInputs]:
        """``data`` as tensors and as the plugin's inputs, kept for the next calls."""
        tensors = self._tensors(data)
        kept = self._inputs.get(id(data))
        if kept is not None and kept[0]() is data:
            return tensors, kept[1]
        inputs = self.plugin.inputs(data, tensors)
        if inputs is not tensors:
            self._inputs[id(data)] = (weakref.ref(data), inputs)
            weakref.finalize(data, self._inputs.pop, id(data), None)
        return tensors, inputs


@dataclass(frozen=True)
class _Stepper:
    """A trainer's optimizer and the weights it steps."""

    stepped: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer


def _row_major(weight: torch.nn.Parameter) -> torch.nn.Parameter:
    """What the optimizer steps for ``weight``: itself, or for the column-major first layer
    (:func:`~fedpharma.models.networks.build_model` stores it so) its transpose, a row-major
    parameter over the same memory, whose gradient is the transposed gradient. Adam is
    elementwise, so the update is the same; the fused kernel would otherwise copy the
    non-contiguous weight in and out on every step (~1 s per step at 32,768 × 2,000 on a CPU)."""
    if weight.is_contiguous() or weight.dim() != 2 or not weight.t().is_contiguous():
        return weight
    return torch.nn.Parameter(weight.detach().t())


def _mean_over_observed_labels(
    batch_losses: list[torch.Tensor], observed_per_row: torch.Tensor, batch_size: int
) -> float:
    """Mean loss per observed label over one epoch, from its per-batch means.

    ``observed_per_row`` counts each row's observed labels in the epoch's order; each batch's
    mean is weighted by its number of observed labels, computed here once per epoch rather than
    in the training loop.
    """
    padded = torch.zeros(
        len(batch_losses) * batch_size, dtype=observed_per_row.dtype, device=observed_per_row.device
    )
    padded[: len(observed_per_row)] = observed_per_row
    observed_per_batch = padded.view(len(batch_losses), batch_size).sum(dim=1)
    total = (torch.stack(batch_losses) * observed_per_batch).sum()
    return float(total / observed_per_batch.sum().clamp(min=1))
