"""An MLflow observer: a run's params, per-round metrics and ε, its summary and its model bundle.

Like NVIDIA FLARE's MLflow streaming, the coordinator's view only is logged: aggregate and
per-site metrics the sites chose to send, never a record, label or update. Install with
``pip install 'fedpharma[mlflow]'`` (mlflow-skinny 3.x). A local folder works offline: a
``file:`` URI or a plain path is MLflow's file store, which MLflow 3 keeps in maintenance mode
behind ``MLFLOW_ALLOW_FILE_STORE``; giving such a URI here opts in to it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from fedpharma.core.config import RunConfig
from fedpharma.core.errors import ConfigError
from fedpharma.report.summary import RunSummary
from fedpharma.server.round import RoundRecord


class FinishedRun(Protocol):
    """What :meth:`MlflowTracker.finish` logs (:class:`fedpharma.api.RunResult` is one)."""

    @property
    def run_dir(self) -> Path: ...

    @property
    def summary(self) -> RunSummary: ...

    @property
    def config(self) -> RunConfig: ...

    def export(self, folder: str | Path) -> Path: ...


_MAX_PARAM = 500  # MLflow's limit is 6000 characters; long values (lists) are cut, marked "…"


class MlflowTracker:
    """Start with :meth:`start`, feed rounds to :meth:`on_round` (a round observer, or the
    simulation's ``on_round`` callback), end with :meth:`finish`."""

    def __init__(self, tracking_uri: str, experiment: str = "fedpharma") -> None:
        try:
            import mlflow
        except ImportError as exc:
            raise ConfigError(
                ["MLflow tracking needs the mlflow extra: pip install 'fedpharma[mlflow]'"],
                "tracking",
            ) from exc
        if _is_file_store(tracking_uri):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._mlflow = mlflow
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_id: str | None = None

    def start(self, params: Mapping[str, Any], run_name: str | None = None) -> str:
        """Open an MLflow run and log ``params`` (the run config, flattened); its MLflow id."""
        mlflow = self._mlflow
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(self.experiment)
        run = mlflow.start_run(run_name=run_name)
        self.run_id = str(run.info.run_id)
        flat = dict(_flatten(params))
        mlflow.log_params({k: _param(v) for k, v in flat.items()})
        return self.run_id

    def on_round(self, record: RoundRecord, _rounds: int | None = None) -> None:
        """One round's metrics at step = round: train loss, pooled and per-site test metrics,
        each site's ε, the round's seconds and number of aggregated sites."""
        metrics: dict[str, float] = {
            "round_seconds": record.seconds,
            "sites_aggregated": float(len(record.contributors)),
        }
        metrics |= {f"train_{k}": v for k, v in record.train_metrics.items() if k == "train_loss"}
        metrics |= {f"test_{k}": v for k, v in record.evaluate_metrics.items()}
        for site, result in record.evaluate_results.items():
            metrics |= {f"{site}/test_{k}": v for k, v in result.metrics.items()}
        for site, train in record.train_results.items():
            metrics |= {f"{site}/{k}": v for k, v in train.metrics.items() if k.startswith("eps")}
        self._mlflow.log_metrics(metrics, step=record.round)

    def finish(self, result: FinishedRun | None = None, status: str = "FINISHED") -> None:
        """Log the run's final scores, ``summary.json`` and its model bundle (artifact
        ``model/``), then close the MLflow run."""
        mlflow = self._mlflow
        try:
            if result is not None:
                summary = result.summary
                final = {
                    f"final_{model}_{summary.metric.name}": score
                    for model, score in summary.pooled.headline().items()
                    if score is not None
                }
                if summary.privacy is not None:
                    for site, by in summary.privacy.final.items():
                        final |= {f"{site}/final_epsilon_{r}": v for r, v in by.items() if v}
                mlflow.log_metrics(final)
                summary_file = result.run_dir / "summary.json"
                if summary_file.is_file():
                    mlflow.log_artifact(str(summary_file))
                if not result.config.model.private_heads:
                    with tempfile.TemporaryDirectory() as folder:
                        bundle = result.export(Path(folder) / "model")
                        mlflow.log_artifacts(str(bundle), artifact_path="model")
        finally:
            mlflow.end_run(status=status)


def _is_file_store(uri: str) -> bool:
    return uri.startswith("file:") or "://" not in uri


def _flatten(params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        elif value is not None:
            yield name, value


def _param(value: object) -> str:
    text = str(value)
    return text if len(text) <= _MAX_PARAM else text[: _MAX_PARAM - 1] + "…"
