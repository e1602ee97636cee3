"""Deployment commands: provision, permutation-key, server, site, audit verify, revoke.

Status lines ("listening", "joined", "waiting for sites", "round k of n", "resumed at round k")
go to stderr as they happen; each command's final result goes to stdout. Errors are printed by
:func:`~fedpharma.cli.errors.friendly_errors` as one message with the error's exit code. SIGTERM
or Ctrl-C stops ``server`` and ``site`` with a line saying how to continue (``--resume``) and
exit code 143 (SIGTERM) or 130 (Ctrl-C).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from fedpharma.cli.errors import friendly_errors

audit_app = typer.Typer(help="The run's hash-chained audit log.", no_args_is_help=True)


def _status(prefix: str) -> Callable[[str], None]:
    def say(line: str) -> None:
        typer.echo(f"{prefix}: {line}", err=True)

    return say


class _Stopped(KeyboardInterrupt):
    """A SIGTERM, unwinding like Ctrl-C so the run store and audit log are closed properly."""


def _terminate_cleanly() -> None:
    """Make SIGTERM unwind like Ctrl-C (see :func:`_interrupted`)."""

    def handler(_signum: int, _frame: object) -> None:
        raise _Stopped

    signal.signal(signal.SIGTERM, handler)


def _interrupted(exc: KeyboardInterrupt, hint: str) -> typer.Exit:
    """Say how to continue after SIGTERM or Ctrl-C; the exit code is 128 + the signal's number,
    as shells report it: 143 for SIGTERM, 130 for Ctrl-C (SIGINT)."""
    signum = signal.SIGTERM if isinstance(exc, _Stopped) else signal.SIGINT
    typer.echo(f"stopped by {signum.name}: {hint}", err=True)
    return typer.Exit(128 + int(signum))


@friendly_errors
def provision(
    project: Annotated[str, typer.Option(help="Consortium/project name (DNS-label-like).")],
    sites: Annotated[str, typer.Option(help="Comma-separated site names, e.g. hospital-a,b.")],
    out: Annotated[Path, typer.Option(help="Output folder for the CA and every party.")],
    server_host: Annotated[
        list[str] | None,
        typer.Option(help="DNS name or IP sites dial (repeatable; default localhost, 127.0.0.1)."),
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="Validity of the certificates.")] = 365,
) -> None:
    """Create the consortium's CA, the coordinator's certificate and one certificate per site,
    and the sites' shared CKKS key (for [secure] mode = "ckks")."""
    from fedpharma.transport.pki import provision as make_pki

    names = [s.strip() for s in sites.split(",") if s.strip()]
    hosts = server_host or ["localhost", "127.0.0.1"]
    made = make_pki(project, names, out, server_hosts=hosts, days=days)
    typer.echo(f"CA:          {made.ca_cert.parent}  (keep ca.key offline; it signs new certs)")
    typer.echo(f"coordinator: {made.coordinator.folder}  (server cert for {', '.join(hosts)})")
    for site, files in made.sites.items():
        typer.echo(f"site:        {files.folder}  (give this folder to {site} only)")
    typer.echo(f"revocation list: {made.revoked}")
    typer.echo(
        f'CKKS: one key for [secure] mode = "ckks" in every site folder; the coordinator '
        f"holds only the keyless {made.ckks_public.name}"
    )


@friendly_errors
def permutation_key(
    out: Annotated[Path, typer.Option(help="The key file to create (never overwritten).")],
) -> None:
    """Make the consortium's secret fingerprint-permutation key, readable by its owner only.
    Give the file to every site (site.toml permutation_key), never to the coordinator, and put
    the printed id in the run recipe."""
    from fedpharma.data.permutation import write_permutation_key

    key_id = write_permutation_key(out)
    typer.echo(f"key:    {out}  (mode 0600; give it to every site, never to the coordinator)")
    typer.echo(f'recipe: [features] permutation_key_id = "{key_id}"')


@friendly_errors
def server(
    config: Annotated[Path, typer.Option("--config", help="server.toml")],
    resume: Annotated[
        Path | None,
        typer.Option("--resume", metavar="RUN", help="Continue a crashed run (dir or run id)."),
    ] = None,
) -> None:
    """Run the coordinator: serve the sites, run the rounds, keep the run store and audit log."""
    from fedpharma.core.config import load_config
    from fedpharma.core.deploy_config import load_server_config
    from fedpharma.server.coordinator import run_coordinator

    server_config = load_server_config(config)
    recipe = load_config(server_config.run_config)
    _terminate_cleanly()
    say = _status("coordinator")
    say(
        f"{recipe.rounds} rounds of {recipe.strategy.name}, at least "
        f"{recipe.strategy.min_sites} site(s) per round"
    )
    run_dirs: list[Path] = []
    try:
        result = run_coordinator(
            server_config, recipe, resume=resume, on_status=say, on_run_dir=run_dirs.append
        )
    except KeyboardInterrupt as exc:
        if not run_dirs:
            raise _interrupted(exc, "no run was started") from None
        raise _interrupted(
            exc,
            f"every completed round is kept in {run_dirs[0]}; continue the run with "
            f"`fedpharma server --config {config} --resume {run_dirs[0]}` (the sites keep "
            "dialling and rejoin)",
        ) from None
    typer.echo(f"run {result.run_id}: {result.rounds_completed} rounds completed")
    typer.echo(f"run directory: {result.run_dir}  (run.json, run.sqlite, audit.jsonl)")
    typer.echo(f"audit head:    seq {result.audit_head.seq} {result.audit_head.hash}")
    typer.echo(f"check it:      fedpharma audit verify {result.run_dir}")


@friendly_errors
def site(config: Annotated[Path, typer.Option("--config", help="site.toml")]) -> None:
    """Run one site: load its own data, dial out to the coordinator, answer tasks. No port opens."""
    from fedpharma.core.config import load_config
    from fedpharma.core.deploy_config import load_site_config
    from fedpharma.site.deploy import serve

    site_config = load_site_config(config)
    recipe = load_config(site_config.run_config)
    _terminate_cleanly()
    try:
        ended = serve(site_config, recipe, on_status=_status("site"))
    except KeyboardInterrupt as exc:
        raise _interrupted(
            exc,
            f"start it again with `fedpharma site --config {config}`: it rejoins the run (a "
            "stopped coordinator continues with `fedpharma server --config SERVER_TOML "
            "--resume RUN`)",
        ) from None
    typer.echo(f"site done: {ended}")


@audit_app.command("verify")
@friendly_errors
def audit_verify(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory or audit.jsonl file.")],
    witness: Annotated[
        list[Path] | None,
        typer.Option(
            "--witness",
            metavar="SITE_STATE_DIR",
            help="A site's state_dir: the audit heads it received (repeatable).",
        ),
    ] = None,
) -> None:
    """Check every entry's hash and link; name the first edited, deleted or inserted entry.

    The run's recorded head (audit-head.json, next to the log; required) is checked too, and with
    ``--witness`` every head a site received with its tasks: a log rewritten with consistent
    hashes, or cut short, fails against any of them.
    """
    from fedpharma.core.errors import DataError
    from fedpharma.server.audit import AuditHead, verify
    from fedpharma.server.coordinator import HEAD_FILE, audit_path, read_head, read_run_id
    from fedpharma.site.witness import read_heads

    path = audit_path(run)
    if not path.exists():
        raise DataError(f"no audit log at {path}")
    head = read_head(path.parent)
    if head is None:
        raise DataError(
            f"no recorded head {path.parent / HEAD_FILE} next to the log: a log rewritten with "
            "consistent hashes or cut short cannot be told from the original without it; restore "
            "it from a backup, or check against the sites' records with --witness"
        )
    witnessed: dict[str, list[AuditHead]] = {}
    if witness:
        run_id = read_run_id(path.parent)
        for folder in witness:
            heads = read_heads(folder, run_id)
            if not heads:
                raise DataError(f"{folder} holds no audit head of run {run_id}")
            witnessed[str(folder)] = [AuditHead(h.seq, h.hash) for h in heads]
    report = verify(path, expected_head=head, witnessed=witnessed)
    if report.ok:
        seen = sum(len(heads) for heads in witnessed.values())
        against = f" and the {seen} head(s) {len(witnessed)} site(s) saw" if witnessed else ""
        typer.echo(f"OK {report.describe()} (matches the recorded head{against})")
        return
    typer.echo(f"FAILED {report.describe()}")
    raise typer.Exit(1)


@friendly_errors
def revoke(
    site_name: Annotated[str, typer.Argument(metavar="SITE", help="Site whose cert to revoke.")],
    pki: Annotated[Path, typer.Option(help="The folder `fedpharma provision` wrote.")],
) -> None:
    """Revoke a site's certificate: the coordinator refuses it from its very next call."""
    from fedpharma.core.errors import ConfigError
    from fedpharma.transport.pki import CERT_FILE, REVOKED_FILE
    from fedpharma.transport.pki import revoke as revoke_cert

    cert = pki / "sites" / site_name / CERT_FILE
    revoked = pki / "coordinator" / REVOKED_FILE
    if not cert.exists():
        raise ConfigError([f"no certificate for site {site_name!r} at {cert}"], "revoke")
    serial = revoke_cert(revoked, cert)
    typer.echo(f"revoked {site_name} (serial {serial:x}) in {revoked}")
    typer.echo(
        "a coordinator using this folder refuses it at once; copy revoked.txt to a coordinator "
        "that runs elsewhere. A replacement certificate is issued from the CA folder with "
        "fedpharma.transport.pki.issue_site_certificate."
    )


def register(app: typer.Typer) -> None:
    """Add the deployment commands to the ``fedpharma`` app."""
    app.command()(provision)
    app.command("permutation-key")(permutation_key)
    app.command()(server)
    app.command()(site)
    app.command()(revoke)
    app.add_typer(audit_app, name="audit")
