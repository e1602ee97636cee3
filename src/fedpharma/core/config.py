"""Typed, frozen run configuration; TOML in, validated, every problem reported at once.

Each TOML table maps to one frozen dataclass below, read by :mod:`fedpharma.core.serde`. A field's
``metadata`` may hold ``choices`` (allowed values) and ``min`` / ``max`` (inclusive bounds).
Unknown keys are reported with a "did you mean" suggestion, the way a typo deserves.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpharma.core import serde
from fedpharma.core.errors import ConfigError

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad")


def _choice(*values: str, default: str) -> Any:
    return field(default=default, metadata={"choices": values})


def _bounded(default: Any, lo: float | None = None, hi: float | None = None) -> Any:
    return field(default=default, metadata={"min": lo, "max": hi})


@dataclass(frozen=True)
class DatasetConfig:
    """Where the data comes from: a bundled dataset by name, or a file."""

    name: str | None = None  # bundled name, see fedpharma.data.datasets.BUNDLED
    path: str | None = None  # CSV (.csv, .csv.gz) or SDF file
    kind: str = _choice("molecules", "tabular", default="molecules")
    smiles_column: str = "smiles"
    label_columns: tuple[str, ...] = ()
    task: str | None = field(default=None, metadata={"choices": ("regression", "classification")})
    site_column: str | None = None  # tabular: column naming each record's site (natural split)
    test_fraction: float = _bounded(0.2, 0.05, 0.5)


@dataclass(frozen=True)
class FeaturesConfig:
    """How molecules become model inputs: the preprocessing every site must apply identically."""

    fingerprint: str = _choice("morgan", "none", default="morgan")
    radius: int = _bounded(2, 1, 6)
    n_bits: int = _bounded(2048, 64, 65536)
    counts: bool = False
    descriptors: bool = False
    # Public id (16 hex digits) of the partners' secret key that permutes the fingerprint bits,
    # so the coordinator cannot read substructures from the model's input layer; unset: no
    # permutation. Each site holds the key itself (site.toml `permutation_key`).
    permutation_key_id: str | None = None


@dataclass(frozen=True)
class PartitionConfig:
    """How a simulation splits one dataset into sites."""

    method: str = _choice("scaffold", "dirichlet", "quantity", "natural", default="scaffold")
    n_sites: int = _bounded(4, 1, 10_000)
    alpha: float = _bounded(0.5, 1e-3, None)  # Dirichlet concentration (dirichlet, quantity)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = _choice("mlp", "linear", default="mlp")
    hidden: tuple[int, ...] = (512, 128)
    dropout: float = _bounded(0.1, 0.0, 0.9)
    # A public prior on the labels, one value per task (e.g. from the literature): the output
    # layer starts at it. It costs no privacy, so it is what a DP run uses instead of the
    # label-statistics exchange. Regression: mean and spread; classification: positive rate.
    label_mean: tuple[float, ...] = ()
    label_std: tuple[float, ...] = ()
    # Shared trunk, private heads (MELLODDY): only the hidden layers are federated; each site's
    # output layer over its own tasks is trained and kept at the site, never sent.
    private_heads: bool = False


@dataclass(frozen=True)
class TrainingConfig:
    """Local training at each site, per round."""

    local_epochs: int = _bounded(1, 1, 1000)
    batch_size: int = _bounded(64, 1, 1_000_000)
    learning_rate: float = _bounded(1e-3, 0.0, 10.0)
    optimizer: str = _choice("adam", "sgd", default="adam")
    weight_decay: float = _bounded(0.0, 0.0, 1.0)
    # Start the output layer at the consortium's pooled label mean / spread (sites release three
    # sums per task once; skipped under differential privacy, where it would be unaccounted).
    calibrate_output: bool = True


@dataclass(frozen=True)
class StrategyConfig:
    """Server-side aggregation (Flower-style strategy) and its hyper-parameters."""

    name: str = _choice(*STRATEGIES, default="fedavg")
    proximal_mu: float = _bounded(0.01, 0.0, None)  # FedProx (Li et al. 2020)
    # η of FedAdam/FedYogi/FedAdagrad (Reddi et al. 2021); unset means 1e-2.
    server_learning_rate: float | None = _bounded(None, 0.0, None)
    beta1: float = _bounded(0.9, 0.0, 0.999999)
    beta2: float = _bounded(0.99, 0.0, 0.999999)
    tau: float = _bounded(1e-3, 1e-12, None)  # adaptivity ε in FedOpt
    fraction_fit: float = _bounded(1.0, 1e-6, 1.0)
    min_sites: int = _bounded(1, 1, None)
    evaluate_every: int = _bounded(1, 0, None)  # rounds between evaluations; 0 = last round only


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential privacy the coordinator asks of the sites (each site still enforces its own
    budget, see :class:`SitePolicyConfig`).

    Record level (``record_level``): every site trains with DP-SGD (Abadi et al. 2016), so one
    record's influence is bounded. Site level (``site_level``): each site's whole update is
    clipped to ``clip_norm`` and the sum carries Gaussian noise σ·C (McMahan et al. 2018; Geyer
    et al. 2017), added by the coordinator (``noise_placement = "central"``) or in shares by the
    sites (``"distributed"``, for use with secure aggregation). Give a noise multiplier, or a
    ``target_epsilon`` to calibrate it for the planned rounds.
    """

    record_level: bool = False
    noise_multiplier: float | None = _bounded(None, 0.0, None)  # DP-SGD σ
    max_grad_norm: float = _bounded(1.0, 1e-6, None)
    site_level: bool = False
    site_noise_multiplier: float | None = _bounded(None, 0.0, None)  # σ of the sum, site level
    clip_norm: float = _bounded(1.0, 1e-9, None)  # C: bound on each site's update norm
    adaptive_clipping: bool = False  # Andrew et al. 2021: C tracks a quantile of update norms
    target_quantile: float = _bounded(0.5, 0.0, 1.0)
    noise_placement: str = _choice("central", "distributed", default="central")
    target_epsilon: float | None = _bounded(None, 1e-6, None)
    delta: float = _bounded(1e-5, 1e-15, 0.1)
    accountant: str = _choice("rdp", "pld", default="rdp")

    @property
    def enabled(self) -> bool:
        return self.record_level or self.site_level


@dataclass(frozen=True)
class SecureConfig:
    """Secure aggregation: the coordinator never holds an individual site's update.

    ``mode = "secagg"``: pairwise masks with Shamir dropout recovery (Bonawitz et al. 2017); no
    key holder. ``threshold`` is t, the fewest sites that must survive each phase (unset and at
    least: more than two thirds of the round's sites and ``[strategy] min_sites``, the least
    the sites accept against an active coordinator; docs/secure-aggregation.md). Updates are
    clipped per coordinate to [-``clip``, ``clip``] and quantized into the ring Z_{2^``ring_bits``};
    ``max_examples`` bounds any site's example count (its FedAvg weight).

    ``mode = "ckks"``: CKKS homomorphic encryption (Cheon et al. 2017, TenSEAL) under a key the
    sites share and the coordinator never holds (made by ``fedpharma provision``; in simulation a
    fresh key per run). ``threshold`` is then the fewest updates a site will decrypt a sum of
    (unset and at least: ``[strategy] min_sites`` and 3; docs/ckks.md). Either mode needs at
    least three sites.
    """

    mode: str = _choice("none", "secagg", "ckks", default="none")
    threshold: int | None = _bounded(None, 2, None)
    ring_bits: int = field(default=64, metadata={"choices": (32, 64)})
    clip: float = _bounded(1.0, 1e-9, None)
    max_examples: int = _bounded(1_000_000, 1, None)

    @property
    def enabled(self) -> bool:
        return self.mode != "none"


@dataclass(frozen=True)
class SitePolicyConfig:
    """A data owner's rules, applied by its site before it touches data.

    In a deployment each site reads its own policy file; in a simulation the run config's
    ``[site_policy]`` applies to every simulated site. A relation without a budget accepts no DP
    task of that relation (secure default); ``require_dp`` refuses tasks with no DP at all.
    """

    record_epsilon: float | None = _bounded(None, 1e-6, None)
    record_delta: float = _bounded(1e-5, 1e-15, 0.1)
    site_epsilon: float | None = _bounded(None, 1e-6, None)
    site_delta: float = _bounded(1e-5, 1e-15, 0.1)
    require_dp: bool = False
    # Refuse train tasks whose update would reach the coordinator unmasked (no secure aggregation).
    require_secure: bool = False
    # Let partners evaluate this site's local-only model on their test data, and evaluate theirs
    # on this site's test data (both sites must allow a cell; fedpharma.evaluation.cross_site).
    # Off by default: a local-only model is a function of this site's data alone, a release the
    # federation otherwise never makes. The federated model is evaluated at every site anyway.
    allow_cross_evaluation: bool = False
    accountant: str = _choice("rdp", "pld", default="rdp")
    conversion: str = _choice("improved", "classic", default="improved")


@dataclass(frozen=True)
class RunConfig:
    dataset: DatasetConfig = DatasetConfig(name="chembl2321810")
    features: FeaturesConfig = FeaturesConfig()
    partition: PartitionConfig = PartitionConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    strategy: StrategyConfig = StrategyConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    site_policy: SitePolicyConfig = SitePolicyConfig()
    secure: SecureConfig = SecureConfig()
    rounds: int = _bounded(20, 1, 100_000)
    seed: int = 0
    baselines: bool = True  # also train local-only and centralized references
    # Simulation: membership-inference attacks on the final model and on each site's raw
    # update (fedpharma.sim.audit), the measured leakage shown beside the formal ε.
    privacy_audit: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's contents; a missing or malformed file is a :class:`ConfigError`."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError([f"file {path} does not exist"], source=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=str(path)) from exc


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run config; raise :class:`ConfigError` listing every problem."""
    p = Path(path)
    raw = read_toml(p)
    return config_from_dict(raw, source=str(p))


def load_site_policy(path: str | Path) -> SitePolicyConfig:
    """Read a data owner's policy file (top-level keys of :class:`SitePolicyConfig`)."""
    p = Path(path)
    raw = read_toml(p)
    return serde.load(SitePolicyConfig, raw, source=str(p), where="policy")


def site_policy_toml(policy: SitePolicyConfig) -> str:
    """The policy as a TOML file :func:`load_site_policy` reads back."""
    lines = ["# A site's privacy policy: its owner's budgets, enforced by the site itself."]
    for f in dataclasses.fields(policy):
        value = getattr(policy, f.name)
        if value is not None:
            text = "true" if value is True else "false" if value is False else repr(value)
            lines.append(f"{f.name} = {text}".replace("'", '"'))
    return "\n".join(lines) + "\n"


def config_from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    cfg, problems = build_top_level(RunConfig, raw)
    if problems:
        raise ConfigError(problems, source)
    problems = cross_check(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def data_source_problems(
    where: str, name: str | None, path: str | None, labels: tuple[str, ...], task: str | None
) -> list[str]:
    """A data source is a bundled dataset or a file; a file needs its label columns and task."""
    problems = []
    if (name is None) == (path is None):
        problems.append(
            f"{where} give exactly one of `name` (a bundled dataset) or `path` (a file)"
        )
    if path is not None and not labels:
        problems.append(f"{where} `label_columns` must list the label column(s) of the file")
    if path is not None and task is None:
        problems.append(f'{where} `task` must be "regression" or "classification" for a file')
    return problems


def cross_check(cfg: RunConfig) -> list[str]:
    """Problems that involve more than one field."""
    problems = []
    ds = cfg.dataset
    problems += data_source_problems("[dataset]", ds.name, ds.path, ds.label_columns, ds.task)
    if cfg.partition.method == "natural" and ds.site_column is None and ds.path is not None:
        problems.append('[partition] method "natural" needs [dataset] `site_column`')
    if cfg.model.kind == "mlp" and not cfg.model.hidden:
        problems.append("[model] an mlp needs at least one hidden layer in `hidden`")
    if any(h < 1 for h in cfg.model.hidden):
        problems.append("[model] every `hidden` layer width must be ≥ 1")
    if cfg.strategy.min_sites > cfg.partition.n_sites:
        problems.append(
            f"[strategy] min_sites = {cfg.strategy.min_sites} exceeds "
            f"[partition] n_sites = {cfg.partition.n_sites}; no round could start"
        )
    if cfg.model.private_heads and (cfg.model.kind != "mlp" or not cfg.model.hidden):
        problems.append(
            '[model] private_heads needs a shared trunk: kind = "mlp" with at least one hidden '
            "layer"
        )
    if cfg.model.private_heads and cfg.model.label_mean:
        problems.append(
            "[model] with private_heads each site starts its own head from its own labels; "
            "remove label_mean / label_std"
        )
    if cfg.model.private_heads and cfg.privacy.record_level:
        problems.append(
            "[model] private_heads with record-level DP is not supported yet (DP-SGD would have "
            "to account for the head as well); use site-level DP or shared heads"
        )
    if cfg.model.label_std and len(cfg.model.label_std) != len(cfg.model.label_mean):
        problems.append("[model] `label_std` needs one value per `label_mean` value")
    dp = cfg.privacy
    if dp.record_level and dp.noise_multiplier is None and dp.target_epsilon is None:
        problems.append("[privacy] record_level needs `noise_multiplier` or `target_epsilon`")
    if dp.site_level and dp.site_noise_multiplier is None and dp.target_epsilon is None:
        problems.append("[privacy] site_level needs `site_noise_multiplier` or `target_epsilon`")
    if dp.record_level and dp.site_level and dp.target_epsilon is not None:
        problems.append(
            "[privacy] with both record_level and site_level, give each noise multiplier "
            "explicitly; `target_epsilon` calibrates one mechanism at a time"
        )
    if dp.target_epsilon is not None and not dp.enabled:
        problems.append("[privacy] `target_epsilon` is set but neither record_level nor site_level")
    if cfg.secure.enabled:
        if dp.site_level and dp.noise_placement == "central":
            problems.append(
                "[secure] secure aggregation hides every update from the coordinator, so it "
                "cannot add central noise to clipped updates; use [privacy] noise_placement = "
                '"distributed"'
            )
        if cfg.partition.n_sites < 3:
            problems.append(
                f"[secure] needs at least 3 sites, [partition] n_sites = {cfg.partition.n_sites}: "
                "of two, each site reads the other's update off the sum"
            )
        if cfg.secure.threshold is not None and cfg.secure.threshold > cfg.partition.n_sites:
            problems.append(
                f"[secure] threshold = {cfg.secure.threshold} exceeds [partition] n_sites = "
                f"{cfg.partition.n_sites}; no round could be unmasked"
            )
        if dp.site_level and cfg.secure.mode == "secagg" and cfg.secure.ring_bits != 64:
            problems.append(
                f"[secure] ring_bits = {cfg.secure.ring_bits} quantizes site-level DP updates "
                "(weighted alike, so scaled by 1 / max_examples) to a few hundred levels; use "
                "ring_bits = 64"
            )
    elif dp.site_level and dp.noise_placement == "distributed":
        problems.append(
            '[privacy] noise_placement = "distributed" needs secure aggregation: without it '
            "each site's update reaches the coordinator with 1/√K of the noise charged; set "
            '[secure] mode = "secagg" or "ckks", or noise_placement = "central"'
        )
    if cfg.site_policy.require_secure and not cfg.secure.enabled:
        problems.append(
            "[site_policy] require_secure refuses plaintext updates; set [secure] mode = "
            '"secagg" or "ckks"'
        )
    if (
        ds.kind == "molecules"
        and cfg.features.fingerprint == "none"
        and not cfg.features.descriptors
    ):
        problems.append('[features] with fingerprint = "none", set descriptors = true')
    key_id = cfg.features.permutation_key_id
    if key_id is not None and re.fullmatch("[0-9a-f]{16}", key_id) is None:
        problems.append(
            f"[features] permutation_key_id = {key_id!r}: must be the permutation key's id, "
            "16 lowercase hex digits"
        )
    if key_id is not None and cfg.features.fingerprint != "morgan":
        problems.append(
            '[features] permutation_key_id permutes fingerprint bits; set fingerprint = "morgan"'
        )
    return problems


# ----- deployment: server.toml and site.toml ------------------------------------------------
#
# Both files point (``run_config``) to the run recipe, a RunConfig TOML: model, features,
# training, strategy, rounds and seed. The coordinator and every site must use the *same*
# recipe; at join the coordinator refuses a site whose [features] preprocessing differs from its
# own (fedpharma.server.join). Relative paths in these files are resolved against the folder of
# the file that names them.


@dataclass(frozen=True)
class ServerSection:
    """How the coordinator serves (``[server]`` of server.toml)."""

    address: str = "127.0.0.1:50051"  # host:port to listen on; port 0 picks a free port
    tls: str | None = None  # the coordinator folder made by `fedpharma provision`
    insecure: bool = False  # plaintext, for local tests only; a loud warning is printed
    heartbeat_seconds: float = _bounded(5.0, 0.05, 3600.0)
    liveness_timeout: float = _bounded(30.0, 0.1, None)  # a site silent this long is gone
    max_payload_mb: float = _bounded(2048.0, 0.001, 2048.0)
    max_workers: int = _bounded(32, 2, 10_000)
    # Admission control, per site certificate: calls in flight at once, calls per second it
    # may sustain (bursts of twice that), and refused calls or rejected results before the
    # site is quarantined for the rest of the run.
    max_calls_per_site: int = _bounded(4, 2, 1000)
    max_calls_per_second: float = _bounded(20.0, 0.1, None)
    quarantine_after: int = _bounded(100, 1, None)
    # Input width of the model, for a tabular file dataset whose width depends on the sites'
    # data; molecules and bundled datasets derive it from the recipe.
    n_features: int | None = _bounded(None, 1, None)


@dataclass(frozen=True)
class RoundControlConfig:
    """Round control (``[round_control]``): deadlines, waiting for sites and retries.

    The minimum number of sites per round is the recipe's ``[strategy] min_sites``.
    """

    round_timeout: float = _bounded(600.0, 0.1, None)  # per-round deadline, seconds
    wait_for_sites: float = _bounded(300.0, 0.0, None)  # wait this long for min_sites
    retries: int = _bounded(3, 0, 1000)  # retries of a round too few sites answered


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
    pull_wait: float = _bounded(5.0, 0.05, 600.0)
    backoff_max: float = _bounded(30.0, 0.05, 3600.0)  # longest wait between reconnects
    give_up_after: float | None = _bounded(None, 0.0, None)  # stop after this long unreachable


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
    kind: str = _choice("molecules", "tabular", default="molecules")
    smiles_column: str = "smiles"
    label_columns: tuple[str, ...] = ()
    task: str | None = field(default=None, metadata={"choices": ("regression", "classification")})
    test_fraction: float | None = _bounded(None, 0.05, 0.5)  # default: the recipe's
    partition_index: int | None = _bounded(None, 1, None)  # demo: take this part (1-based)
    n_partitions: int | None = _bounded(None, 1, None)  # default: recipe's [partition] n_sites


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
    site: SiteSection = SiteSection()
    data: SiteDataConfig = SiteDataConfig()


def load_server_config(path: str | Path) -> ServerConfig:
    """Read and validate server.toml; paths in it become absolute (relative to its folder)."""
    p = Path(path)
    cfg, problems = _load_deploy(ServerConfig, p)
    if cfg.server.tls is None and not cfg.server.insecure:
        problems.append("[server] give `tls` (the coordinator folder of `fedpharma provision`)")
    if cfg.server.tls is not None and cfg.server.insecure:
        problems.append("[server] `insecure = true` contradicts `tls`; keep one")
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
    if site.tls is None and not site.insecure:
        problems.append("[site] give `tls` (this site's folder of `fedpharma provision`)")
    if site.tls is not None and site.insecure:
        problems.append("[site] `insecure = true` contradicts `tls`; keep one")
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
        site=dataclasses.replace(site, tls=_resolve_optional(base, site.tls)),
        data=dataclasses.replace(data, path=_resolve_optional(base, data.path)),
    )


_TopLevel = typing.TypeVar("_TopLevel", RunConfig, ServerConfig, SiteConfig)


def _load_deploy(cls: type[_TopLevel], path: Path) -> tuple[_TopLevel, list[str]]:
    return build_top_level(cls, read_toml(path))


def build_top_level(cls: type[_TopLevel], raw: dict[str, Any]) -> tuple[_TopLevel, list[str]]:
    """A top-level config of scalars and section tables, and the problems found in it.

    Invalid values fall back to their defaults, so the caller's cross-checks can still run and
    every problem is reported at once.
    """
    cfg, problems = serde.from_dict(cls, raw)
    return (cls() if cfg is None else cfg), problems


def _resolve(base: Path, value: str) -> str:
    return str((base / Path(value).expanduser()).resolve())


def _resolve_optional(base: Path, value: str | None) -> str | None:
    return None if value is None else _resolve(base, value)
