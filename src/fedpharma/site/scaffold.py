"""A site's side of SCAFFOLD (Karimireddy et al. 2020, Alg. 1 lines 8–13): its control variate
c_i, the corrected local steps and the variate update.

The site steps with g_i(y) − c_i + c and updates its variate with Option I, c_i⁺ = ∇f_i(x) (the
full gradient of its training loss at the round's global model): unlike Option II's
(x − y_i)/(Kη_l) it stays a gradient whatever the local optimizer (Adam included), at the cost
of one pass over the data. The site answers with Δy_i and Δc_i = c_i⁺ − c_i in one update
(:mod:`fedpharma.core.protocol.control`) and keeps c_i⁺: in memory in a simulation, in its
``state_dir`` when deployed (``scaffold-variates.npz``, numpy's format read without pickle,
written atomically), so a restarted site goes on with its variate. One run's variate is kept;
a task of another run starts from zero.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fedpharma.core.dataset import Dataset
from fedpharma.core.errors import DataError, PolicyRefused
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import TrainTask
from fedpharma.core.protocol.control import attach_control, split_control
from fedpharma.models.base import FitOutput, ScaffoldTrainer, Trainer

VARIATES_FILE = "scaffold-variates.npz"
_RUN_KEY = "__run_id__"


class ControlVariates:
    """This site's c_i for the current run; kept in ``state_dir`` when one is given."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.path = None if state_dir is None else Path(state_dir) / VARIATES_FILE
        self._run: str | None = None
        self._variates: Parameters | None = None

    def load(self, run_id: str, template: Parameters) -> Parameters:
        """c_i for ``run_id`` (zero where this site has none yet), shaped like ``template``."""
        if self._run != run_id and self.path is not None and self.path.exists():
            self._run, self._variates = _read(self.path)
        if self._run != run_id or self._variates is None:
            return Parameters(template.names, tuple(np.zeros_like(a) for a in template.arrays))
        if not self._variates.same_structure(template):
            raise DataError(
                f"this site's saved SCAFFOLD variate ({self.path}) does not fit the run's model; "
                "it belongs to another model of this run id: move the file away to start afresh"
            )
        return self._variates

    def save(self, run_id: str, variates: Parameters) -> None:
        """Keep ``variates`` as c_i of ``run_id`` (on disk first, where there is a disk)."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(".partial.npz")
            arrays = {name: np.asarray(a) for name, a in variates}
            arrays[_RUN_KEY] = np.frombuffer(run_id.encode(), dtype=np.uint8)
            with partial.open("wb") as out:
                np.savez(out, **arrays)  # type: ignore[arg-type]
                out.flush()
                os.fsync(out.fileno())
            partial.replace(self.path)
        self._run, self._variates = run_id, variates


def _read(path: Path) -> tuple[str, Parameters]:
    try:
        with np.load(path, allow_pickle=False) as stored:
            run = bytes(stored[_RUN_KEY]).decode()
            names = tuple(n for n in stored.files if n != _RUN_KEY)
            return run, Parameters(names, tuple(np.array(stored[n]) for n in names))
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read this site's SCAFFOLD variate {path} ({exc}); move it away to start "
            "the variate afresh"
        ) from exc


def check_scaffold(task: TrainTask, trainer: Trainer) -> ScaffoldTrainer:
    """The trainer, where this task's SCAFFOLD steps can run; a refusal otherwise."""
    settings = task.settings
    if settings.record_dp is not None or settings.site_dp is not None:
        raise PolicyRefused(
            "SCAFFOLD sends a control variate, a gradient of this site's data that no DP "
            "mechanism bounds; a DP task with SCAFFOLD is refused (use fedavg or fedprox with DP)"
        )
    if not isinstance(trainer, ScaffoldTrainer):
        raise PolicyRefused(
            "this site's trainer cannot run SCAFFOLD's corrected steps (private heads keep part "
            'of the model here); use [strategy] name = "fedprox"'
        )
    return trainer


def scaffold_fit(
    trainer: ScaffoldTrainer, variates: ControlVariates, task: TrainTask, data: Dataset
) -> tuple[FitOutput, Parameters]:
    """The local SCAFFOLD steps from the task's model x and variate c; the fit and the update
    (Δy_i with Δc_i) to send. c_i⁺ is kept before the update leaves."""
    model, control = split_control(task.parameters)
    own = variates.load(task.run_id, model)
    local = task.settings.local
    outcome = trainer.fit(
        model,
        data,
        epochs=local.epochs,
        seed=local.seed,
        proximal_mu=local.proximal_mu,
        correction=control.minus(own),
    )
    renewed = trainer.gradient(model, data)
    variates.save(task.run_id, renewed)
    return outcome, attach_control(outcome.parameters.minus(model), renewed.minus(own))
