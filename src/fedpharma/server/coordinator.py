"""The coordinator process: serve the sites over gRPC + mTLS, run the Federation, persist, audit.

One run is one directory ``runs_dir/<run id>`` (``run.json``, ``run.sqlite``, ``audit.jsonl``,
``audit-head.json``). Sites are admitted by the join check (:mod:`fedpharma.server.join`); a round
short of ``min_sites`` is retried, then the run stops cleanly; ``--resume`` verifies the audit log
and the recipe and continues after the last checkpoint, bit-identical to an uninterrupted run
(the adaptive optimizers' state is saved: Reddi et al. 2021, Alg. 2). The full account:
``docs/coordinator.md``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedpharma.core.config import RunConfig
from fedpharma.core.dataset import Objective
from fedpharma.core.deploy_config import ServerConfig
from fedpharma.core.errors import ConfigError, DataError, FedPharmaError, RoundFailed
from fedpharma.core.params import Parameters
from fedpharma.data.federated_preprocessing import fitted_width
from fedpharma.privacy import production_rng
from fedpharma.report.summary import ConsortiumOverlap
from fedpharma.secure.ckks import PublicContext, load_public_context
from fedpharma.server.audit import AuditHead, AuditLog, verify
from fedpharma.server.chemical_overlap import collect_chemical_overlap
from fedpharma.server.feature_statistics import read_fit, secure_statistics
from fedpharma.server.join import JoinGate, JoinLog, expected_preprocessing
from fedpharma.server.label_statistics import calibrated_start
from fedpharma.server.plan import build_federation
from fedpharma.server.run_observers import AnnouncingChannel, AuditRejections, AuditRounds, Progress
from fedpharma.server.store import RunStore
from fedpharma.server.tabular import declared_schema, hand_out_fit, prepare_tabular_sites
from fedpharma.server.task_summary import (
    TaskSummaries,
    collect_task_summaries,
    summaries_to_json,
)
from fedpharma.transport.pki import CKKS_PUBLIC_FILE

MANIFEST_FILE, STORE_FILE, AUDIT_FILE, HEAD_FILE = (
    "run.json",
    "run.sqlite",
    "audit.jsonl",
    "audit-head.json",
)
FINISH_WAIT_SECONDS = 10.0  # how long the sites get to leave once the run is over

Status = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class ModelShape:
    """The model's inputs and outputs, which the coordinator needs for the initial parameters."""

    task: Objective
    n_features: int
    n_tasks: int


@dataclass(frozen=True)
class CoordinatorResult:
    run_dir: Path
    run_id: str
    parameters: Parameters
    rounds_completed: int
    audit_head: AuditHead


def model_shape(recipe: RunConfig, n_features: int | None = None) -> ModelShape:
    """The model shape the recipe implies, without any site's private data.

    A bundled dataset is public and ships with the package, so it is loaded; molecules from a
    file have the width of the recipe's features; a tabular file's width depends on the sites'
    data and must be given (``[server] n_features``).
    """
    ds = recipe.dataset
    if ds.name is not None:
        from fedpharma.data.datasets import load_dataset

        dataset, _ = load_dataset(ds, recipe.features)
        return ModelShape(dataset.task, dataset.n_features, dataset.n_tasks)
    task: Objective = "classification" if ds.task == "classification" else "regression"
    if n_features is not None:
        return ModelShape(task, n_features, len(ds.label_columns))
    if ds.kind == "molecules":
        from fedpharma.data.molecules import feature_names

        return ModelShape(task, len(feature_names(recipe.features)), len(ds.label_columns))
    raise ConfigError(
        ["[server] a tabular file dataset needs `n_features` (the width of the sites' inputs)"],
        "server config",
    )


def _wait_for_planned_sites(gate: JoinGate, planned: int, deadline: float, say: Status) -> None:
    """Before round 1: wait up to ``deadline`` s for all ``planned`` sites to be admitted, so
    that round 1 and the calibration do not depend on who happened to join first."""
    if deadline <= 0:
        return
    say(f"waiting up to {deadline:g} s for the {planned} planned site(s) before round 1")
    admitted = gate.wait_for_sites(planned, deadline)
    if len(admitted) < planned:
        say(
            f"join deadline passed: {len(admitted)} of {planned} planned site(s) admitted "
            f"({', '.join(admitted) or 'none'}); round 1 starts once min_sites are there"
        )


# ----- run directory ---------------------------------------------------------------------------


def _task_names(recipe: RunConfig, n_tasks: int) -> tuple[str, ...]:
    """The recipe's label columns, or "task 1" … where it names none (a bundled dataset)."""
    if len(recipe.dataset.label_columns) == n_tasks:
        return recipe.dataset.label_columns
    return tuple(f"task {j + 1}" for j in range(n_tasks))


def _summary_line(summaries: TaskSummaries) -> str:
    if summaries.skipped is not None:
        return f"per-task summary {summaries.skipped}"
    line = f"per-task summary from {len(summaries.sent)} site(s)"
    if summaries.declined:
        line += f"; {len(summaries.declined)} declined: {', '.join(sorted(summaries.declined))}"
    return line


def _overlap_line(overlap: ConsortiumOverlap) -> str:
    if overlap.missing is not None:
        return f"chemical-space overlap {overlap.missing}"
    return f"chemical-space overlap summed securely over {len(overlap.contributors)} site(s)"


def write_head(path: Path, head: AuditHead) -> None:
    """Atomically replace ``path`` with the audit head (seq, hash)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"seq": head.seq, "hash": head.hash}), encoding="utf-8")
    os.replace(tmp, path)


def read_head(run_dir: Path) -> AuditHead | None:
    path = run_dir / HEAD_FILE
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return AuditHead(int(raw["seq"]), str(raw["hash"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not an audit head: {exc}") from exc


def read_run_id(run_dir: Path) -> str:
    """The run id in a run directory's manifest (``run.json``)."""
    path = run_dir / MANIFEST_FILE
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["run_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a run manifest: {exc}") from exc


def _ckks_context(config: ServerConfig) -> PublicContext:
    """The coordinator's keyless CKKS context, from its provisioned folder."""
    if config.server.tls is None:
        raise ConfigError(
            [
                '[secure] mode = "ckks" needs the coordinator folder of `fedpharma provision` '
                "(its ckks.public); set [server] tls"
            ],
            source="server config",
        )
    return load_public_context(Path(config.server.tls) / CKKS_PUBLIC_FILE)


def audit_path(run: Path) -> Path:
    """The audit log of a run directory (or the log file itself)."""
    return run / AUDIT_FILE if run.is_dir() else run


def _normalized(recipe: RunConfig) -> Any:
    return json.loads(json.dumps(recipe.to_dict()))


def _new_run(config: ServerConfig, recipe: RunConfig) -> tuple[str, Path]:
    run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    run_dir = Path(config.runs_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    manifest = {
        "run_id": run_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "recipe": recipe.to_dict(),
    }
    (run_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return run_id, run_dir


def _open_run(run: Path, config: ServerConfig, recipe: RunConfig) -> tuple[str, Path]:
    run_dir = run if run.is_dir() else Path(config.runs_dir) / str(run)
    manifest_file = run_dir / MANIFEST_FILE
    if not manifest_file.exists():
        raise DataError(f"{run} is not a run directory of this coordinator (no {MANIFEST_FILE})")
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    if manifest.get("recipe") != _normalized(recipe):
        raise ConfigError(
            [
                f"the run recipe {config.run_config} differs from the one run "
                f"{manifest.get('run_id')} started with; resume with the same recipe"
            ],
            "resume",
        )
    report = verify(run_dir / AUDIT_FILE, expected_head=read_head(run_dir))
    if not report.ok:
        raise DataError(
            f"refusing to resume: the audit log fails verification: {report.describe()}"
        )
    return str(manifest["run_id"]), run_dir


# ----- the coordinator -------------------------------------------------------------------------


def run_coordinator(
    config: ServerConfig,
    recipe: RunConfig,
    *,
    resume: Path | None = None,
    on_status: Status = _quiet,
    on_listening: Callable[[str], None] | None = None,
    on_run_dir: Callable[[Path], None] | None = None,
) -> CoordinatorResult:
    """Run (or resume) a deployed federated run to its end; see the module docstring.

    ``on_run_dir`` learns the run directory once it is kept: a new run's when the server
    listens (a start that fails removes the directory it made), a resumed run's at once.
    """
    # grpc loads only here: `fedpharma provision` and `audit verify` stay light.
    from fedpharma.models.factory import build_trainer
    from fedpharma.transport.grpc import (
        CoordinatorSettings,
        GrpcCoordinatorServer,
        ServerTls,
        WireLimits,
    )
    from fedpharma.transport.grpc.admission import AdmissionSettings

    say = on_status
    schema = declared_schema(recipe)
    n_features = config.server.n_features
    if schema is not None:
        if n_features is not None and n_features != fitted_width(schema):
            raise ConfigError(
                [
                    f"[server] n_features = {n_features}, but the declared schema makes "
                    f"{fitted_width(schema)} model inputs; leave n_features unset"
                ],
                "server config",
            )
        n_features = fitted_width(schema)
    shape = model_shape(recipe, n_features)
    # What every site's preprocessing must match, computed once from the recipe (no key).
    join_check = expected_preprocessing(recipe)
    initial = build_trainer(recipe, shape).initial_parameters(recipe.seed)

    if resume is None:
        run_id, run_dir = _new_run(config, recipe)
        store = RunStore.create(run_dir / STORE_FILE, run_id, recipe.to_dict())
        audit = AuditLog(run_dir / AUDIT_FILE)
        audit.record("run_started", reason=f"{recipe.rounds} rounds of {recipe.strategy.name}")
    else:
        run_id, run_dir = _open_run(resume, config, recipe)
        store = RunStore(run_dir / STORE_FILE)
        audit = AuditLog(run_dir / AUDIT_FILE)
        if on_run_dir is not None:
            on_run_dir(run_dir)

    server: Any = None
    listening = False
    try:
        tls = None if config.server.tls is None else ServerTls.from_folder(Path(config.server.tls))
        server_settings = CoordinatorSettings(
            run_id=run_id,
            address=config.server.address,
            limits=WireLimits(max_payload_bytes=int(config.server.max_payload_mb * 1024 * 1024)),
            liveness_timeout=config.server.liveness_timeout,
            heartbeat_seconds=config.server.heartbeat_seconds,
            max_pull_wait=min(5.0, config.server.liveness_timeout / 2),
            max_workers=config.server.max_workers,
            admission=AdmissionSettings(
                max_calls_per_site=config.server.max_calls_per_site,
                rate_per_site=config.server.max_calls_per_second,
                burst_per_site=max(1, round(2 * config.server.max_calls_per_second)),
                quarantine_after=config.server.quarantine_after,
            ),
        )

        def transport_status(line: str) -> None:
            if not line.startswith(
                ("task_sent", "result_accepted")
            ):  # one line per round is enough
                say(line)

        server = GrpcCoordinatorServer(
            server_settings,
            tls,
            insecure=config.server.insecure,
            audit=audit,
            on_status=transport_status,
            heads_sent=store.record_heads_sent,
        )
        control = config.round_control
        # Sites are listed (to the round loop and to the calibration) only once admitted at join.
        gate = JoinGate(
            server.channel,
            run_id,
            join_check,
            on_outcome=JoinLog(store, say, audit),
            timeout=control.round_timeout,
            wait_for=server.channel.wait_for_sites,
            dismiss=server.channel.dismiss,
            connection_of=server.channel.connection,
        )

        def calibrate(parameters: Parameters) -> Parameters:
            """Prepare tabular rows, then start the output layer at the labels, exactly as a
            simulation does."""
            targets = None
            if schema is not None:
                fitted = prepare_tabular_sites(
                    gate,
                    run_id,
                    recipe,
                    schema,
                    run_dir,
                    say,
                    server.channel.dismiss,
                    control.round_timeout,
                    _ckks_context(config) if recipe.secure.mode == "ckks" else None,
                )
                targets = fitted.target_scaling
            calibrated, how = calibrated_start(
                recipe,
                gate,
                run_id,
                parameters,
                shape.task,
                shape.n_tasks,
                control.round_timeout,
                targets=targets,
            )
            say(how)
            return calibrated

        progress = Progress(initial, 0, recipe.rounds, say)
        # Site-level DP noise in deployment comes from the OS CSPRNG, never from the recipe's seed.
        federation = build_federation(
            recipe,
            planned_sites=recipe.partition.n_sites,
            noise_rng=production_rng(),
            timeout=control.round_timeout,
            ckks_context=_ckks_context(config) if recipe.secure.mode == "ckks" else None,
            store=store,
            observers=[AuditRounds(audit, run_dir / HEAD_FILE, write_head), progress],
            prepare=calibrate,
            on_status=say,
            wait_for_sites=control.wait_for_sites,
            retries=control.retries,
            on_rejected=AuditRejections(audit),
        )
        if resume is not None:
            completed, parameters = federation.resume(initial)
            progress.parameters, progress.completed = parameters, completed
            audit.record("resume", round=completed + 1, reason=f"last completed round {completed}")
            say(
                f"resumed at round {completed + 1} (run {run_id}, last completed round {completed})"
            )
        server.start()
        listening = True
        if on_run_dir is not None and resume is None:
            on_run_dir(run_dir)
        if on_listening is not None:
            on_listening(server.address)
        say(f"run directory {run_dir}")
        if progress.completed == 0:
            _wait_for_planned_sites(gate, recipe.partition.n_sites, control.join_deadline, say)
        elif schema is not None:  # resumed: the sites get the run's fit again
            gate.wait_for_sites(recipe.strategy.min_sites, control.wait_for_sites)
            fitted = read_fit(run_dir, schema)
            hand_out_fit(gate, run_id, fitted, say, server.channel.dismiss, control.round_timeout)
        try:
            federation.run(
                AnnouncingChannel(gate, recipe.rounds, say),
                progress.parameters,
                recipe.rounds,
                run_id=run_id,
                first_round=progress.completed + 1,
                wait_for_sites=gate.wait_for_sites,
            )
        except RoundFailed as exc:
            stop = str(exc)
            say(stop)
            server.finish(stop, wait=FINISH_WAIT_SECONDS)
            server.stop()
            audit.record("run_finished", round=progress.completed + 1, reason=stop[:1000])
            write_head(run_dir / HEAD_FILE, audit.head)
            raise
        names = _task_names(recipe, shape.n_tasks)
        try:  # the model is trained and stored: a failure here costs only the per-task results
            summaries = collect_task_summaries(
                recipe,
                gate,
                run_id,
                progress.completed,
                progress.parameters,
                shape.task,
                names,
                control.round_timeout,
                on_rejected=AuditRejections(audit),
            )
        except FedPharmaError as exc:
            summaries = TaskSummaries(shape.task, names, skipped=f"not collected: {exc}")
        store.record_task_summaries(progress.completed, summaries_to_json(summaries))
        say(_summary_line(summaries))
        try:  # nor here: a failure costs only the overlap counts
            overlap = collect_chemical_overlap(
                recipe,
                gate,
                run_id,
                progress.completed + 1,  # its own secure round, after the model's last
                shape.n_features,
                secure_statistics(
                    recipe, _ckks_context(config) if recipe.secure.mode == "ckks" else None
                ),
                control.round_timeout,
                AuditRejections(audit),
            )
        except FedPharmaError as exc:
            overlap = ConsortiumOverlap(missing=f"not collected: {exc}")
        store.record_chemical_overlap(progress.completed, overlap)
        say(_overlap_line(overlap))
        say(f"run {run_id} finished after {progress.completed} rounds; telling the sites")
        server.finish("run finished", wait=FINISH_WAIT_SECONDS)
        server.stop()  # in-flight calls (the sites' leaves) are recorded before the end
        audit.record(
            "run_finished", round=progress.completed, reason=f"{progress.completed} rounds"
        )
        write_head(run_dir / HEAD_FILE, audit.head)
        return CoordinatorResult(
            run_dir, run_id, progress.parameters, progress.completed, audit.head
        )
    finally:
        if server is not None:
            server.stop()
        store.close()
        audit.close()
        if resume is None and not listening:  # it never served: leave no run behind
            shutil.rmtree(run_dir, ignore_errors=True)
