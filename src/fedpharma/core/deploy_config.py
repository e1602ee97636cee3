"""The deployment files: server.toml (the coordinator) and site.toml (one site), typed and read.

Both files point (``run_config``) to the run recipe, a :class:`~fedpharma.core.config.RunConfig`
TOML: model, features, training, strategy, rounds and seed. The coordinator and every site must
use the *same* recipe; at join the coordinator refuses a site whose ``[features]`` preprocessing
differs from its own (:mod:`fedpharma.server.join`). Relative paths in these files are resolved
against the folder of the file that names them.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

from fedpharma.core.config import (
    bounded,
    build_top_level,
    choice,
    data_source_problems,
    read_toml,
)
from fedpharma.core.errors import ConfigError


@dataclass(frozen=True)
class ServerSection:
    """How the coordinator serves (``[server]`` of server.toml)."""

    address: str = "127.0.0.1:50051"  # host:port to listen on; port 0 picks a free port
    tls: str | None = None  # the coordinator folder made by `fedpharma provision`
    insecure: bool = False  # plaintext, for local tests only; a loud warning is printed
    heartbeat_seconds: float = bounded(5.0, 0.05, 3600.0)
    liveness_timeout: float = bounded(30.0, 0.1, None)  # a site silent this long is gone
    max_payload_mb: float = bounded(2048.0, 0.001, 2048.0)
    max_workers: int = bounded(32, 2, 10_000)
    # Admission control, per site certificate: calls in flight at once, calls per second it
    # may sustain (bursts of twice that), and refused calls or rejected results before the
    # site is quarantined for the rest of the run.
    max_calls_per_site: int = bounded(4, 2, 1000)
    max_calls_per_second: float = bounded(20.0, 0.1, None)
    quarantine_after: int = bounded(100, 1, None)
    # Input width of the model, for a tabular file dataset whose width depends on the sites'
    # data; molecules and bundled datasets derive it from the recipe.
    n_features: int | None = bounded(None, 1, None)


@dataclass(frozen=True)
class RoundControlConfig:
    """Round control (``[round_control]``): deadlines, waiting for sites and retries.

    The minimum number of sites per round is the recipe's ``[strategy] min_sites``.
    """

    round_timeout: float = bounded(600.0, 0.1, None)  # per-round deadline, seconds
    wait_for_sites: float = bounded(300.0, 0.0, None)  # wait this long for min_sites
    retries: int = bounded(3, 0, 1000)  # retries of a round too few sites answered
    # Before round 1 (and the output layer's calibration) wait this long for every planned site
    # (the recipe's [partition] n_sites) to join and be admitted, so a late site does not make
    # two same-seed runs differ; 0 starts as soon as min_sites are there.
    join_deadline: float = bounded(60.0, 0.0, None)


@dataclass(frozen=True)
class ServerConfig:
    """server.toml: the coordinator process."""

    run_config: str = "run.toml"  # the run recipe (shared with every site)
    runs_dir: str = "runs"  # run directories go to runs_dir/<run id>
    server: ServerSection = ServerSection()
    round_control: RoundControlConfig = RoundControlConfig()


@dataclass(frozen=True)
class SiteSection:
    """How a site reaches the coordinator (``[site]`` of site.toml). It never listens."""

    coordinator: str = "127.0.0.1:50051"  # host:port to dial
    tls: str | None = None  # this site's folder made by `fedpharma provision`
    name: str | None = None  # optional; must equal the certificate's name (required if insecure)
    insecure: bool = False  # plaintext, for local tests only
    pull_wait: float = bounded(5.0, 0.05, 600.0)
    backoff_max: float = bounded(30.0, 0.05, 3600.0)  # longest wait between reconnects
    give_up_after: float | None = bounded(None, 0.0, None)  # stop after this long unreachable


@dataclass(frozen=True)
class SiteDataConfig:
    """The site's own data (``[data]``): a file, or a bundled dataset.

    ``partition_index`` / ``n_partitions`` are a *demo convenience*: the site takes part k of a
    bundled (or shared) dataset, partitioned exactly as ``fedpharma simulate`` would with the
    recipe's ``[partition]`` method and ``seed``, so a deployment can reproduce a simulation.
    A real site has its own file and leaves them unset.
    """

    name: str | None = None  # bundled dataset name
    path: str | None = None  # CSV (.csv, .csv.gz) or SDF file
    kind: str = choice("molecules", "tabular", default="molecules")
    smiles_column: str = "smiles"
    label_columns: tuple[str, ...] = ()
    task: str | None = field(default=None, metadata={"choices": ("regression", "classification")})
    test_fraction: float | None = bounded(None, 0.05, 0.5)  # default: the recipe's
    partition_index: int | None = bounded(None, 1, None)  # demo: take this part (1-based)
    n_partitions: int | None = bounded(None, 1, None)  # default: recipe's [partition] n_sites


@dataclass(frozen=True)
class SiteConfig:
    """site.toml: one site process."""

    run_config: str = "run.toml"  # the run recipe (the coordinator's)
    # The data owner's privacy policy (budgets per relation; see SitePolicyConfig). Without one
    # the site refuses every DP task. The ledger lives in state_dir, on the site's own disk.
    policy: str | None = None
    state_dir: str = "site-state"
    # The partners' secret fingerprint-permutation key file (hex text), needed when the recipe
    # sets [features] permutation_key_id; never given to the coordinator.
    permutation_key: str | None = None
    # The partners' secret chemical-overlap key file (hex text): with it the site hashes its
    # scaffolds for the run's overlap counts; without it, it declines them. Never given to the
    # coordinator.
    overlap_key: str | None = None
    site: SiteSection = SiteSection()
    data: SiteDataConfig = SiteDataConfig()


def load_server_config(path: str | Path) -> ServerConfig:
    """Read and validate server.toml; paths in it become absolute (relative to its folder)."""
    p = Path(path)
    cfg, problems = _load_deploy(ServerConfig, p)
    problems += _tls_problems("[server]", cfg.server.tls, cfg.server.insecure, "the coordinator")
    if cfg.server.liveness_timeout <= cfg.server.heartbeat_seconds:
        problems.append("[server] `liveness_timeout` must exceed `heartbeat_seconds`")
    if problems:
        raise ConfigError(problems, str(p))
    base = p.parent
    return dataclasses.replace(
        cfg,
        run_config=_resolve(base, cfg.run_config),
        runs_dir=_resolve(base, cfg.runs_dir),
        server=dataclasses.replace(cfg.server, tls=_resolve_optional(base, cfg.server.tls)),
    )


def load_site_config(path: str | Path) -> SiteConfig:
    """Read and validate site.toml; paths in it become absolute (relative to its folder)."""
    p = Path(path)
    cfg, problems = _load_deploy(SiteConfig, p)
    site, data = cfg.site, cfg.data
    problems += _tls_problems("[site]", site.tls, site.insecure, "this site's")
    if site.insecure and site.name is None:
        problems.append("[site] an insecure site needs a `name`")
    problems += data_source_problems("[data]", data.name, data.path, data.label_columns, data.task)
    if data.n_partitions is not None and data.partition_index is None:
        problems.append("[data] `n_partitions` needs `partition_index`")
    if (
        data.partition_index is not None
        and data.n_partitions is not None
        and data.partition_index > data.n_partitions
    ):
        problems.append(
            f"[data] partition_index = {data.partition_index} exceeds "
            f"n_partitions = {data.n_partitions}"
        )
    if problems:
        raise ConfigError(problems, str(p))
    base = p.parent
    return dataclasses.replace(
        cfg,
        run_config=_resolve(base, cfg.run_config),
        policy=_resolve_optional(base, cfg.policy),
        state_dir=_resolve(base, cfg.state_dir),
        permutation_key=_resolve_optional(base, cfg.permutation_key),
        overlap_key=_resolve_optional(base, cfg.overlap_key),
        site=dataclasses.replace(site, tls=_resolve_optional(base, site.tls)),
        data=dataclasses.replace(data, path=_resolve_optional(base, data.path)),
    )


def _tls_problems(where: str, tls: str | None, insecure: bool, whose: str) -> list[str]:
    """Exactly one of ``tls`` (a folder of ``fedpharma provision``) and ``insecure``."""
    if tls is None and not insecure:
        return [f"{where} give `tls` ({whose} folder of `fedpharma provision`)"]
    if tls is not None and insecure:
        return [f"{where} `insecure = true` contradicts `tls`; keep one"]
    return []


_TopLevel = typing.TypeVar("_TopLevel", ServerConfig, SiteConfig)


def _load_deploy(cls: type[_TopLevel], path: Path) -> tuple[_TopLevel, list[str]]:
    return build_top_level(cls, read_toml(path))


def _resolve(base: Path, value: str) -> str:
    return str((base / Path(value).expanduser()).resolve())


def _resolve_optional(base: Path, value: str | None) -> str | None:
    return None if value is None else _resolve(base, value)
