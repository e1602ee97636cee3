"""``fedpharma export``: a finished run's model as a self-describing bundle.

Three sources, one bundle format (:mod:`fedpharma.models.bundle`):

- a simulation's run directory, or a deployed coordinator's (``run.sqlite``, and
  ``audit-head.json`` beside it): the final global model from the run store's checkpoint, the
  recipe's preprocessing, and the ε every site reported;
- a site's ``state_dir`` (``--site-state``): the model that site keeps
  (:mod:`fedpharma.site.checkpoint`), which under ``[model] private_heads`` is the only place its
  head exists; exported by the partner, at its own site.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from fedpharma.core import serde
from fedpharma.core.config import FeaturesConfig, RunConfig, config_from_dict
from fedpharma.core.dataset import Objective
from fedpharma.core.errors import DataError
from fedpharma.core.params import Parameters
from fedpharma.data.datasets import featurizes_molecules
from fedpharma.data.preprocessing import PreprocessingRecipe, SiteDescription, reference_digest
from fedpharma.models.bundle import (
    LABEL_SCALING_FOLDED,
    Architecture,
    ModelManifest,
    Preprocessing,
    Provenance,
    describe_outputs,
    weights_digest,
    write_bundle,
)
from fedpharma.models.output import fold_target_scaling
from fedpharma.models.private_head import HEAD_PREFIX
from fedpharma.report.summary import SUMMARY_FILE, Relation, load_summary
from fedpharma.server.coordinator import HEAD_FILE, STORE_FILE, read_head
from fedpharma.server.feature_statistics import read_target_scaling
from fedpharma.server.store import RunStore
from fedpharma.site.checkpoint import read_checkpoint


def export_run(run: Path, out: Path) -> ModelManifest:
    """Write the bundle of the run at ``run`` (a run directory, or its ``run.sqlite``)."""
    manifest, params = run_model(run)
    write_bundle(out, manifest, params)
    return manifest


def export_site(state_dir: Path, out: Path) -> ModelManifest:
    """Write the bundle of the model a site keeps in ``state_dir`` (trunk + its own head)."""
    manifest, params = site_model(state_dir)
    write_bundle(out, manifest, params)
    return manifest


def run_model(run: Path) -> tuple[ModelManifest, Parameters]:
    """The final model of the run at ``run`` (a run directory, or its ``run.sqlite``)."""
    store_path = run if run.is_file() else run / STORE_FILE
    run_dir = store_path.parent
    if not store_path.is_file():
        raise DataError(f"{run} holds no {STORE_FILE}: give a run directory of fedpharma")
    run_id, config, rnd, params, epsilon = _read_store(store_path)
    if config.model.private_heads:
        raise DataError(
            f"run {run_id} keeps each partner's head at its site ([model] private_heads): the "
            "run store holds only the shared trunk; export at a partner with "
            "`fedpharma export --site-state STATE_DIR`"
        )
    task, task_names = _tasks(config, run_dir)
    head = read_head(run_dir) if (run_dir / HEAD_FILE).is_file() else None
    provenance = Provenance(
        run_id=run_id,
        source="deployment" if head is not None else "simulation",
        round=rnd,
        exported=_now(),
        audit_head="" if head is None else f"{head.seq}:{head.hash}",
        epsilon=epsilon,
    )
    preprocessing = recipe_preprocessing(config)
    targets = read_target_scaling(run_dir) if task == "regression" else None
    if targets is not None:  # trained on standardized targets: outputs back in label units
        params = fold_target_scaling(params, targets)
    manifest = build_manifest(config, task, task_names, params, provenance, preprocessing)
    if targets is not None:
        manifest = dataclasses.replace(manifest, label_scaling=LABEL_SCALING_FOLDED)
    return manifest, params


def site_model(state_dir: Path) -> tuple[ModelManifest, Parameters]:
    """The model a site keeps in ``state_dir``: the shared trunk with its own head."""
    checkpoint, params = read_checkpoint(state_dir)
    config = config_from_dict(dict(checkpoint.recipe), source=f"{state_dir} recipe")
    if checkpoint.preprocessing:
        description = SiteDescription.from_json(checkpoint.preprocessing)
        preprocessing = Preprocessing(
            kind="molecules",
            features=serde.to_dict(config.features),
            recipe=dict(description.recipe),
            recipe_digest=description.recipe_digest,
            reference_digest=description.reference_digest,
        )
    else:
        preprocessing = Preprocessing(kind="tabular")
    provenance = Provenance(
        run_id=checkpoint.run_id,
        source="site",
        round=checkpoint.round,
        exported=_now(),
        site=checkpoint.site,
        epsilon={checkpoint.site: dict(checkpoint.epsilon)} if checkpoint.epsilon else {},
    )
    task = cast(Objective, checkpoint.task)
    manifest = build_manifest(
        config, task, checkpoint.task_names, params, provenance, preprocessing
    )
    if checkpoint.label_scaling:  # the site kept its model with the target mapping folded in
        manifest = dataclasses.replace(manifest, label_scaling=checkpoint.label_scaling)
    return manifest, params


def build_manifest(
    config: RunConfig,
    task: Objective,
    task_names: tuple[str, ...],
    params: Parameters,
    provenance: Provenance,
    preprocessing: Preprocessing,
) -> ModelManifest:
    """The manifest of ``params``, a whole network of ``config``'s ``[model]``."""
    named = params.to_dict()
    if f"{HEAD_PREFIX}bias" not in named:
        raise DataError("the model has no output layer (head.*): a trunk alone predicts nothing")
    n_tasks = int(named[f"{HEAD_PREFIX}bias"].shape[0])
    first = "trunk.hidden1.weight" if "trunk.hidden1.weight" in named else f"{HEAD_PREFIX}weight"
    if n_tasks != len(task_names):
        raise DataError(f"the model has {n_tasks} outputs but {len(task_names)} task names")
    architecture = Architecture(
        kind=config.model.kind,
        hidden=config.model.hidden if config.model.kind == "mlp" else (),
        dropout=config.model.dropout,
        n_features=int(named[first].shape[1]),
        n_tasks=n_tasks,
    )
    return ModelManifest(
        format=1,
        task=task,
        task_names=task_names,
        architecture=architecture,
        preprocessing=preprocessing,
        provenance=provenance,
        parameter_names=params.names,
        weights_sha256=weights_digest(params),
        outputs=describe_outputs(task),
    )


def recipe_preprocessing(config: RunConfig) -> Preprocessing:
    """The preprocessing the run's recipe prescribes (computed here, as the coordinator's join
    check does: recipe, its digest, the public reference set's digest)."""
    if not featurizes_molecules(config.dataset.name, config.dataset.kind):
        return Preprocessing(kind="tabular")
    features: FeaturesConfig = config.features
    recipe = PreprocessingRecipe.from_features(
        features, permutation_key_id=features.permutation_key_id
    )
    return Preprocessing(
        kind="molecules",
        features=serde.to_dict(features),
        recipe=recipe.to_dict(),
        recipe_digest=recipe.digest(),
        reference_digest=reference_digest(features),
    )


def _read_store(
    path: Path,
) -> tuple[str, RunConfig, int, Parameters, dict[str, dict[str, float]]]:
    """Run id, recipe, the last checkpoint's round and model, and the ε per site and relation."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT run_id, config FROM run").fetchone()
            epsilon_rows = db.execute(
                "SELECT site, name, value FROM site_metrics WHERE phase = 'train' "
                "AND name LIKE 'epsilon_%' ORDER BY round"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise DataError(f"cannot read run store {path}: {exc}") from exc
    if row is None:
        raise DataError(f"{path} records no run")
    store = RunStore(path)
    try:
        checkpoint = store.latest_checkpoint()
    finally:
        store.close()
    if checkpoint is None:
        raise DataError(f"run {row[0]} has no model yet: no round completed")
    config = config_from_dict(json.loads(row[1]), source=f"{path} recipe")
    epsilon: dict[str, dict[str, float]] = {}
    for site, name, value in epsilon_rows:  # in round order: the last value wins
        epsilon.setdefault(site, {})[str(name).removeprefix("epsilon_")] = float(value)
    return str(row[0]), config, checkpoint[0], checkpoint[1], epsilon


def _tasks(config: RunConfig, run_dir: Path) -> tuple[Objective, tuple[str, ...]]:
    """The task type and names: from the summary of a simulation, else from the recipe (a
    bundled dataset is public and ships with the package, so it is loaded for its names)."""
    if (run_dir / SUMMARY_FILE).is_file():
        info = load_summary(run_dir).dataset
        if info.task_names:
            return cast(Objective, info.task), info.task_names
    dataset = config.dataset
    if dataset.name is not None:
        from fedpharma.data.datasets import load_dataset

        loaded, _ = load_dataset(dataset, config.features)
        return loaded.task, loaded.task_names
    task: Objective = "classification" if dataset.task == "classification" else "regression"
    return task, tuple(dataset.label_columns)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def epsilon_of(
    spent: Mapping[str, Mapping[Relation, float | None]],
) -> dict[str, dict[str, float]]:
    """Per site and relation, the ε values that exist (a summary's ``privacy.final``)."""
    return {
        site: {rel: float(v) for rel, v in by.items() if v is not None}
        for site, by in spent.items()
    }
