"""The public Python API: simulate a run, predict with its model, export it, load a bundle.

>>> import fedpharma
>>> result = fedpharma.simulate({"dataset": {"name": "chembl2321810"}, "rounds": 5})
>>> result.predict(["CCO", "c1ccccc1O"]).values        # doctest: +SKIP
>>> result.export("model/")                            # doctest: +SKIP
>>> fedpharma.load_model("model/").predict("molecules.csv")  # doctest: +SKIP

``import fedpharma`` loads none of this until a name is used (``fedpharma/__init__.py``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedpharma.bundle.export import build_manifest, epsilon_of, recipe_preprocessing, site_model
from fedpharma.bundle.predict import Model, Predictions
from fedpharma.core.config import RunConfig, config_from_dict, load_config
from fedpharma.core.dataset import Objective
from fedpharma.core.errors import DataError
from fedpharma.models.bundle import Provenance
from fedpharma.report.summary import RunSummary
from fedpharma.server.round import RoundRecord

__all__ = ["Model", "Predictions", "RunResult", "load_model", "simulate"]


@dataclass(frozen=True)
class RunResult:
    """A finished simulation: its run directory, its summary and its final model."""

    run_dir: Path
    summary: RunSummary
    config: RunConfig
    _model: Model | None

    @property
    def model(self) -> Model:
        """The final federated model; with private heads there is one per site
        (:meth:`site_model`)."""
        if self._model is None:
            raise DataError(
                "each partner keeps its own head ([model] private_heads): use "
                "RunResult.site_model(name)"
            )
        return self._model

    def site_model(self, site: str) -> Model:
        """The model simulated site ``site`` keeps: the shared trunk with its own head."""
        folder = self.run_dir / "sites" / site
        if not folder.is_dir():
            raise DataError(f"no site {site!r} in this run; sites: {', '.join(self.summary.sites)}")
        manifest, params = site_model(folder)
        return Model(manifest, params)

    def predict(self, molecules: Any, *, smiles_column: str = "smiles") -> Predictions:
        """Predict SMILES (strings, a CSV/SDF path, or a table with a SMILES column)."""
        return self.model.predict(molecules, smiles_column=smiles_column)

    def export(self, folder: str | Path) -> Path:
        """Write the final model as a bundle (what ``fedpharma export`` writes)."""
        return self.model.export(folder)


def simulate(
    config: RunConfig | Mapping[str, Any] | str | Path,
    *,
    out: str | Path | None = None,
    on_status: Callable[[str], None] | None = None,
    on_round: Callable[[RoundRecord, int], None] | None = None,
    mlflow: str | None = None,
    experiment: str = "fedpharma",
) -> RunResult:
    """Run a simulated federation. ``config``: a :class:`RunConfig`, a dict of the TOML's
    tables, or a TOML file's path. ``out``: the run directory (default: a new temporary one).
    ``mlflow``: a tracking URI (a local folder works offline) to log the run to, in
    ``experiment`` (:class:`~fedpharma.tracking.mlflow.MlflowTracker`)."""
    if isinstance(config, str | Path):
        config = load_config(config)
    elif not isinstance(config, RunConfig):
        config = config_from_dict(dict(config))
    run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="fedpharma-run-"))
    if mlflow is None:
        return _simulate(config, run_dir, on_status, on_round)
    from fedpharma.tracking.mlflow import MlflowTracker

    tracker = MlflowTracker(mlflow, experiment)
    tracker.start(config.to_dict(), run_name=run_dir.name)

    def both(record: RoundRecord, rounds: int) -> None:
        tracker.on_round(record)
        if on_round is not None:
            on_round(record, rounds)

    try:
        result = _simulate(config, run_dir, on_status, both)
    except BaseException:
        tracker.finish(None, status="FAILED")
        raise
    tracker.finish(result)
    return result


def _simulate(
    config: RunConfig,
    run_dir: Path,
    on_status: Callable[[str], None] | None,
    on_round: Callable[[RoundRecord, int], None] | None,
) -> RunResult:
    from fedpharma.sim.engine import simulate as run_simulation

    result = run_simulation(config, run_dir, on_status=on_status, on_round=on_round)
    summary = result.summary
    model = None
    if not config.model.private_heads:
        provenance = Provenance(
            run_id=summary.run_id or "",
            source="simulation",
            round=config.rounds,
            exported=datetime.now(UTC).isoformat(timespec="seconds"),
            epsilon={} if summary.privacy is None else epsilon_of(summary.privacy.final),
        )
        task: Objective = (
            "classification" if summary.dataset.task == "classification" else ("regression")
        )
        manifest = build_manifest(
            config,
            task,
            summary.dataset.task_names,
            result.parameters,
            provenance,
            recipe_preprocessing(config),
        )
        model = Model(manifest, result.parameters)
    return RunResult(run_dir, summary, config, model)


def load_model(folder: str | Path) -> Model:
    """A model bundle written by ``fedpharma export`` (or :meth:`RunResult.export`), checked:
    its preprocessing must be reproducible here."""
    return Model.load(folder)
