"""Typed, frozen run configuration; TOML in, validated, every problem reported at once.

Each TOML table maps to one frozen dataclass below, read by :mod:`fedpharma.core.serde`. A field's
``metadata`` may hold ``choices`` (allowed values) and ``min`` / ``max`` (inclusive bounds).
Unknown keys are reported with a "did you mean" suggestion, the way a typo deserves.

About 430 lines, one job: the recipe's tables, their cross-checks and how a file becomes one
(reading, ``--set`` overrides, relative paths); splitting the tables from their checks would
only scatter one schema over two files.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpharma.core import serde
from fedpharma.core.errors import ConfigError

T = typing.TypeVar("T")

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "scaffold")
ROBUST_RULES = ("mean", "median", "trimmed_mean", "multi_krum")
BUILTIN_PLUGINS = ("mlp", "linear", "dmpnn", "emr-signal")
"""Model plugins named without an import path (``fedpharma.models.plugin.BUILTINS``)."""
_PLUGIN_IMPORT = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def choice(*values: str, default: str) -> Any:
    """A field whose value must be one of ``values``."""
    return field(default=default, metadata={"choices": values})


def bounded(default: Any, lo: float | None = None, hi: float | None = None) -> Any:
    """A number field within ``[lo, hi]`` (``None``: unbounded on that side)."""
    return field(default=default, metadata={"min": lo, "max": hi})


@dataclass(frozen=True)
class DatasetConfig:
    """Where the data comes from: a bundled dataset by name, or a file."""

    name: str | None = None  # bundled name, see fedpharma.data.datasets.BUNDLED
    path: str | None = None  # CSV (.csv, .csv.gz) or SDF file
    kind: str = choice("molecules", "tabular", default="molecules")
    smiles_column: str = "smiles"
    label_columns: tuple[str, ...] = ()
    task: str | None = field(default=None, metadata={"choices": ("regression", "classification")})
    site_column: str | None = None  # tabular: column naming each record's site (natural split)
    # tabular: the declared schema file (fedpharma.data.schema); unset: NAME.schema.toml beside
    # the data file if there is one, else a schema inferred from the data (and printed).
    schema: str | None = None
    test_fraction: float = bounded(0.2, 0.05, 0.5)
    # Rows holding the same standardized molecule: keep all, average their labels, or keep the
    # first (fedpharma.data.import_report.DUPLICATE_POLICIES).
    duplicates: str = choice("keep", "mean", "first", default="keep")
    # Featurized molecule files are cached, keyed by file and preprocessing recipe
    # (fedpharma.data.feature_cache); cache_dir unset: the user's cache folder.
    cache: bool = True
    cache_dir: str | None = None


@dataclass(frozen=True)
class FeaturesConfig:
    """How molecules become model inputs: the preprocessing every site must apply identically."""

    fingerprint: str = choice("morgan", "none", default="morgan")
    radius: int = bounded(2, 1, 6)
    n_bits: int = bounded(2048, 64, 65536)
    counts: bool = False
    descriptors: bool = False
    # Public id (16 hex digits) of the partners' secret key that permutes the fingerprint bits,
    # so the coordinator cannot read substructures from the model's input layer; unset: no
    # permutation. Each site holds the key itself (site.toml `permutation_key`).
    permutation_key_id: str | None = None


@dataclass(frozen=True)
class PartitionConfig:
    """How a simulation splits one dataset into sites."""

    method: str = choice("scaffold", "dirichlet", "quantity", "natural", default="scaffold")
    n_sites: int = bounded(4, 1, 10_000)
    alpha: float = bounded(0.5, 1e-3, None)  # Dirichlet concentration (dirichlet, quantity)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = choice("mlp", "linear", default="mlp")
    hidden: tuple[int, ...] = (512, 128)
    dropout: float = bounded(0.1, 0.0, 0.9)
    # A public prior on the labels, one value per task (e.g. from the literature): the output
    # layer starts at it. It costs no privacy, so it is what a DP run uses instead of the
    # label-statistics exchange. Regression: mean and spread; classification: positive rate.
    label_mean: tuple[float, ...] = ()
    label_std: tuple[float, ...] = ()
    # Shared trunk, private heads (MELLODDY): only the hidden layers are federated; each site's
    # output layer over its own tasks is trained and kept at the site, never sent.
    private_heads: bool = False
    # Start from weights pretrained on public data ("pretrained:PATH", a .npz of named arrays,
    # e.g. from benchmarks/pretrain_public.py), pinned by the file's SHA-256.
    init: str | None = None
    init_sha256: str | None = None
    # Train only the output layer (the trunk stays as initialised, e.g. pretrained): under DP-SGD
    # fewer parameters carry the noise.
    freeze_trunk: bool = False
    # The model plugin (fedpharma.models.plugin): a built-in name (BUILTIN_PLUGINS) or
    # "package.module:Class" installed at every site; unset: the built-in network `kind`.
    # Sites run a plugin's code only if their policy approves its digest (approved_plugins).
    plugin: str | None = None


@dataclass(frozen=True)
class TrainingConfig:
    """Local training at each site, per round."""

    local_epochs: int = bounded(1, 1, 1000)
    batch_size: int = bounded(64, 1, 1_000_000)
    learning_rate: float = bounded(1e-3, 0.0, 10.0)
    optimizer: str = choice("adam", "sgd", default="adam")
    weight_decay: float = bounded(0.0, 0.0, 1.0)
    # Start the output layer at the consortium's pooled label mean / spread (sites release three
    # sums per task once; skipped under differential privacy, where it would be unaccounted).
    calibrate_output: bool = True
    # Where a site trains: "cpu", "cuda" (refused without a GPU) or "auto" (cuda when present).
    # The coordinator never trains, so it ignores both settings.
    device: str = choice("auto", "cpu", "cuda", default="cpu")
    # "bf16": autocast matmuls to bfloat16 (weights, optimizer and updates stay float32).
    precision: str = choice("fp32", "bf16", default="fp32")
    # Classification: "balanced" weighs each class by n / (2 n_class) of the site's own training
    # labels, so a rare outcome counts as much as a common one; "none" (default) keeps predicted
    # probabilities calibrated (the Brier score and calibration plot read them as risks).
    class_weight: str = choice("none", "balanced", default="none")


@dataclass(frozen=True)
class StrategyConfig:
    """Server-side aggregation (Flower-style strategy) and its hyper-parameters."""

    name: str = choice(*STRATEGIES, default="fedavg")
    proximal_mu: float = bounded(0.01, 0.0, None)  # FedProx (Li et al. 2020)
    # η of FedAdam/FedYogi/FedAdagrad (Reddi et al. 2021); unset means 1e-2 (SCAFFOLD's η_g: 1).
    server_learning_rate: float | None = bounded(None, 0.0, None)
    beta1: float = bounded(0.9, 0.0, 0.999999)
    beta2: float = bounded(0.99, 0.0, 0.999999)
    tau: float = bounded(1e-3, 1e-12, None)  # adaptivity ε in FedOpt
    fraction_fit: float = bounded(1.0, 1e-6, 1.0)
    min_sites: int = bounded(1, 1, None)
    evaluate_every: int = bounded(1, 0, None)  # rounds between evaluations; 0 = last round only


@dataclass(frozen=True)
class EvaluationConfig:
    """Model selection on a per-site validation fold (fedpharma.evaluation.selection)."""

    # Fraction of each site's training data held out by scaffold as its validation fold; 0: no
    # fold, and every model is the one after its last round or epoch.
    validation_fraction: float = bounded(0.0, 0.0, 0.5)
    # Checkpoints (rounds, or local_epochs epochs of a reference) without improvement of the
    # validation metric after which training stops; 0: train every round and keep the best.
    patience: int = bounded(0, 0, None)


@dataclass(frozen=True)
class RobustConfig:
    """How a plaintext round's updates become Δ̄, against a minority of poisoning sites.

    ``rule``: FedAvg's weighted ``"mean"``, the coordinate-wise ``"median"`` or
    ``"trimmed_mean"`` (Yin et al. 2018) or ``"multi_krum"`` (Blanchard et al. 2017), each
    tolerating ``byzantine`` hostile sites (the trimmed mean drops that many from each end;
    Multi-Krum averages the ``krum_select`` best-scored updates, unset: n − byzantine).
    ``norm_bound`` scales each update to that L2 norm first (Sun et al. 2019). Every update's
    weight is the example count its site declared with its first update of the run, at most
    ``max_site_examples``; a later claim above it is rejected (docs/robust-aggregation.md).
    """

    rule: str = choice(*ROBUST_RULES, default="mean")
    byzantine: int = bounded(1, 0, 1000)
    norm_bound: float | None = bounded(None, 1e-9, None)
    krum_select: int | None = bounded(None, 1, None)
    max_site_examples: int = bounded(1_000_000, 1, None)


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
    noise_multiplier: float | None = bounded(None, 0.0, None)  # DP-SGD σ
    max_grad_norm: float = bounded(1.0, 1e-6, None)
    site_level: bool = False
    site_noise_multiplier: float | None = bounded(None, 0.0, None)  # σ of the sum, site level
    clip_norm: float = bounded(1.0, 1e-9, None)  # C: bound on each site's update norm
    adaptive_clipping: bool = False  # Andrew et al. 2021: C tracks a quantile of update norms
    target_quantile: float = bounded(0.5, 0.0, 1.0)
    noise_placement: str = choice("central", "distributed", default="central")
    target_epsilon: float | None = bounded(None, 1e-6, None)
    delta: float = bounded(1e-5, 1e-15, 0.1)
    accountant: str = choice("rdp", "pld", default="rdp")
    # σ of the Gaussian mechanism on the tabular feature sums (fedpharma.data.bounded_statistics),
    # charged to each site's record-level budget; unset: plain sums, which a site requiring DP
    # refuses (the preprocessing then uses the schema's declared ranges).
    statistics_noise_multiplier: float | None = bounded(None, 1e-3, None)
    # "dp-sgd": record-level DP-SGD's usual training settings replace [training]'s
    # (DP_SGD_PRESET; applied when the recipe is read, so every party sees the same values).
    preset: str = choice("none", "dp-sgd", default="none")

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

    mode: str = choice("none", "secagg", "ckks", default="none")
    threshold: int | None = bounded(None, 2, None)
    ring_bits: int = field(default=64, metadata={"choices": (32, 64)})
    clip: float = bounded(1.0, 1e-9, None)
    max_examples: int = bounded(1_000_000, 1, None)

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

    record_epsilon: float | None = bounded(None, 1e-6, None)
    record_delta: float = bounded(1e-5, 1e-15, 0.1)
    site_epsilon: float | None = bounded(None, 1e-6, None)
    site_delta: float = bounded(1e-5, 1e-15, 0.1)
    require_dp: bool = False
    # Refuse train tasks whose update would reach the coordinator unmasked (no secure aggregation).
    require_secure: bool = False
    # Let partners evaluate this site's local-only model on their test data, and evaluate theirs
    # on this site's test data (both sites must allow a cell; fedpharma.evaluation.cross_site).
    # Off by default: a local-only model is a function of this site's data alone, a release the
    # federation otherwise never makes. The federated model is evaluated at every site anyway.
    allow_cross_evaluation: bool = False
    # Send the final model's per-task counts on this site's test rows (bins of scores or of
    # (label, prediction), a few sums) for the run's report. Refused anyway under require_dp
    # and in a run that trained under DP at this site: the counts carry no noise.
    allow_task_summary: bool = True
    accountant: str = choice("rdp", "pld", default="rdp")
    conversion: str = choice("improved", "classic", default="improved")
    # Model plugin code this site runs: "sha256:<64 hex>" digests of installed plugins
    # (`fedpharma plugin-digest NAME` prints one). fedpharma's own networks need no approval.
    approved_plugins: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataChecksConfig:
    """What the coordinator does when a site's tabular data fails a rule at join
    (:mod:`fedpharma.data.checks`): ``refuse`` the site, ``warn``, or ``ignore``. The site sends
    only pass/fail per rule and column."""

    recorded: str = choice("refuse", "warn", "ignore", default="warn")
    range: str = choice("refuse", "warn", "ignore", default="warn")
    constant: str = choice("refuse", "warn", "ignore", default="warn")
    labels: str = choice("refuse", "warn", "ignore", default="refuse")


@dataclass(frozen=True)
class SimulationConfig:
    """Where a simulation's sites run (``fedpharma.sim.backends``): one after another in this
    process (``"sequential"``), in a pool of ``workers`` local processes (0: one per core), or
    on Ray actors (``"ray"``, the ``fedpharma[ray]`` extra; ``address`` of a running cluster,
    unset: a local one). The same seed gives the same model on every backend."""

    backend: str = choice("sequential", "processes", "ray", default="sequential")
    workers: int = bounded(0, 0, 100_000)
    address: str | None = None


@dataclass(frozen=True)
class RunConfig:
    dataset: DatasetConfig = DatasetConfig(name="chembl2321810")
    features: FeaturesConfig = FeaturesConfig()
    partition: PartitionConfig = PartitionConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    strategy: StrategyConfig = StrategyConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    robust: RobustConfig = RobustConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    site_policy: SitePolicyConfig = SitePolicyConfig()
    secure: SecureConfig = SecureConfig()
    data_checks: DataChecksConfig = DataChecksConfig()
    simulation: SimulationConfig = SimulationConfig()
    rounds: int = bounded(20, 1, 100_000)
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


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read and validate a TOML run config; raise :class:`ConfigError` listing every problem.

    A relative ``[dataset] path`` is resolved from the config file's folder (as in server.toml
    and site.toml). ``overrides`` are ``table.key=value`` settings (a TOML value, or else a
    bare string) applied over the file, as ``fedpharma simulate --set`` gives them.
    """
    p = Path(path)
    raw = read_toml(p)
    problems = [problem for item in overrides if (problem := _override(raw, item))]
    if problems:
        raise ConfigError(problems, source="--set")
    dataset = raw.get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("path"), str):
        data_path = Path(dataset["path"]).expanduser()
        if not data_path.is_absolute():
            dataset["path"] = str((p.parent / data_path).resolve())
    return config_from_dict(raw, source=str(p))


def _override(raw: dict[str, Any], item: str) -> str | None:
    """Apply one ``table.key=value`` to ``raw``; the problem, if any."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        return f"{item!r}: write table.key=value, e.g. training.learning_rate=0.01"
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # a bare word: fedadam, morgan
    table = raw
    for part in parts[:-1]:
        nested = table.setdefault(part, {})
        if not isinstance(nested, dict):
            return f"{item!r}: {part} is a value, not a table"
        table = nested
    table[parts[-1]] = value
    return None


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
            shown = list(value) if isinstance(value, tuple) else value
            text = "true" if value is True else "false" if value is False else repr(shown)
            lines.append(f"{f.name} = {text}".replace("'", '"'))
    return "\n".join(lines) + "\n"


def config_from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    cfg, problems = build_top_level(RunConfig, raw)
    if problems:
        raise ConfigError(problems, source)
    problems = cross_check(cfg)
    if problems:
        raise ConfigError(problems, source)
    return apply_dp_sgd_preset(cfg) if cfg.privacy.preset == "dp-sgd" else cfg


DP_SGD_PRESET = {"batch_size": 512, "local_epochs": 1, "learning_rate": 1e-2}
"""``[privacy] preset = "dp-sgd"``: large Poisson batches (signal grows with the batch, noise
does not; De et al. 2022, §3), one local epoch per round, and a learning rate for those fewer,
larger steps (tuned on Tox21 / ESOL, ``benchmarks/privacy_utility.py``). The accountant is the
same: σ is still calibrated to the target ε from the resulting sampling rate and steps."""


def apply_dp_sgd_preset(cfg: RunConfig) -> RunConfig:
    """``cfg`` with :data:`DP_SGD_PRESET`'s training settings and ``preset`` recorded."""
    training = dataclasses.replace(cfg.training, **DP_SGD_PRESET)  # type: ignore[arg-type]
    privacy = dataclasses.replace(cfg.privacy, preset="dp-sgd")
    return dataclasses.replace(cfg, training=training, privacy=privacy)


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


def _scaffold_problems(cfg: RunConfig) -> list[str]:
    """Where SCAFFOLD cannot compose (docs/scaffold.md): its site variate c_i⁺ = ∇f_i(x) is a
    gradient of the site's data that no DP mechanism here bounds, and private heads keep part
    of the model out of the federation the variates describe."""
    if cfg.strategy.name != "scaffold":
        return []
    problems = []
    if cfg.privacy.record_level or cfg.privacy.site_level:
        problems.append(
            '[strategy] name = "scaffold" does not compose with [privacy]: each site\'s control '
            "variate is a gradient of its data that neither DP-SGD nor the update clip bounds; "
            'use "fedavg" or "fedprox" with DP'
        )
    if cfg.model.private_heads:
        problems.append(
            '[strategy] name = "scaffold" does not support [model] private_heads (the variates '
            'describe the whole shared model); use "fedprox" for drift with private heads'
        )
    if cfg.model.freeze_trunk:
        problems.append(
            '[strategy] name = "scaffold" does not support [model] freeze_trunk (the variates '
            'describe every weight); use "fedavg" to fine-tune a frozen trunk\'s head'
        )
    if cfg.robust.rule != "mean" or cfg.robust.norm_bound is not None:
        problems.append(
            '[strategy] name = "scaffold" aggregates the control variates by the plain mean, '
            "which a [robust] rule would not bound; use the robust rule with FedAvg"
        )
    return problems


def plugin_problems(plugin: str | None) -> list[str]:
    """Why ``[model] plugin`` names no plugin: neither a built-in nor ``package.module:Class``."""
    if plugin is None or plugin in BUILTIN_PLUGINS or _PLUGIN_IMPORT.fullmatch(plugin):
        return []
    return [
        f"[model] plugin = {plugin!r}: use a built-in ({', '.join(BUILTIN_PLUGINS)}) or "
        '"package.module:Class" of a plugin installed at every site'
        + serde.did_you_mean(plugin, BUILTIN_PLUGINS)
    ]


def _network(model: ModelConfig) -> str:
    """The built-in network a recipe trains: ``plugin = "mlp"`` / ``"linear"``, else ``kind``."""
    return model.plugin if model.plugin in ("mlp", "linear") else model.kind


def cross_check(cfg: RunConfig) -> list[str]:
    """Problems that involve more than one field."""
    problems = []
    ds = cfg.dataset
    problems += data_source_problems("[dataset]", ds.name, ds.path, ds.label_columns, ds.task)
    # A tabular file's site column may come from its schema file, which is read with the data.
    if (
        cfg.partition.method == "natural"
        and ds.site_column is None
        and ds.path is not None
        and ds.kind != "tabular"
    ):
        problems.append('[partition] method "natural" needs [dataset] `site_column`')
    if ds.schema is not None and ds.kind != "tabular":
        problems.append('[dataset] `schema` describes a tabular file; set kind = "tabular"')
    if cfg.training.learning_rate <= 0:
        problems.append(
            f"[training] learning_rate = {cfg.training.learning_rate}: must be > 0 (nothing "
            "would be learned)"
        )
    if cfg.model.kind == "mlp" and not cfg.model.hidden:
        problems.append("[model] an mlp needs at least one hidden layer in `hidden`")
    if any(h < 1 for h in cfg.model.hidden):
        problems.append("[model] every `hidden` layer width must be ≥ 1")
    if cfg.partition.method != "natural" and cfg.strategy.min_sites > cfg.partition.n_sites:
        problems.append(
            f"[strategy] min_sites = {cfg.strategy.min_sites} exceeds "
            f"[partition] n_sites = {cfg.partition.n_sites}; no round could start"
        )
    problems += plugin_problems(cfg.model.plugin)
    if (
        cfg.model.private_heads
        and cfg.model.plugin in (None, "mlp", "linear")
        and (_network(cfg.model) != "mlp" or not cfg.model.hidden)
    ):
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
    if cfg.model.init is not None and cfg.model.init_sha256 is None:
        problems.append(
            "[model] init needs `init_sha256`, the SHA-256 of the weights file, so every party "
            "starts from the same bytes (benchmarks/pretrain_public.py prints it)"
        )
    if cfg.model.freeze_trunk and (cfg.model.kind != "mlp" or cfg.model.private_heads):
        problems.append(
            '[model] freeze_trunk needs kind = "mlp" (a trunk to freeze) and shared heads'
        )
    problems += _scaffold_problems(cfg)
    if cfg.simulation.backend != "sequential" and cfg.secure.enabled:
        problems.append(
            f'[simulation] backend = "{cfg.simulation.backend}" runs sites in several '
            "processes, which would not share the simulation's throwaway consortium keys; "
            'use backend = "sequential" with [secure]'
        )
    if cfg.simulation.backend != "sequential" and cfg.model.private_heads:
        problems.append(
            f'[simulation] backend = "{cfg.simulation.backend}" does not support private heads '
            'yet (the driver keeps each site\'s head); use backend = "sequential"'
        )
    if cfg.model.label_std and len(cfg.model.label_std) != len(cfg.model.label_mean):
        problems.append("[model] `label_std` needs one value per `label_mean` value")
    dp = cfg.privacy
    if dp.record_level and cfg.training.class_weight != "none":
        problems.append(
            '[training] class_weight = "balanced" under record-level DP: the weights are '
            'counts of the site\'s labels that DP-SGD would not account for; use "none"'
        )
    if dp.record_level and dp.noise_multiplier is None and dp.target_epsilon is None:
        problems.append("[privacy] record_level needs `noise_multiplier` or `target_epsilon`")
    if dp.site_level and dp.site_noise_multiplier is None and dp.target_epsilon is None:
        problems.append("[privacy] site_level needs `site_noise_multiplier` or `target_epsilon`")
    if dp.record_level and dp.site_level and dp.target_epsilon is not None:
        problems.append(
            "[privacy] with both record_level and site_level, give each noise multiplier "
            "explicitly; `target_epsilon` calibrates one mechanism at a time"
        )
    if dp.preset == "dp-sgd" and not dp.record_level:
        problems.append('[privacy] preset = "dp-sgd" tunes record-level DP; set record_level')
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
    problems += robust_problems(cfg)
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


def robust_problems(cfg: RunConfig) -> list[str]:
    """A robust rule needs every update in the clear and enough sites to outvote ``byzantine``."""
    robust = cfg.robust
    active = robust.rule != "mean" or robust.norm_bound is not None
    if not active:
        return []
    what = f'[robust] rule = "{robust.rule}"' if robust.rule != "mean" else "[robust] norm_bound"
    if cfg.secure.enabled:
        return [
            f"{what} needs each site's update in the clear, and secure aggregation shows the "
            "coordinator only their sum (a site could also skip its own clipping unseen); "
            'remove it, or set [secure] mode = "none". Under secure aggregation each update is '
            "bounded per coordinate by the quantizer's [secure] clip"
        ]
    if cfg.privacy.site_level:
        return [
            f"{what} with site-level DP: the DP mean already clips every update to "
            "[privacy] clip_norm, and its privacy analysis covers the clipped sum only; remove "
            "the [robust] rule or site_level"
        ]
    needed = 2 * robust.byzantine + (3 if robust.rule == "multi_krum" else 1)
    if robust.rule != "mean" and cfg.strategy.min_sites < needed:
        return [
            f"{what} tolerating byzantine = {robust.byzantine} hostile site(s) needs at least "
            f"{needed} updates per round; set [strategy] min_sites = {needed} or more"
        ]
    if robust.krum_select is not None and robust.rule != "multi_krum":
        return ['[robust] krum_select applies to rule = "multi_krum" only; remove it']
    return []


def build_top_level(cls: type[T], raw: dict[str, Any]) -> tuple[T, list[str]]:
    """A top-level config of scalars and section tables, and the problems found in it.

    Invalid values fall back to their defaults, so the caller's cross-checks can still run and
    every problem is reported at once.
    """
    cfg, problems = serde.from_dict(cls, raw)
    return (cls() if cfg is None else cfg), problems
