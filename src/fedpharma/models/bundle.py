"""The model bundle: a folder that says what a trained model is and how to feed it.

``weights.safetensors`` holds the parameters (safetensors: a JSON header and raw little-endian
arrays, nothing executable — never pickle); ``manifest.json`` holds the :class:`ModelManifest`:
the preprocessing recipe and its digest, task names and type, label scaling, the architecture
and the run's provenance (run id, audit head, ε spent per site). The same weights file, with a
shorter JSON beside it, is what a site keeps of its own model (:mod:`fedpharma.site.checkpoint`).

Compatibility rule for ``manifest.json``: ``format`` is bumped when a reader of the current
format would misread a newer bundle — a key removed or renamed, or a value whose type or meaning
changes. Adding a key that has a default keeps the format: readers ignore keys they do not know,
and a key missing from an older bundle reads as its default. A reader refuses any other format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from fedpharma.core import serde
from fedpharma.core.errors import DataError
from fedpharma.core.params import Parameters

BUNDLE_FORMAT = 1
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"
LABEL_SCALING_NONE = (
    "none: labels are not transformed; the output layer only starts at the label statistics"
)
LABEL_SCALING_FOLDED = (
    "standardized: trained on targets standardized by the consortium's pooled label mean and "
    "standard deviation (preprocessing.json); the mapping back is folded into the output "
    "layer, so outputs are in label units"
)

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Architecture:
    """The network of :func:`fedpharma.models.networks.build_model`: enough to rebuild it."""

    kind: str = field(metadata={"choices": ("mlp", "linear")})
    hidden: tuple[int, ...]
    dropout: float
    n_features: int = field(metadata={"min": 1})
    n_tasks: int = field(metadata={"min": 1})


@dataclass(frozen=True)
class Preprocessing:
    """How records become model inputs. ``kind = "molecules"``: ``features`` is the run's
    ``[features]`` table, ``recipe`` the :class:`~fedpharma.data.preprocessing.PreprocessingRecipe`
    it gave where the model was trained, ``recipe_digest`` its SHA-256 and ``reference_digest``
    the SHA-256 of the public reference molecules' features. ``kind = "tabular"``: no recipe."""

    kind: Literal["molecules", "tabular"]
    features: Mapping[str, object] = field(default_factory=dict)
    recipe: Mapping[str, Scalar] = field(default_factory=dict)
    recipe_digest: str = ""
    reference_digest: str = ""


@dataclass(frozen=True)
class Provenance:
    """Where the model comes from. ``source``: a simulation, a deployed coordinator's run, or
    one ``site``'s own model (shared trunk + its private head). ``epsilon[site][relation]``: the
    ε each site had spent (last value it reported). ``audit_head``: the deployed run's audit
    chain head (``seq:hash``), ``""`` where there is no audit log."""

    run_id: str
    source: Literal["simulation", "deployment", "site"]
    round: int
    exported: str
    audit_head: str = ""
    site: str = ""
    epsilon: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelManifest:
    """``manifest.json`` of a bundle (see the module's compatibility rule)."""

    format: int = field(metadata={"choices": (BUNDLE_FORMAT,)})
    task: Literal["regression", "classification"]
    task_names: tuple[str, ...]
    architecture: Architecture
    preprocessing: Preprocessing
    provenance: Provenance
    parameter_names: tuple[str, ...]
    weights_sha256: str
    label_scaling: str = LABEL_SCALING_NONE
    outputs: str = ""  # what each output column is, in words (see :func:`describe_outputs`)


def describe_outputs(task: str) -> str:
    """What a model's output columns are, for :attr:`ModelManifest.outputs`."""
    what = "probability of class 1" if task == "classification" else "value, in label units"
    return f"one column per task: the predicted {what}"


def write_weights(path: Path, params: Parameters) -> str:
    """Write ``params`` as safetensors (float32) to ``path``; return the file's SHA-256."""
    from safetensors.numpy import save

    blob = save({n: np.ascontiguousarray(a, dtype="<f4") for n, a in params})
    path.write_bytes(blob)
    return hashlib.sha256(blob).hexdigest()


def read_weights(path: Path, names: tuple[str, ...], sha256: str | None = None) -> Parameters:
    """The parameters of a safetensors file, in ``names`` order; the file's SHA-256 checked."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256:
        raise DataError(f"{path} fails its SHA-256 check: the weights were changed or damaged")
    try:
        arrays = load(blob)
    except (SafetensorError, ValueError) as exc:
        raise DataError(f"{path} is not a safetensors file: {exc}") from exc
    if set(arrays) != set(names):
        raise DataError(f"{path} holds parameters {sorted(arrays)}, expected {sorted(names)}")
    params = Parameters(names, tuple(arrays[n].astype(np.float32, copy=False) for n in names))
    if not all(np.isfinite(a).all() for a in params.arrays):
        raise DataError(f"{path} holds non-finite weights")
    return params


def write_bundle(folder: Path, manifest: ModelManifest, params: Parameters) -> Path:
    """Write the bundle (weights, then the manifest naming their digest) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    digest = write_weights(folder / WEIGHTS_FILE, params)
    if params.names != manifest.parameter_names or digest != manifest.weights_sha256:
        raise DataError("internal: the manifest does not describe the weights written")
    text = json.dumps(serde.to_dict(manifest), indent=2, allow_nan=False)
    (folder / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
    return folder


def weights_digest(params: Parameters) -> str:
    """SHA-256 of the safetensors file :func:`write_weights` writes for ``params``."""
    from safetensors.numpy import save

    return hashlib.sha256(
        save({n: np.ascontiguousarray(a, dtype="<f4") for n, a in params})
    ).hexdigest()


def read_bundle(folder: Path) -> tuple[ModelManifest, Parameters]:
    """The manifest and weights of a bundle; :class:`DataError` says what is wrong."""
    manifest = read_manifest(folder)
    params = read_weights(folder / WEIGHTS_FILE, manifest.parameter_names, manifest.weights_sha256)
    return manifest, params


def read_manifest(folder: Path) -> ModelManifest:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise DataError(
            f"{folder} is not a model bundle: no {MANIFEST_FILE} (made by `fedpharma export`)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    if isinstance(raw, dict) and raw.get("format", BUNDLE_FORMAT) != BUNDLE_FORMAT:
        raise DataError(
            f"{path}: bundle format {raw['format']!r}; this fedpharma reads format "
            f"{BUNDLE_FORMAT} (export the model again, or upgrade fedpharma)"
        )
    manifest, problems = serde.from_dict(ModelManifest, raw, ignore_unknown=True)
    if manifest is None or problems:
        raise DataError(f"{path}: " + "; ".join(problems or ["not a model manifest"]))
    return manifest
