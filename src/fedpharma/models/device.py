"""Where a site trains (``[training] device``) and at which precision (``precision``).

A site's model, optimizer and minibatches live on its device; parameters cross to host memory
only to leave the trainer (:mod:`fedpharma.models.parameters`), so the codec, secure aggregation
and the coordinator never see a device. CPU is the default and what the tests run on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from fedpharma.core.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` (a :class:`ConfigError` without a usable GPU) or ``"auto"``."""
    if name == "cpu":
        return torch.device("cpu")
    if name in ("cuda", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if name == "auto":
            return torch.device("cpu")
        raise ConfigError(
            ['[training] device = "cuda", but this machine has no usable CUDA GPU (or torch was '
             'installed without CUDA); set device = "auto" or "cpu"'],
            source="training",
        )  # fmt: skip
    raise ConfigError([f'[training] device = {name!r}: use "auto", "cpu" or "cuda"'], "training")


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """bfloat16 autocast for ``precision = "bf16"``; nothing for ``"fp32"``."""
    if precision == "fp32":
        yield
        return
    if precision != "bf16":
        problem = f'[training] precision = {precision!r}: use "fp32" or "bf16"'
        raise ConfigError([problem], "training")
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield
