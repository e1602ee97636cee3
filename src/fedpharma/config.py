"""Typed, frozen run configuration; TOML in, validated, every problem reported at once.

Each TOML table maps to one frozen dataclass below. A field's ``metadata`` may hold ``choices``
(allowed values), ``min`` / ``max`` (inclusive bounds) and ``help`` (shown in error messages).
Unknown keys are reported with a "did you mean" suggestion, the way a typo deserves.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpharma.errors import ConfigError

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


@dataclass(frozen=True)
class TrainingConfig:
    """Local training at each site, per round."""

    local_epochs: int = _bounded(1, 1, 1000)
    batch_size: int = _bounded(64, 1, 1_000_000)
    learning_rate: float = _bounded(1e-3, 0.0, 10.0)
    optimizer: str = _choice("adam", "sgd", default="adam")
    weight_decay: float = _bounded(0.0, 0.0, 1.0)


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
class RunConfig:
    dataset: DatasetConfig = DatasetConfig(name="chembl2321810")
    features: FeaturesConfig = FeaturesConfig()
    partition: PartitionConfig = PartitionConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    strategy: StrategyConfig = StrategyConfig()
    rounds: int = _bounded(20, 1, 100_000)
    seed: int = 0
    baselines: bool = True  # also train local-only and centralized references

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {
    name: hint
    for name, hint in typing.get_type_hints(RunConfig).items()
    if isinstance(hint, type) and dataclasses.is_dataclass(hint)
}


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run config; raise :class:`ConfigError` listing every problem."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError([f"file {p} does not exist"], source=str(p)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=str(p)) from exc
    return config_from_dict(raw, source=str(p))


def config_from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    problems: list[str] = []
    top: dict[str, Any] = {}
    scalars = {f.name: f for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS}
    for key, value in raw.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                problems.append(f"[{key}] must be a table, got {type(value).__name__}")
            else:
                top[key] = _build(SECTIONS[key], value, f"[{key}]", problems)
        elif key in scalars:
            top[key] = _coerce(scalars[key], value, key, problems)
        else:
            problems.append(_unknown(key, [*SECTIONS, *scalars], "top level"))
    if problems:
        raise ConfigError(problems, source)
    cfg = RunConfig(**{k: v for k, v in top.items() if v is not _INVALID})
    problems.extend(cross_check(cfg))
    if problems:
        raise ConfigError(problems, source)
    return cfg


def cross_check(cfg: RunConfig) -> list[str]:
    """Problems that involve more than one field."""
    problems = []
    ds = cfg.dataset
    if (ds.name is None) == (ds.path is None):
        problems.append(
            "[dataset] give exactly one of `name` (a bundled dataset) or `path` (a file)"
        )
    if ds.path is not None and not ds.label_columns:
        problems.append("[dataset] `label_columns` must list the label column(s) of the file")
    if ds.path is not None and ds.task is None:
        problems.append('[dataset] `task` must be "regression" or "classification" for a file')
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
    if (
        ds.kind == "molecules"
        and cfg.features.fingerprint == "none"
        and not cfg.features.descriptors
    ):
        problems.append('[features] with fingerprint = "none", set descriptors = true')
    return problems


_INVALID = object()


def _build(cls: type, values: dict[str, Any], where: str, problems: list[str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            problems.append(_unknown(key, list(fields), where))
            continue
        coerced = _coerce(fields[key], value, f"{where} {key}", problems)
        if coerced is not _INVALID:
            kwargs[key] = coerced
    return cls(**kwargs)


def _coerce(f: dataclasses.Field[Any], value: Any, where: str, problems: list[str]) -> Any:
    hint = typing.get_type_hints(_owner(f))[f.name]
    ok, converted = _convert(hint, value)
    if not ok:
        problems.append(f"{where} = {value!r}: expected {_describe(hint)}")
        return _INVALID
    meta = f.metadata
    if "choices" in meta and converted is not None and converted not in meta["choices"]:
        choices = ", ".join(repr(c) for c in meta["choices"])
        problems.append(f"{where} = {value!r}: must be one of {choices}")
        return _INVALID
    lo, hi = meta.get("min"), meta.get("max")
    is_number = isinstance(converted, int | float) and not isinstance(converted, bool)
    if is_number and ((lo is not None and converted < lo) or (hi is not None and converted > hi)):
        bounds = f"[{'-∞' if lo is None else lo}, {'∞' if hi is None else hi}]"
        problems.append(f"{where} = {value!r}: must lie in {bounds}")
        return _INVALID
    return converted


def _owner(f: dataclasses.Field[Any]) -> type:
    for cls in (*SECTIONS.values(), RunConfig):
        if any(g is f for g in dataclasses.fields(cls)):
            return cls
    raise KeyError(f.name)


def _convert(hint: Any, value: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(hint):
            if arg is type(None):
                if value is None:
                    return True, None
                continue
            ok, v = _convert(arg, value)
            if ok:
                return True, v
        return False, None
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if not isinstance(value, list | tuple):
            return False, None
        items = [_convert(item, v) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if hint is str:
        return isinstance(value, str), value
    return False, None


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, "nothing (omit the key)" if hint is type(None) else str(hint)
    )


def _unknown(key: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
    return f"{where}: unknown key {key!r}{hint}"
