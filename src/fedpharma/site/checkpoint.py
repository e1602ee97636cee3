"""What a site keeps of its own model: the latest global model it received, with its own head.

Under ``[model] private_heads`` no one but the partner holds its head (Heyndrickx et al. 2023),
so only the partner can export a model that predicts its tasks: ``fedpharma export --site-state
STATE_DIR`` reads what this module writes into the site's ``state_dir`` (``model/``): the
weights (safetensors) and a small JSON of the run id, the round, the tasks, the run recipe, the
site's preprocessing description and the ε it last reported. Nothing here leaves the site.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fedpharma.core import serde
from fedpharma.core.errors import DataError
from fedpharma.core.params import Parameters
from fedpharma.models.bundle import read_weights, write_weights

CHECKPOINT_DIR = "model"
CHECKPOINT_FILE = "checkpoint.json"
CHECKPOINT_WEIGHTS = "weights.safetensors"


@dataclass(frozen=True)
class SiteCheckpoint:
    """The JSON beside a site's kept weights. ``round``: the round whose task carried the global
    model; ``recipe``: the run recipe (``RunConfig.to_dict``); ``preprocessing``: the site's
    :class:`~fedpharma.data.preprocessing.SiteDescription` as JSON (``""``: no molecules)."""

    run_id: str
    site: str
    round: int
    task: str
    task_names: tuple[str, ...]
    parameter_names: tuple[str, ...]
    weights_sha256: str
    recipe: Mapping[str, object]
    preprocessing: str = ""
    epsilon: Mapping[str, float] = field(default_factory=dict)
    # Non-empty: the model was trained on standardized regression targets and the mapping back
    # is folded into its output layer (the bundle manifest's label_scaling, in words).
    label_scaling: str = ""


def write_checkpoint(state_dir: Path, checkpoint: SiteCheckpoint, params: Parameters) -> None:
    """Write the site's model into ``state_dir/model/`` (weights first, then the JSON)."""
    folder = state_dir / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    digest = write_weights(folder / CHECKPOINT_WEIGHTS, params)
    meta = serde.to_dict(checkpoint) | {
        "weights_sha256": digest,
        "parameter_names": list(params.names),
    }
    (folder / CHECKPOINT_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def read_checkpoint(state_dir: Path) -> tuple[SiteCheckpoint, Parameters]:
    """The site's kept model; :class:`DataError` if ``state_dir`` has none."""
    path = state_dir / CHECKPOINT_DIR / CHECKPOINT_FILE
    if not path.is_file():
        raise DataError(
            f"{state_dir} holds no site model ({CHECKPOINT_DIR}/{CHECKPOINT_FILE}); give the "
            "state_dir of a site that took part in a run"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    checkpoint, problems = serde.from_dict(SiteCheckpoint, raw, ignore_unknown=True)
    if checkpoint is None or problems:
        raise DataError(f"{path}: " + "; ".join(problems or ["not a site checkpoint"]))
    weights = path.parent / CHECKPOINT_WEIGHTS
    return checkpoint, read_weights(weights, checkpoint.parameter_names, checkpoint.weights_sha256)


class SiteModelKeeper:
    """Keeps a deployed site's model in its ``state_dir`` after each task that carries one.

    The model kept is the global model a task carried together with the head this site then
    had (with a shared head, just the global model): the pair the site evaluates.
    """

    def __init__(
        self, state_dir: Path, site: str, recipe: Mapping[str, object], preprocessing: str = ""
    ) -> None:
        self.state_dir = state_dir
        self.site = site
        self.recipe = recipe
        self.preprocessing = preprocessing
        self.epsilon: dict[str, float] = {}

    def keep(
        self,
        run_id: str,
        rnd: int,
        task: str,
        task_names: tuple[str, ...],
        params: Parameters,
        epsilon: Mapping[str, float] | None = None,
        label_scaling: str = "",
    ) -> None:
        self.epsilon |= dict(epsilon or {})
        checkpoint = SiteCheckpoint(
            run_id=run_id,
            site=self.site,
            round=rnd,
            task=task,
            task_names=task_names,
            parameter_names=params.names,
            weights_sha256="",
            recipe=self.recipe,
            preprocessing=self.preprocessing,
            epsilon=dict(self.epsilon),
            label_scaling=label_scaling,
        )
        write_checkpoint(self.state_dir, checkpoint, params)
