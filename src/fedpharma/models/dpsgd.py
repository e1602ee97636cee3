"""Record-level differential privacy at a site: DP-SGD with Opacus.

DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy", Algorithm 1): Poisson-sample
the records, clip each record's gradient to L2 norm ≤ C, add N(0, σ²C²) to their sum, step. ε
follows from (σ, q, steps) (Abadi et al. 2016, §3.2; Mironov et al. 2019). This module only
*trains*: :meth:`DPSGDTrainer.plan` predicts the sampling facts before any data is touched and
:meth:`DPSGDTrainer.fit` returns them (:class:`DPSGDSampling`), so the site charges its ledger
first. Ghost clipping (Li et al. 2022, §4), FedProx's term after the noise (Li et al. 2020,
Eq. 2), CSPRNG-seeded generators in ``secure_mode`` (Holohan & Braghin 2021, §5.1) and model
validation: ``docs/dp-sgd.md``.
"""

from __future__ import annotations

import math
import secrets
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedpharma.core.config import ModelConfig, TrainingConfig
from fedpharma.core.errors import ConfigError, DataError
from fedpharma.core.params import Parameters
from fedpharma.models.base import FitOutput
from fedpharma.models.device import autocast
from fedpharma.models.loss import masked_multitask_loss
from fedpharma.models.networks import trainable_weights
from fedpharma.models.parameters import get_parameters, set_parameters
from fedpharma.models.plugin import ModelPlugin
from fedpharma.models.trainer import TorchTrainer

if TYPE_CHECKING:
    from fedpharma.core.dataset import Dataset, Objective, TargetScaling

# Opacus warnings that are expected here and say nothing actionable: the secure-RNG reminder
# (secure_mode is an explicit constructor choice, documented above), and the full-backward-hook
# notice its ghost clipping triggers on the first layer, whose input needs no gradient.
_EXPECTED_OPACUS_WARNINGS = ("Secure RNG turned off", "Full backward hook is firing")


@dataclass(frozen=True)
class DPSGDSampling:
    """What a DP-SGD fit released, as plain numbers an accountant composes.

    ``steps`` noised gradient steps, each on a Poisson sample with inclusion probability
    ``sampling_rate``, per-record gradients clipped to ``max_grad_norm`` and noise std
    ``noise_multiplier · max_grad_norm``: ``steps`` compositions of a Poisson-subsampled Gaussian
    mechanism with noise multiplier ``noise_multiplier``.
    """

    noise_multiplier: float
    sampling_rate: float
    steps: int
    max_grad_norm: float


@dataclass(frozen=True)
class DPFitOutput(FitOutput):
    """:class:`FitOutput` plus the DP-SGD facts the site's privacy ledger must be charged with.

    ``train_loss`` is computed on the site's records and is *not* covered by the DP guarantee.
    """

    sampling: DPSGDSampling


def poisson_schedule(n_examples: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """(sampling rate, steps) of ``epochs`` epochs of Opacus Poisson sampling over ``n_examples``:
    q = 1 / ⌈n / batch_size⌉ and ⌈n / batch_size⌉ steps per epoch."""
    if n_examples < 1 or batch_size < 1 or epochs < 1:
        raise ValueError(
            f"need n_examples, batch_size and epochs ≥ 1, got {n_examples}, {batch_size}, {epochs}"
        )
    batches_per_epoch = math.ceil(n_examples / batch_size)
    return 1 / batches_per_epoch, epochs * batches_per_epoch


def check_dp_compatible(network: nn.Module, plugin_problems: Sequence[str] = ()) -> None:
    """Raise :class:`ConfigError` listing every reason Opacus cannot train ``network`` privately
    (``opacus.validators.ModuleValidator.validate``) and those its model plugin gives, and how
    to fix the model."""
    problems = [
        _first_sentence(str(error)) for error in ModuleValidator.validate(network, strict=False)
    ]
    if plugin_problems and not problems:
        raise ConfigError(list(plugin_problems), source="DP-SGD model")
    problems += plugin_problems
    if not problems:
        return
    batch_norms = [
        name or "the model"
        for name, module in network.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
    if batch_norms:
        problems.append(
            f"fix: replace BatchNorm layer(s) {', '.join(batch_norms)} by GroupNorm or LayerNorm "
            "(opacus.validators.ModuleValidator.fix(model) does this), or remove them; "
            "fedpharma's own networks (build_model) have none"
        )
    else:
        problems.append("fix: opacus.validators.ModuleValidator.fix(model) replaces such modules")
    raise ConfigError(problems, source="DP-SGD model")


class DPSGDTrainer:
    """:class:`~fedpharma.models.base.Trainer` that trains with DP-SGD (module docstring).

    ``noise_multiplier`` σ and ``max_grad_norm`` C are defaults that each :meth:`fit` may
    override (e.g. from the coordinator's task config, after the site checked its budget).
    ``secure_mode`` (default) draws sampling and noise from fresh OS-CSPRNG seeds; ``False``
    makes them a function of the fit's seed, for reproducible simulation (module docstring).
    Initialisation and prediction are :class:`TorchTrainer`'s: privacy only changes training.
    """

    def __init__(
        self,
        model_config: ModelConfig,
        training_config: TrainingConfig,
        task: Objective,
        n_features: int,
        n_tasks: int,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        secure_mode: bool = True,
        plugin: ModelPlugin | None = None,
        targets: TargetScaling | None = None,
    ) -> None:
        _check_dp_settings(noise_multiplier, max_grad_norm)
        self._plain = TorchTrainer(
            model_config, training_config, task, n_features, n_tasks, plugin, targets
        )
        network = self._plain.build_network()
        check_dp_compatible(network, self._plain.plugin.dp_sgd_problems(network))
        self.model_config = model_config
        self.training_config = training_config
        self.task: Objective = task
        self.n_features = n_features
        self.n_tasks = n_tasks
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.secure_mode = secure_mode

    def initial_parameters(self, seed: int) -> Parameters:
        """Freshly initialised parameters; the same ``seed`` always gives the same values."""
        return self._plain.initial_parameters(seed)

    def predict(self, params: Parameters, data: Dataset) -> npt.NDArray[np.float32]:
        """n×t predictions, as :meth:`TorchTrainer.predict` (prediction does not train)."""
        return self._plain.predict(params, data)

    def plan(
        self,
        n_examples: int,
        *,
        epochs: int,
        noise_multiplier: float | None = None,
        max_grad_norm: float | None = None,
    ) -> DPSGDSampling:
        """The sampling facts a :meth:`fit` with these settings will report, computed from the
        row count alone — so a site can check its budget before touching any record."""
        sigma = self.noise_multiplier if noise_multiplier is None else noise_multiplier
        clip = self.max_grad_norm if max_grad_norm is None else max_grad_norm
        _check_dp_settings(sigma, clip)
        rate, steps = poisson_schedule(n_examples, self.training_config.batch_size, epochs)
        return DPSGDSampling(sigma, rate, steps, clip)

    def fit(
        self,
        params: Parameters,
        data: Dataset,
        *,
        epochs: int,
        seed: int,
        proximal_mu: float = 0.0,
        noise_multiplier: float | None = None,
        max_grad_norm: float | None = None,
    ) -> DPFitOutput:
        """DP-SGD from ``params`` on ``data`` for ``epochs`` epochs of Poisson-sampled steps.

        As :meth:`TorchTrainer.fit` (fresh optimizer each call, FedProx when ``proximal_mu`` > 0,
        deterministic given ``seed`` only without ``secure_mode``), plus the DP facts to account
        for.
        """
        started = time.perf_counter()
        if proximal_mu < 0:
            raise ValueError(f"proximal_mu must be ≥ 0, got {proximal_mu}")
        n_examples = len(data)
        if n_examples == 0:
            raise DataError(f"cannot train on {data.name!r}: it has no rows")
        planned = self.plan(
            n_examples,
            epochs=epochs,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
        )
        tensors = self._plain._tensors(data)
        device, precision = tensors.device, self.training_config.precision

        # A fresh network per call: Opacus hooks it, and the hooks must not outlive this fit.
        network = self._plain.build_network().to(device)
        set_parameters(network, params)
        weights = trainable_weights(network, self.model_config)
        # Frozen weights get no per-record gradient and no noise: Opacus skips them.
        frozen = [w for w in network.parameters() if all(w is not t for t in weights)]
        for w in frozen:
            w.requires_grad_(False)
        global_weights = [w.detach().clone() for w in weights] if proximal_mu > 0 else []
        sample_seed, noise_seed, dropout_seed = (
            int(s) for s in np.random.SeedSequence(seed).generate_state(3, np.uint64)
        )
        if self.secure_mode:
            # Fresh OS-CSPRNG seeds: the task's seed must not determine sampling or noise.
            sample_seed, noise_seed = secrets.randbits(64), secrets.randbits(64)
        # The loader samples row numbers; a batch's rows are gathered (and, when the features
        # are sparse, made dense: Opacus computes per-record gradients of dense Linear layers
        # only) one minibatch at a time.
        loader = DataLoader(
            TensorDataset(torch.arange(n_examples)),
            batch_size=self.training_config.batch_size,
            generator=torch.Generator().manual_seed(sample_seed),
        )
        with _expected_opacus_warnings_silenced():
            engine = PrivacyEngine(accountant="rdp", secure_mode=False)
            private_network, optimizer, criterion, private_loader = engine.make_private(
                module=network,
                optimizer=self._plain._optimizer(weights),
                criterion=_PerRecordMaskedLoss(self.task),
                data_loader=loader,
                noise_multiplier=planned.noise_multiplier,
                max_grad_norm=planned.max_grad_norm,
                poisson_sampling=True,
                grad_sample_mode="ghost",
                noise_generator=torch.Generator(device).manual_seed(noise_seed),
            )
        # Opacus' floating-point-robust sampling of the noise (sum of four draws, halved).
        optimizer.secure_mode = self.secure_mode

        steps = 0

        def after_noise(_: object) -> None:
            """Opacus calls this once per step, after clipping, noising and scaling."""
            nonlocal steps
            steps += 1
            if global_weights:
                with torch.no_grad():
                    for w, w_global in zip(weights, global_weights, strict=True):
                        w.grad.add_(w - w_global, alpha=proximal_mu)  # type: ignore[union-attr]

        # Replaces Opacus' own accountant hook: accounting is the site ledger's job.
        optimizer.attach_step_hook(after_noise)
        private_network.train()
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), _expected_opacus_warnings_silenced():
            torch.default_generator.manual_seed(dropout_seed)
            if devices:
                torch.cuda.manual_seed(dropout_seed)
            for _ in range(epochs):
                weighted_loss = torch.zeros((), device=device)
                observed = torch.zeros((), dtype=torch.long, device=device)
                for (rows,) in private_loader:
                    rows = rows.to(device)
                    batch_features = tensors.dense_features(rows)
                    batch_labels = tensors.dense_labels(rows)
                    optimizer.zero_grad()
                    with autocast(device, precision):
                        outputs = private_network(batch_features)
                    loss = criterion(outputs.float(), batch_labels)
                    loss.backward()
                    optimizer.step()
                    observed_per_record = (~torch.isnan(batch_labels)).sum(dim=1)
                    weighted_loss += (loss.loss_per_sample.detach() * observed_per_record).sum()
                    observed += observed_per_record.sum()
        for w in frozen:
            w.requires_grad_(True)  # so that every parameter travels, trained or not
        return DPFitOutput(
            parameters=get_parameters(network),
            n_examples=n_examples,
            train_loss=float(weighted_loss / observed.clamp(min=1)),
            seconds=time.perf_counter() - started,
            sampling=DPSGDSampling(
                planned.noise_multiplier,
                float(private_loader.sample_rate),
                steps,
                planned.max_grad_norm,
            ),
        )


class _PerRecordMaskedLoss(nn.Module):
    """:func:`masked_multitask_loss` of each record on its own, as Opacus' criterion.

    Opacus' ghost-clipping wrapper sets ``reduction = "none"`` to get one loss per record; the
    masked loss is applied row by row (``torch.func.vmap``), so each record's loss is the mean
    over *its* observed labels and never depends on the rest of the batch.
    """

    def __init__(self, task: Objective) -> None:
        super().__init__()
        self.task: Objective = task
        self.reduction = "mean"

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        per_record: torch.Tensor = torch.func.vmap(self._record_loss)(outputs, labels)
        return per_record if self.reduction == "none" else per_record.mean()

    def _record_loss(self, output: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return masked_multitask_loss(output[None], label[None], self.task)


def _check_dp_settings(noise_multiplier: float, max_grad_norm: float) -> None:
    problems = []
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        problems.append(
            f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r} "
            "(without noise DP-SGD gives no privacy; use TorchTrainer instead)"
        )
    if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
        problems.append(f"max_grad_norm must be a finite number > 0, got {max_grad_norm!r}")
    if problems:
        raise ConfigError(problems, source="DP-SGD")


def _first_sentence(message: str) -> str:
    head, _, _ = message.partition(". ")
    return head if head.endswith(".") else head + "."


@contextmanager
def _expected_opacus_warnings_silenced() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in _EXPECTED_OPACUS_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield
