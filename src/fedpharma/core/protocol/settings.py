"""Typed train-task settings: what the coordinator asks a site to do, named once for both ends.

A :class:`~fedpharma.core.protocol.TrainTask` carries one :class:`TrainSettings`: the round's local
training (:class:`LocalTraining`) and, where the run asks for them, record-level DP
(:class:`RecordDP`: DP-SGD, Abadi et al. 2016), site-level DP (:class:`SiteDP`: DP-FedAvg,
McMahan et al. 2018) and secure aggregation (:class:`SecAggSettings`: Bonawitz et al. 2017;
:class:`CKKSSettings`: Cheon et al. 2017). The codec writes them with :func:`settings_to_json`
and reads them with :func:`settings_from_json`, which reports every problem at once; no other
code parses them.

Compatibility, stated the way ``dp_accounting/dp_event.py`` states its own:

- The settings travel inside messages of ``PROTOCOL_VERSION``; within one version a field is
  never removed or renamed, and never changes its meaning, unit or bounds.
- A field may be added only with a default that asks for exactly what was done before it
  existed. The writer leaves out every field at its default (a union's ``kind`` excepted), so an
  older reader sees a new field only when a run uses it.
- A reader refuses a field it does not know: a site must never skip a request it cannot honour,
  a privacy or security setting least of all.
- Any other change (a new required field, a changed meaning) is a new ``PROTOCOL_VERSION``,
  which both ends check before they read anything else.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from fedpharma.core import serde
from fedpharma.core.errors import ProtocolError

_POSITIVE: dict[str, Any] = {"above": 0.0}


@dataclass(frozen=True)
class LocalTraining:
    """The local training of one round: epochs, the site's seed for it, FedProx's μ
    (Li et al. 2020, §3; 0 is plain FedAvg) and SCAFFOLD (Karimireddy et al. 2020): with
    ``scaffold`` the task's parameters carry the server's control variate
    (:mod:`fedpharma.core.protocol.control`) and the site steps with the corrected gradient."""

    epochs: int = field(default=1, metadata={"min": 1})
    seed: int = field(default=0, metadata={"min": 0})
    proximal_mu: float = field(default=0.0, metadata={"min": 0})
    scaffold: bool = False


@dataclass(frozen=True)
class RecordDP:
    """DP-SGD at the site (Abadi et al. 2016): σ given, or calibrated by the site so that the
    planned rounds together spend ``target_epsilon``; every step's gradients clipped to
    ``max_grad_norm``."""

    max_grad_norm: float = field(metadata=_POSITIVE)
    delta: float = field(metadata=_POSITIVE)
    planned_rounds: int = field(metadata={"min": 1})
    noise_multiplier: float | None = field(default=None, metadata=_POSITIVE)
    target_epsilon: float | None = field(default=None, metadata=_POSITIVE)


@dataclass(frozen=True)
class SiteDP:
    """Site-level DP (McMahan et al. 2018): the site clips its update to ``clip_norm``; the sum
    of a round carries noise multiplier σ, added centrally or, with ``placement =
    "distributed"``, in shares by the sites. ``planned_sites`` (K) is the fixed denominator and
    the number of shares; ``min_sites`` the fewest updates a round accepts."""

    noise_multiplier: float = field(metadata=_POSITIVE)
    clip_norm: float = field(metadata=_POSITIVE)
    planned_sites: int = field(metadata={"min": 1})
    min_sites: int = field(metadata={"min": 1})
    placement: Literal["central", "distributed"] = "central"

    @property
    def distributed(self) -> bool:
        return self.placement == "distributed"


@dataclass(frozen=True)
class SecAggSettings:
    """Pairwise-mask secure aggregation (Bonawitz et al. 2017): the threshold t and the
    fixed-point encoding every site of the round must share (``fedpharma.secure.FixedPoint``)."""

    threshold: int = field(metadata={"min": 2})
    ring_bits: int = field(metadata={"choices": (32, 64)})
    clip: float = field(metadata=_POSITIVE)
    max_sites: int = field(metadata={"min": 1})
    max_examples: int = field(metadata={"min": 1})
    kind: Literal["secagg"] = "secagg"


@dataclass(frozen=True)
class CKKSSettings:
    """CKKS homomorphic aggregation (Cheon et al. 2017): the consortium key the updates are
    encrypted under (its public id) and the fewest updates a site will decrypt the sum of."""

    threshold: int = field(metadata={"min": 2})
    key_id: str
    kind: Literal["ckks"] = "ckks"


SecureSettings = SecAggSettings | CKKSSettings


@dataclass(frozen=True)
class PluginIdentity:
    """The model plugin code a task runs (:mod:`fedpharma.models.plugin_identity`): the recipe's
    ``[model] plugin`` name, the installed distribution that holds its code, that
    distribution's version, and ``digest``, ``"sha256:"`` + 64 hex digits over its installed
    files. A site runs the task only if its own installed plugin has this identity and its
    policy approves ``digest``."""

    name: str
    distribution: str
    version: str
    digest: str


@dataclass(frozen=True)
class TrainSettings:
    """Everything a train task asks of a site besides the model."""

    local: LocalTraining = LocalTraining()
    record_dp: RecordDP | None = None
    site_dp: SiteDP | None = None
    secure: SecureSettings | None = None
    plugin: PluginIdentity | None = None  # None: fedpharma's own network (nothing to approve)


def settings_to_json(settings: TrainSettings) -> dict[str, Any]:
    """``settings`` as JSON data, every field at its default left out (see the module)."""
    return _without_defaults(settings)


def settings_from_json(raw: object) -> TrainSettings:
    """The settings in ``raw``; a :class:`ProtocolError` naming every problem otherwise."""
    settings, problems = serde.from_dict(TrainSettings, raw, "[settings]")
    if settings is not None:
        problems += _problems(settings, "[settings]")
    if problems or settings is None:
        raise ProtocolError("TrainTask.settings: " + "; ".join(problems))
    return settings


def secure_settings_to_json(settings: SecureSettings | None) -> dict[str, Any] | None:
    """A task's secure-aggregation settings as JSON data (``None`` when there are none)."""
    return None if settings is None else _without_defaults(settings)


def secure_settings_from_json(raw: object) -> SecureSettings | None:
    """The secure-aggregation settings in ``raw`` (``None`` for null), checked as a train
    task's are; a :class:`ProtocolError` naming every problem otherwise."""
    if raw is None:
        return None
    return settings_from_json({"secure": raw}).secure


def _without_defaults(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name != "kind" and f.default is not dataclasses.MISSING and value == f.default:
            continue
        out[f.name] = _without_defaults(value) if dataclasses.is_dataclass(value) else value
    return out


def _problems(obj: Any, where: str) -> list[str]:
    """What serde's type and ``min`` checks leave: finite numbers, bounds strictly above, and
    a noise multiplier or a target ε for DP-SGD."""
    problems = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            problems += _problems(value, f"[{where.strip('[]')}.{f.name}]")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where} {f.name} = {value!r}: must be a finite number")
        elif "above" in f.metadata and value is not None and not value > f.metadata["above"]:
            problems.append(f"{where} {f.name} = {value!r}: must be > {f.metadata['above']:g}")
    if isinstance(obj, PluginIdentity) and not re.fullmatch(r"sha256:[0-9a-f]{64}", obj.digest):
        problems.append(f"{where} digest: must be sha256: and 64 lowercase hex digits")
    if isinstance(obj, RecordDP) and obj.noise_multiplier is None and obj.target_epsilon is None:
        problems.append(f"{where}: record-level DP needs noise_multiplier or target_epsilon")
    return problems
