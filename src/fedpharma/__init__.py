"""fedpharma: privacy-preserving federated learning for drug development.

The public API (:mod:`fedpharma.api`): :func:`simulate` → :class:`RunResult` (``predict``,
``export``), :func:`load_model` → :class:`Model` (``predict``).

Importing the package is cheap: it never imports torch, rdkit, tenseal or grpc. Those load only
in the modules that need them (models, data.molecules, secure, transport); the API names below
load :mod:`fedpharma.api` on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from fedpharma.api import Model, Predictions, RunResult, load_model, simulate

__all__ = ["Model", "Predictions", "RunResult", "__version__", "load_model", "simulate"]

_API = frozenset({"Model", "Predictions", "RunResult", "load_model", "simulate"})


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("fedpharma.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
