"""A site's privacy policy: what a task would cost, checked and charged before any data is read.

The data owner's rules (:class:`~fedpharma.config.SitePolicyConfig`) and its privacy ledger live
at the site. For every train task the site first works out, from the task's DP settings and its
own row count alone, the privacy events the result would release; it refuses the task (a typed
:class:`~fedpharma.errors.PolicyRefused` / :class:`~fedpharma.errors.PrivacyBudgetExceeded`)
if any would exceed a budget, and otherwise charges them — all before training starts, since a
release that was not charged is a leak the ledger cannot see.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedpharma.config import SitePolicyConfig
from fedpharma.errors import PolicyRefused, ProtocolError
from fedpharma.privacy import (
    Budget,
    EpsilonReport,
    GaussianEvent,
    PrivacyEvent,
    PrivacyLedger,
    Relation,
    make_accountant,
    noise_for_dp_sgd,
    record_level_bound,
    surviving_noise_multiplier,
)
from fedpharma.protocol.messages import Scalar


@dataclass(frozen=True)
class RecordLevelRequest:
    """DP-SGD at this site (Abadi et al. 2016): σ given, or calibrated from a target ε."""

    noise_multiplier: float | None
    max_grad_norm: float
    target_epsilon: float | None
    delta: float
    planned_rounds: int


@dataclass(frozen=True)
class SiteLevelRequest:
    """Clip the site's update to ``clip_norm``; the sum carries noise multiplier σ (McMahan et
    al. 2018). ``distributed``: this site adds its share σC/√n itself."""

    noise_multiplier: float
    clip_norm: float
    distributed: bool
    planned_sites: int
    min_sites: int

    @property
    def charged_noise_multiplier(self) -> float:
        """What the sum is sure to carry: with distributed noise, only the shares of the minimum
        number of sites the round accepts may arrive."""
        if not self.distributed:
            return self.noise_multiplier
        return surviving_noise_multiplier(self.noise_multiplier, self.planned_sites, self.min_sites)


@dataclass(frozen=True)
class PrivacyRequest:
    record: RecordLevelRequest | None
    site: SiteLevelRequest | None

    @classmethod
    def from_task(cls, config: dict[str, Scalar]) -> PrivacyRequest:
        """Parse a train task's DP settings; a malformed setting is a :class:`ProtocolError`."""
        record = site = None
        if _flag(config, "dp_record"):
            record = RecordLevelRequest(
                noise_multiplier=_optional_number(config, "noise_multiplier"),
                max_grad_norm=_number(config, "max_grad_norm"),
                target_epsilon=_optional_number(config, "target_epsilon"),
                delta=_number(config, "delta"),
                planned_rounds=int(_number(config, "planned_rounds")),
            )
            if record.noise_multiplier is None and record.target_epsilon is None:
                raise ProtocolError(
                    "a record-level DP task needs noise_multiplier or target_epsilon"
                )
        if _flag(config, "dp_site"):
            placement = config.get("noise_placement", "central")
            if placement not in ("central", "distributed"):
                raise ProtocolError(
                    f"noise_placement must be central or distributed: {placement!r}"
                )
            site = SiteLevelRequest(
                noise_multiplier=_number(config, "site_noise_multiplier"),
                clip_norm=_number(config, "clip_norm"),
                distributed=placement == "distributed",
                planned_sites=int(_number(config, "planned_sites")),
                min_sites=int(_number(config, "min_sites")),
            )
        return cls(record, site)

    @property
    def any(self) -> bool:
        return self.record is not None or self.site is not None


class SitePolicy:
    """The owner's budgets and ledger, and the admission check for each task."""

    def __init__(self, config: SitePolicyConfig, ledger_path: Path) -> None:
        budgets: dict[Relation, Budget] = {}
        if config.record_epsilon is not None:
            budgets["record"] = Budget(config.record_epsilon, config.record_delta)
        if config.site_epsilon is not None:
            budgets["site"] = Budget(config.site_epsilon, config.site_delta)
        self.config = config
        self.ledger = PrivacyLedger(
            ledger_path, budgets, make_accountant(config.accountant, config.conversion)
        )
        self._calibrated: dict[tuple[str, int], float] = {}

    def record_noise_multiplier(
        self, request: RecordLevelRequest, run_id: str, sampling_rate: float, steps: int
    ) -> float:
        """σ for DP-SGD: as requested, or calibrated once per run so the planned rounds together
        spend ``target_epsilon`` (the site's ε composes across rounds; it is not reset)."""
        if request.noise_multiplier is not None:
            return request.noise_multiplier
        assert request.target_epsilon is not None
        key = (run_id, steps)
        if key not in self._calibrated:
            self._calibrated[key] = noise_for_dp_sgd(
                request.target_epsilon,
                request.delta,
                sampling_rate=sampling_rate,
                steps=steps * request.planned_rounds,
                accountant=self.ledger.accountant,
            ).noise_multiplier
        return self._calibrated[key]

    def admit(
        self,
        request: PrivacyRequest,
        record_event: PrivacyEvent | None,
        run_id: str,
        round: int,
    ) -> dict[Relation, EpsilonReport]:
        """Refuse, or charge every event this task releases; return the cumulative ε after it.

        Every event is checked before any is charged, so a refusal changes nothing.
        """
        if self.config.require_dp and not request.any:
            raise PolicyRefused(
                "this site's policy requires differential privacy and the task asks for none; "
                "enable [privacy] record_level or site_level in the run config"
            )
        charges = self._charges(request, record_event)
        for relation, event in charges.items():
            self.ledger.check(event, relation, run_id)
        return {
            relation: self.ledger.charge(event, relation, run_id, round).cumulative
            for relation, event in charges.items()
        }

    def _charges(
        self, request: PrivacyRequest, record_event: PrivacyEvent | None
    ) -> dict[Relation, PrivacyEvent]:
        charges: dict[Relation, PrivacyEvent] = {}
        site_event = (
            GaussianEvent(request.site.charged_noise_multiplier)
            if request.site is not None
            else None
        )
        if site_event is not None:
            charges["site"] = site_event
        if record_event is not None:
            charges["record"] = record_event
        elif site_event is not None and "record" in self.ledger.budgets:
            # A site-level guarantee also bounds one record's influence; it is charged against
            # a record budget too, at the (weaker) record-level reading of the same noise.
            charges["record"] = record_level_bound(site_event)
        return charges


def _flag(config: dict[str, Scalar], key: str) -> bool:
    value = config.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"task setting {key!r} must be true or false, got {value!r}")
    return value


def _number(config: dict[str, Scalar], key: str) -> float:
    value = config.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ProtocolError(f"task setting {key!r} must be a number > 0, got {value!r}")
    return float(value)


def _optional_number(config: dict[str, Scalar], key: str) -> float | None:
    return None if config.get(key) is None else _number(config, key)
