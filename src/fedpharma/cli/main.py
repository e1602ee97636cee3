"""`fedpharma` command line: demo, simulate, report, privacy; the deployment commands come from
:mod:`~fedpharma.cli.deploy`, and every command reports errors through
:func:`~fedpharma.cli.errors.friendly_errors`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from fedpharma.cli.deploy import register as register_deploy
from fedpharma.cli.errors import friendly_errors
from fedpharma.cli.schema import register as register_schema
from fedpharma.core.config import (
    DatasetConfig,
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
    # The demo's partners opt in to cross evaluation, so the report shows the full matrix.
    site_policy=SitePolicyConfig(allow_cross_evaluation=True),
    rounds=30,
    seed=0,
)


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
) -> None:
    """Federated QSAR on a real ChEMBL potency series: 4 partners owning different scaffolds."""
    config = DEMO_CONFIG if rounds is None else _replace(DEMO_CONFIG, rounds=rounds)
    typer.echo(
        "fedpharma demo: 4 partners, each owning different chemical series (Bemis–Murcko "
        "scaffolds) of ChEMBL2321810 (pIC50, shipped with RDKit), train one MLP on ECFP4 "
        "fingerprints with FedAvg; nobody shares a molecule."
    )
    _run(config, out or _default_out("demo"))


@app.command()
@friendly_errors
def simulate(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG.toml", help="Run config.")],
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/sim-TIME).")] = None,
) -> None:
    """Run any configured experiment in simulation (all sites in this process)."""
    _run(load_config(config_path), out or _default_out("sim"))


@app.command()
@friendly_errors
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Render RUN_DIR/report.html: learning curves, per-partner comparison, metrics, config."""
    from fedpharma.report.html import render_report

    typer.echo(f"report written to {render_report(run_dir)}")


@app.command()
@friendly_errors
def privacy(
    site_dir: Annotated[
        Path, typer.Argument(help="A site's folder: policy.toml + privacy.sqlite.")
    ],
) -> None:
    """Print a site's privacy ledger: every charge, cumulative ε, accountant, relation and δ."""
    from fedpharma.cli.display import print_ledger
    from fedpharma.core.config import load_site_policy
    from fedpharma.core.errors import DataError
    from fedpharma.site.policy import SitePolicy

    ledger_path = site_dir / "privacy.sqlite"
    if not ledger_path.exists():
        raise DataError(f"{ledger_path} does not exist: {site_dir} is not a site folder")
    policy = SitePolicy(load_site_policy(site_dir / "policy.toml"), ledger_path)
    print_ledger(policy)


def _replace(config: RunConfig, **changes: Any) -> RunConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


def _run(config: RunConfig, run_dir: Path) -> None:
    from fedpharma.cli.display import print_comparison, print_round
    from fedpharma.sim.engine import simulate as run_simulation

    result = run_simulation(
        config,
        run_dir,
        on_round=print_round,
        on_status=lambda message: typer.echo(message, err=True),
    )
    print_comparison(result.summary)
    typer.echo(f"\nrun directory: {run_dir}   (summary.json, run.sqlite)")
    typer.echo(f"look at it:    fedpharma report {run_dir}")


# Deployment commands: provision, permutation-key, server, site, audit verify, revoke.
register_deploy(app)
register_schema(app)
