"""`fedpharma` command line: demo, simulate, report, privacy, export, predict; the deployment
commands come from
:mod:`~fedpharma.cli.deploy`, and every command reports errors through
:func:`~fedpharma.cli.errors.friendly_errors`.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from fedpharma import __version__
from fedpharma.cli.deploy import register as register_deploy
from fedpharma.cli.errors import friendly_errors
from fedpharma.cli.schema import register as register_schema
from fedpharma.core.config import (
    DatasetConfig,
    EvaluationConfig,
    FeaturesConfig,
    ModelConfig,
    PartitionConfig,
    RunConfig,
    SitePolicyConfig,
    StrategyConfig,
    TrainingConfig,
    load_config,
)

app = typer.Typer(
    help="Privacy-preserving federated learning for drug development.",
    no_args_is_help=True,
    add_completion=False,
)

DEMO_CONFIG = RunConfig(
    dataset=DatasetConfig(name="chembl2321810"),
    features=FeaturesConfig(fingerprint="morgan", radius=2, n_bits=2048),
    partition=PartitionConfig(method="scaffold", n_sites=4),
    model=ModelConfig(kind="mlp", hidden=(256, 64), dropout=0.1),
    training=TrainingConfig(local_epochs=1, batch_size=32, learning_rate=1e-3),
    strategy=StrategyConfig(name="fedavg"),
    # Each partner holds out a validation fold; every model kind is selected on it.
    evaluation=EvaluationConfig(validation_fraction=0.15),
    # The demo's partners opt in to cross evaluation, so the report shows the full matrix.
    site_policy=SitePolicyConfig(allow_cross_evaluation=True),
    rounds=30,
    seed=0,
)


MLFLOW_HELP = (
    "Also log the run to MLflow at this tracking URI (a local folder works offline); needs "
    "pip install 'fedpharma[mlflow]'."
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fedpharma {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Privacy-preserving federated learning for drug development."""


def _default_out(prefix: str) -> Path:
    return Path("runs") / f"{prefix}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


@app.command()
@friendly_errors
def demo(
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/demo-TIME).")
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="Override the number of rounds.")
    ] = None,
    mlflow: Annotated[str | None, typer.Option(metavar="URI", help=MLFLOW_HELP)] = None,
) -> None:
    """Federated QSAR on a real ChEMBL potency series: 4 partners owning different scaffolds."""
    config = DEMO_CONFIG if rounds is None else _replace(DEMO_CONFIG, rounds=rounds)
    typer.echo(
        "fedpharma demo: 4 partners, each owning different chemical series (Bemis–Murcko "
        "scaffolds) of ChEMBL2321810 (pIC50, shipped with RDKit), train one MLP on ECFP4 "
        "fingerprints with FedAvg; nobody shares a molecule."
    )
    _run(config, out or _default_out("demo"), mlflow)


@app.command()
@friendly_errors
def simulate(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG.toml", help="Run config.")],
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/sim-TIME).")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="TABLE.KEY=VALUE",
            help="Override a config setting, e.g. --set training.learning_rate=0.01 (repeatable).",
        ),
    ] = None,
    mlflow: Annotated[str | None, typer.Option(metavar="URI", help=MLFLOW_HELP)] = None,
) -> None:
    """Run any configured experiment in simulation (all sites in this process)."""
    _run(load_config(config_path, overrides or ()), out or _default_out("sim"), mlflow)


@app.command()
@friendly_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory, simulated or deployed.")],
) -> None:
    """Render RUN_DIR/report.html: learning curves, per-partner comparison, metrics, config."""
    from fedpharma.report.html import render_report
    from fedpharma.report.summary import SUMMARY_FILE

    summary = None
    if not (run_dir / SUMMARY_FILE).is_file() and (run_dir / "run.sqlite").is_file():
        from fedpharma.server.run_summary import summary_from_store

        summary = summary_from_store(run_dir)  # a deployed run keeps only its run store
    typer.echo(f"report written to {render_report(run_dir, summary)}")


@app.command("plugin-digest")
@friendly_errors
def plugin_digest(
    plugin: Annotated[
        str, typer.Argument(help='[model] plugin: a built-in name or "package.module:Class".')
    ],
) -> None:
    """Print the identity of a model plugin as installed here: the digest a site's owner adds
    to approved_plugins after reviewing that code (its plugin code is not imported)."""
    from fedpharma.models.plugin_identity import plugin_identity

    identity = plugin_identity(plugin)
    if identity is None:
        typer.echo(f"{plugin}: fedpharma's own code; approved without a digest")
        return
    typer.echo(f"{identity.name}: {identity.distribution} {identity.version}")
    typer.echo(f'approved_plugins = ["{identity.digest}"]')


@app.command()
@friendly_errors
def privacy(
    site_dir: Annotated[
        Path,
        typer.Argument(
            help="A site's folder (a deployed site's state_dir): policy.toml + privacy.sqlite."
        ),
    ],
    policy_file: Annotated[
        Path | None,
        typer.Option(
            "--policy", help="The site's policy file (default: policy.toml in the site's folder)."
        ),
    ] = None,
) -> None:
    """Print a site's privacy ledger: every charge, cumulative ε, accountant, relation and δ."""
    from fedpharma.cli.display import print_ledger
    from fedpharma.core.config import load_site_policy
    from fedpharma.core.errors import DataError
    from fedpharma.site.policy import SitePolicy

    ledger_path = site_dir / "privacy.sqlite"
    if not ledger_path.exists():
        raise DataError(f"{ledger_path} does not exist: {site_dir} is not a site folder")
    policy = SitePolicy(load_site_policy(policy_file or site_dir / "policy.toml"), ledger_path)
    print_ledger(policy)


@app.command()
@friendly_errors
def export(
    out: Annotated[Path, typer.Option(help="The model bundle folder to write (new or empty).")],
    run: Annotated[
        Path | None,
        typer.Argument(help="A run directory, simulated or deployed (or its run.sqlite)."),
    ] = None,
    site_state: Annotated[
        Path | None,
        typer.Option(
            help="Instead of a run: a site's state_dir, to export the shared trunk with this "
            "site's own head (private heads; run it at the site)."
        ),
    ] = None,
) -> None:
    """Export a run's model: weights (safetensors) and a manifest of preprocessing, tasks,
    architecture and provenance."""
    from fedpharma.bundle.export import export_run, export_site
    from fedpharma.core.errors import DataError

    if (run is None) == (site_state is None):
        raise DataError("give either a run directory or --site-state DIR")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"--out {out} exists and is not empty; choose a new folder")
    if site_state is not None:
        manifest = export_site(site_state, out)
    elif run is not None:
        manifest = export_run(run, out)
    tasks = ", ".join(manifest.task_names)
    typer.echo(
        f"model of run {manifest.provenance.run_id} (round {manifest.provenance.round}; "
        f"{manifest.task}: {tasks}) written to {out}"
    )
    typer.echo(f"use it:  fedpharma predict {out} MOLECULES.csv --out predictions.csv")


@app.command()
@friendly_errors
def predict(
    bundle: Annotated[Path, typer.Argument(help="A model bundle (fedpharma export).")],
    molecules: Annotated[
        Path, typer.Argument(help="Molecules: a CSV with a SMILES column, or an SDF file.")
    ],
    out: Annotated[Path, typer.Option(help="Where to write the predictions (CSV).")],
    smiles_column: Annotated[str, typer.Option(help="The CSV's SMILES column.")] = "smiles",
) -> None:
    """Predict new molecules with an exported model, featurized with the model's own recipe."""
    from fedpharma.bundle.predict import Model

    model = Model.load(bundle)
    predictions = model.predict_file(molecules, smiles_column=smiles_column)
    predictions.write_csv(out)
    line = f"{len(predictions) - len(predictions.invalid)} of {len(predictions)} molecule(s) "
    line += f"predicted, written to {out}"
    if predictions.invalid:
        rows = sorted(predictions.invalid)
        shown = ", ".join(map(str, rows[:10])) + (", …" if len(rows) > 10 else "")
        line += f"; {len(rows)} invalid, no prediction (rows {shown})"
    typer.echo(line)


def _replace(config: RunConfig, **changes: Any) -> RunConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


def _run(config: RunConfig, run_dir: Path, mlflow: str | None = None) -> None:
    from fedpharma.api import simulate as run_simulation
    from fedpharma.cli.display import print_comparison, print_round
    from fedpharma.core.errors import FedPharmaError

    existed = run_dir.exists()
    try:
        result = run_simulation(
            config,
            out=run_dir,
            on_round=print_round,
            on_status=lambda message: typer.echo(message, err=True),
            mlflow=mlflow,
        )
    except FedPharmaError:
        if not existed and run_dir.is_dir():  # a failed simulation leaves no half-written --out
            shutil.rmtree(run_dir)
        raise
    print_comparison(result.summary)
    typer.echo(f"\nrun directory: {run_dir}   (summary.json, run.sqlite)")
    typer.echo(f"look at it:    fedpharma report {run_dir}")


# Deployment commands: provision, permutation-key, server, site, audit verify, revoke.
register_deploy(app)
register_schema(app)
