"""Moving weights between a torch module and :class:`~fedpharma.core.params.Parameters`.

Only trainable parameters travel (``requires_grad``), in ``state_dict`` order; buffers never do.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters


def get_parameters(module: nn.Module) -> Parameters:
    """Float32 copies of ``module``'s trainable parameters, named as in its ``state_dict``."""
    named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    return Parameters(
        tuple(name for name, _ in named),
        tuple(np.array(p.detach().cpu().numpy(), np.float32, order="C") for _, p in named),
    )


def set_parameters(module: nn.Module, params: Parameters) -> None:
    """Copy ``params`` into ``module``'s trainable parameters, in place.

    Raises :class:`ProtocolError` naming the first mismatch if the names (as a sequence) or any
    shape differ from the module's, before anything is written.
    """
    targets = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    expected = tuple(name for name, _ in targets)
    if params.names != expected:
        missing = [n for n in expected if n not in params.names]
        unexpected = [n for n in params.names if n not in expected]
        raise ProtocolError(
            f"parameters do not fit the model: missing {missing}, unexpected {unexpected}"
            + ("" if missing or unexpected else "; same names in a different order")
        )
    for (name, target), array in zip(targets, params.arrays, strict=True):
        if tuple(target.shape) != array.shape:
            raise ProtocolError(
                f"parameter {name!r} has shape {array.shape}, the model expects "
                f"{tuple(target.shape)}"
            )
    for (_, target), array in zip(targets, params.arrays, strict=True):
        if target.device.type == "cpu":
            # Writes straight into the tensor's CPU storage: one copy, casting float64 → float32.
            np.copyto(target.detach().numpy(), array, casting="same_kind")
        else:  # the host copy is the only one the codec sees; one transfer to the device
            with torch.no_grad():
                target.copy_(torch.from_numpy(np.asarray(array, dtype=np.float32)))
