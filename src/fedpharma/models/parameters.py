"""Moving weights between a torch module and :class:`~fedpharma.core.params.Parameters`.

Only trainable parameters travel (``requires_grad``), in ``state_dict`` order; buffers never do.
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters


def get_parameters(module: nn.Module) -> Parameters:
    """Float32 copies of ``module``'s trainable parameters, named as in its ``state_dict``."""
    named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    return Parameters(tuple(name for name, _ in named), tuple(host_array(p) for _, p in named))


def host_array(tensor: torch.Tensor) -> npt.NDArray[np.float32]:
    """A float32, C-ordered host copy of ``tensor``, whatever its device and memory layout.

    Torch copies a column-major matrix into a row-major buffer by blocks (~7× faster than
    NumPy's element-wise transposing copy: 0.2 s against 1.4 s for a 2,000 × 32,768 first layer).
    """
    buffer = torch.empty(tensor.shape, dtype=torch.float32)
    buffer.copy_(tensor.detach())
    return buffer.numpy()


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
    with torch.no_grad():
        for (_, target), array in zip(targets, params.arrays, strict=True):
            _copy_into(target, np.asarray(array, dtype=np.float32))


def _copy_into(target: torch.Tensor, array: npt.NDArray[np.float32]) -> None:
    """Write ``array`` into ``target`` on its device (one copy on the CPU for float32).

    Torch only reads the array (it warns on wrapping a read-only one). A column-major matrix
    (the first layer, :func:`~fedpharma.models.networks.build_model`) is written through its
    row-major transpose, which torch copies by blocks (~8× faster than an element-wise copy).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        source = torch.from_numpy(array)
    if target.dim() == 2 and not target.is_contiguous() and target.t().is_contiguous():
        target.t().copy_(source.t())
    else:
        target.copy_(source)
