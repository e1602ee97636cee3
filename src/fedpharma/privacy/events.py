"""Privacy spend as data: what a mechanism did, in numbers an accountant can compose.

The events mirror Google's ``dp_accounting.dp_event`` (the "DpEvent" design): a task does not
report "I cost ε = 0.3", it reports *what it released* — e.g. 400 steps of a Poisson-subsampled
Gaussian mechanism with noise multiplier 1.1 and sampling rate 0.01 — and an accountant turns the
composition of every such event into (ε, δ). Events are frozen, hashable, validated on
construction and round-trip through JSON (:meth:`to_dict` / :func:`event_from_dict`), so a site's
ledger can persist them and a report can show them.

The *neighbouring relation* says what one "unit of privacy" is:

- ``"record"``: datasets differ in one record (one molecule, one patient). DP-SGD inside a site
  gives this guarantee (Abadi et al. 2016, "Deep Learning with Differential Privacy").
- ``"site"``: datasets differ in one whole site's data (user-level DP in McMahan et al. 2018,
  "Learning Differentially Private Recurrent Language Models"; client-level DP in Geyer et al.
  2017, "Differentially Private Federated Learning: A Client Level Perspective"): clip each site's
  update and add Gaussian noise to their sum.

Both are accounted under dp-accounting's add-or-remove-one neighbouring relation (of a record, or
of a site).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, get_args

from fedpharma.core.errors import ConfigError, ProtocolError

if TYPE_CHECKING:
    from dp_accounting import DpEvent

Relation = Literal["record", "site"]
RELATIONS: tuple[Relation, ...] = get_args(Relation)
RELATION_LABELS: dict[Relation, str] = {"record": "record-level", "site": "site-level"}


@dataclass(frozen=True)
class GaussianEvent:
    """One release of a sum with L2 sensitivity C plus N(0, (σC)²) noise; σ is the multiplier."""

    noise_multiplier: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ConfigError(
                [f"noise_multiplier must be a finite number > 0, got {self.noise_multiplier!r}"],
                source="privacy event",
            )

    def to_dp_accounting(self) -> DpEvent:
        import dp_accounting

        return dp_accounting.GaussianDpEvent(self.noise_multiplier)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "gaussian", "noise_multiplier": self.noise_multiplier}


@dataclass(frozen=True)
class PoissonSampledEvent:
    """``event`` run on a Poisson sample: each unit is included independently with probability q.

    Privacy amplification by subsampling (Abadi et al. 2016, §3.1; Mironov et al. 2019) holds only
    if the sample really is Poisson and kept secret, which is what Opacus' ``poisson_sampling``
    does inside a site.
    """

    sampling_probability: float
    event: PrivacyEvent

    def __post_init__(self) -> None:
        q = self.sampling_probability
        if not (math.isfinite(q) and 0 < q <= 1):
            raise ConfigError(
                [f"sampling_probability must lie in (0, 1], got {q!r}"], source="privacy event"
            )
        _require_event(self.event, "PoissonSampledEvent.event")

    def to_dp_accounting(self) -> DpEvent:
        import dp_accounting

        return dp_accounting.PoissonSampledDpEvent(
            self.sampling_probability, self.event.to_dp_accounting()
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "poisson_sampled",
            "sampling_probability": self.sampling_probability,
            "event": self.event.to_dict(),
        }


@dataclass(frozen=True)
class SelfComposedEvent:
    """``event`` repeated ``count`` times (e.g. the steps of DP-SGD, the rounds of a run)."""

    event: PrivacyEvent
    count: int

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ConfigError(
                [f"count must be an integer ≥ 1, got {self.count!r}"], source="privacy event"
            )
        _require_event(self.event, "SelfComposedEvent.event")

    def to_dp_accounting(self) -> DpEvent:
        import dp_accounting

        return dp_accounting.SelfComposedDpEvent(self.event.to_dp_accounting(), self.count)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "self_composed", "count": self.count, "event": self.event.to_dict()}


@dataclass(frozen=True)
class ComposedEvent:
    """Every event in ``events`` applied to the same data (adaptive composition, any order)."""

    events: tuple[PrivacyEvent, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.events, tuple):
            raise ConfigError(
                [f"events must be a tuple, got {type(self.events).__name__}"],
                source="privacy event",
            )
        for i, event in enumerate(self.events):
            _require_event(event, f"ComposedEvent.events[{i}]")

    def to_dp_accounting(self) -> DpEvent:
        import dp_accounting

        return dp_accounting.ComposedDpEvent([e.to_dp_accounting() for e in self.events])

    def to_dict(self) -> dict[str, Any]:
        return {"type": "composed", "events": [e.to_dict() for e in self.events]}


PrivacyEvent: TypeAlias = GaussianEvent | PoissonSampledEvent | SelfComposedEvent | ComposedEvent
EVENT_TYPES = (GaussianEvent, PoissonSampledEvent, SelfComposedEvent, ComposedEvent)


def _require_event(value: object, where: str) -> None:
    if not isinstance(value, EVENT_TYPES):
        raise ConfigError(
            [f"{where} must be a privacy event, got {type(value).__name__}"],
            source="privacy event",
        )


def dp_sgd_event(noise_multiplier: float, sampling_rate: float, steps: int) -> PrivacyEvent:
    """``steps`` DP-SGD steps: Poisson sampling at ``sampling_rate``, Gaussian noise on the clipped
    per-record gradient sum (Abadi et al. 2016, Algorithm 1, with Poisson instead of fixed-size
    lots, as analysed by Mironov et al. 2019, "Rényi Differential Privacy of the Sampled Gaussian
    Mechanism")."""
    return SelfComposedEvent(
        PoissonSampledEvent(sampling_rate, GaussianEvent(noise_multiplier)), steps
    )


def compose(events: Iterable[PrivacyEvent]) -> ComposedEvent:
    """All ``events`` composed, with nested compositions flattened and equal events merged.

    Composition is commutative, so k equal events become one :class:`SelfComposedEvent` with
    count k: same ε from any accountant, but the PLD accountant self-composes by repeated
    squaring instead of k convolutions — a ledger of 500 identical rounds stays fast.
    """
    counts: Counter[PrivacyEvent] = Counter()
    for event, count in _flatten(events, 1):
        counts[event] += count
    return ComposedEvent(
        tuple(event if n == 1 else SelfComposedEvent(event, n) for event, n in counts.items())
    )


def _flatten(events: Iterable[PrivacyEvent], times: int) -> Iterable[tuple[PrivacyEvent, int]]:
    for event in events:
        if isinstance(event, ComposedEvent):
            yield from _flatten(event.events, times)
        elif isinstance(event, SelfComposedEvent):
            yield event.event, event.count * times
        else:
            yield event, times


def record_level_bound(site_event: PrivacyEvent) -> PrivacyEvent:
    """The record-level guarantee implied by a site-level event: every noise multiplier halved.

    Changing one record of a site can move its clipped update anywhere in the ball of radius C,
    i.e. by up to 2C, while removing the whole site moves the sum by at most C. The same noise
    σC therefore gives record-level noise multiplier σ/2 (group privacy of size 2). A site with a
    record-level budget that also joins site-level DP rounds charges this event to that budget.
    """
    if isinstance(site_event, GaussianEvent):
        return GaussianEvent(site_event.noise_multiplier / 2)
    if isinstance(site_event, PoissonSampledEvent):
        return PoissonSampledEvent(
            site_event.sampling_probability, record_level_bound(site_event.event)
        )
    if isinstance(site_event, SelfComposedEvent):
        return SelfComposedEvent(record_level_bound(site_event.event), site_event.count)
    return ComposedEvent(tuple(record_level_bound(e) for e in site_event.events))


def event_from_dict(data: Mapping[str, Any]) -> PrivacyEvent:
    """Inverse of ``to_dict``; raises :class:`ProtocolError` on anything that is not an event.

    The input may come from disk or the network, so every field is checked and the error names
    the first problem rather than letting a ``KeyError`` or ``TypeError`` escape.
    """
    try:
        return _decode(data)
    except ConfigError as exc:
        raise ProtocolError(f"invalid privacy event: {'; '.join(exc.problems)}") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"malformed privacy event {dict(data)!r:.200}: {exc!r}") from exc


def _decode(data: Mapping[str, Any]) -> PrivacyEvent:
    if not isinstance(data, Mapping):
        raise TypeError(f"expected a mapping, got {type(data).__name__}")
    kind = data["type"]
    if kind == "gaussian":
        return GaussianEvent(_number(data["noise_multiplier"]))
    if kind == "poisson_sampled":
        return PoissonSampledEvent(_number(data["sampling_probability"]), _decode(data["event"]))
    if kind == "self_composed":
        return SelfComposedEvent(_decode(data["event"]), data["count"])
    if kind == "composed":
        if not isinstance(data["events"], list):
            raise TypeError("'events' must be a list")
        return ComposedEvent(tuple(_decode(e) for e in data["events"]))
    raise ValueError(f"unknown event type {kind!r}")


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)
