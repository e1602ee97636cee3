"""Weights pretrained on public data, as a run's starting point (``[model] init``).

A DP run fine-tunes from a trunk pretrained on public molecules (Abadi et al. 2016, §5.2; De et
al. 2022, "Unlocking High-Accuracy Differentially Private Image Classification through Scale"):
only the fine-tuning reads private records, so only it is charged. The file is a NumPy ``.npz``
of named arrays, read with ``allow_pickle=False``; the recipe pins its SHA-256, so every party
starts from the same bytes and a swapped file is refused.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedpharma.core.errors import ConfigError
from fedpharma.core.params import Parameters

INIT_PREFIX = "pretrained:"


def save_weights(path: Path, arrays: dict[str, npt.NDArray[np.float32]]) -> str:
    """Write named float32 arrays to ``path`` (``.npz``, no pickle); return the file's SHA-256."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(a, dtype=np.float32) for name, a in arrays.items()})  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def load_weights(init: str, sha256: str | None) -> dict[str, npt.NDArray[np.float32]]:
    """The arrays ``init`` (``"pretrained:PATH"``) names, after checking the file's SHA-256."""
    if not init.startswith(INIT_PREFIX):
        raise ConfigError([f'[model] init must be "{INIT_PREFIX}PATH", got {init!r}'])
    path = Path(init.removeprefix(INIT_PREFIX))
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise ConfigError(
            [f"[model] init: cannot read {path} ({error.strerror}); pretrain it first"]
        ) from None
    digest = hashlib.sha256(blob).hexdigest()
    if sha256 is None or digest != sha256.lower():
        raise ConfigError(
            [
                f"[model] init: {path} has SHA-256 {digest}; the recipe's init_sha256 is "
                f"{sha256!r}. Set init_sha256 to the digest of the file you mean to start from"
            ]
        )
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as stored:
            return {name: stored[name].astype(np.float32) for name in stored.files}
    except (ValueError, OSError) as error:
        raise ConfigError(
            [f"[model] init: {path} is not a valid .npz of arrays ({error})"]
        ) from None


def apply_pretrained(params: Parameters, weights: dict[str, npt.NDArray[np.float32]]) -> Parameters:
    """``params`` with every array named in ``weights`` replaced by it (same shape required)."""
    named = params.to_dict()
    problems = [f"{name} is not a parameter of this model" for name in weights if name not in named]
    problems += [
        f"{name} has shape {weights[name].shape}; the model's is {named[name].shape}"
        for name in weights
        if name in named and weights[name].shape != named[name].shape
    ]
    if problems:
        raise ConfigError(
            [f"[model] init: {p}" for p in problems]
            + ["pretrain with the same features and [model] hidden widths as the recipe"]
        )
    return Parameters(params.names, tuple(weights.get(n, named[n]) for n in params.names))
