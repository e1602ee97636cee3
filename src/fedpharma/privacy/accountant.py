"""Accountants: turn a composed :mod:`~fedpharma.privacy.events` event into (ε, δ).

One interface, two backends from Google's ``dp-accounting``:

- :class:`RdpAccountant` — Rényi DP (Mironov 2017, "Rényi Differential Privacy"), with the
  subsampled-Gaussian RDP of Mironov, Talwar & Zhang 2019. RDP is a curve over orders α; turning
  it into (ε, δ) needs a *conversion*, and the choice matters (≈15 % of ε), so it is explicit:

  - ``"classic"``: ε = min_α [RDP(α) + log(1/δ)/(α − 1)] (Mironov 2017, Prop. 3), the bound of
    the moments accountant (Abadi et al. 2016, "Deep Learning with Differential Privacy", §3.2)
    and of TF Privacy's published tables.
  - ``"improved"``: ε = min_α [RDP(α) + log((α − 1)/α) − (log δ + log α)/(α − 1)]
    (Canonne, Kamath & Steinke 2020, Prop. 12; Balle et al. 2020, "Hypothesis Testing
    Interpretations and Renyi Differential Privacy", Thm. 21), dp-accounting's default. Always
    at most the classic value.

- :class:`PldAccountant` — privacy loss distributions (Koskela et al. 2020; Doroshenko et al.
  2022, "Connect the Dots"): composes the exact privacy-loss distribution numerically, so there is
  no RDP conversion and ε is the tightest of the three (up to the discretisation, which is
  pessimistic by construction).

Accountants here are stateless values: ``epsilon(event, δ)`` composes ``event`` from scratch.
State (what a site has spent) lives in :class:`~fedpharma.privacy.ledger.PrivacyLedger` as a list
of events, so switching accountant never loses history. Like dp-accounting, every call checks
:meth:`Accountant.supports` before composing anything. ``dp_accounting`` is imported on first use,
so ``import fedpharma.privacy`` stays light.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from fedpharma.core.errors import ConfigError
from fedpharma.privacy.events import RELATION_LABELS, PrivacyEvent, Relation

if TYPE_CHECKING:
    from dp_accounting import PrivacyAccountant

AccountantName = Literal["rdp", "pld"]
Conversion = Literal["classic", "improved", "pld"]

CONVERSION_LABELS: dict[Conversion, str] = {
    "classic": "classic RDP→(ε,δ) conversion (Mironov 2017, Prop. 3)",
    "improved": "improved RDP→(ε,δ) conversion (Canonne et al. 2020; Balle et al. 2020)",
    "pld": "privacy loss distribution, no conversion (Doroshenko et al. 2022)",
}

# Orders of TF Privacy's compute_dp_sgd_privacy, with which its published ε values were computed.
TF_PRIVACY_ORDERS: tuple[float, ...] = (
    *(1 + x / 10 for x in range(1, 100)),
    *map(float, range(12, 64)),
)
# dp-accounting's DEFAULT_RDP_ORDERS: the same plus 11 and a few large orders, which matter for
# large ε (little noise, few steps).
DP_ACCOUNTING_ORDERS: tuple[float, ...] = (
    *(1 + x / 10 for x in range(1, 100)),
    *map(float, range(11, 64)),
    128.0,
    256.0,
    512.0,
    1024.0,
)


@dataclass(frozen=True)
class EpsilonReport:
    """A privacy claim with everything needed to read it: ε at δ, for which relation, and how."""

    epsilon: float
    delta: float
    accountant: AccountantName
    conversion: Conversion
    relation: Relation

    def __str__(self) -> str:
        return (
            f"ε = {self.epsilon:.3f} at δ = {self.delta:.1e}, {RELATION_LABELS[self.relation]} "
            f"({self.accountant.upper()} accountant, {CONVERSION_LABELS[self.conversion]})"
        )


class Accountant(ABC):
    """ε for a given δ, or δ for a given ε, of one (composed) privacy event."""

    name: ClassVar[AccountantName]

    @property
    @abstractmethod
    def conversion(self) -> Conversion:
        """How the accountant's internal representation becomes (ε, δ)."""

    def supports(self, event: PrivacyEvent) -> bool:
        """Whether this accountant can account for ``event`` (checked before composing)."""
        return bool(self._new_dp_accountant().supports(event.to_dp_accounting()))

    def epsilon(self, event: PrivacyEvent, delta: float) -> float:
        """The smallest ε this accountant proves for ``event`` at ``delta``."""
        if not (math.isfinite(delta) and 0 < delta < 1):
            raise ConfigError([f"delta must lie in (0, 1), got {delta!r}"], source="accountant")
        return self._epsilon(self._composed(event), delta)

    def delta(self, event: PrivacyEvent, epsilon: float) -> float:
        """The smallest δ this accountant proves for ``event`` at ``epsilon``."""
        if not (math.isfinite(epsilon) and epsilon >= 0):
            raise ConfigError([f"epsilon must be ≥ 0, got {epsilon!r}"], source="accountant")
        return self._delta(self._composed(event), epsilon)

    def report(self, event: PrivacyEvent, delta: float, relation: Relation) -> EpsilonReport:
        """:meth:`epsilon`, labelled with this accountant, its conversion and ``relation``."""
        return EpsilonReport(
            self.epsilon(event, delta), delta, self.name, self.conversion, relation
        )

    def _composed(self, event: PrivacyEvent) -> Any:
        dp_event = event.to_dp_accounting()
        accountant = self._new_dp_accountant()
        if not accountant.supports(dp_event):
            raise ConfigError(
                [f"the {self.name.upper()} accountant cannot account for {event.to_dict()}"],
                source="accountant",
            )
        accountant.compose(dp_event)
        return accountant

    @abstractmethod
    def _new_dp_accountant(self) -> PrivacyAccountant: ...

    @abstractmethod
    def _epsilon(self, composed: Any, delta: float) -> float: ...

    @abstractmethod
    def _delta(self, composed: Any, epsilon: float) -> float: ...


@dataclass(frozen=True)
class RdpAccountant(Accountant):
    """Rényi-DP accountant over ``orders`` with the named (ε, δ) ``conversion`` (module doc)."""

    name: ClassVar[AccountantName] = "rdp"
    conversion: Literal["classic", "improved"] = "improved"
    orders: tuple[float, ...] = DP_ACCOUNTING_ORDERS

    def __post_init__(self) -> None:
        problems = []
        if self.conversion not in ("classic", "improved"):
            problems.append(f"conversion must be 'classic' or 'improved', got {self.conversion!r}")
        if not self.orders or any(not (a > 1 and math.isfinite(a)) for a in self.orders):
            problems.append("orders must be a non-empty tuple of finite numbers > 1")
        if problems:
            raise ConfigError(problems, source="RDP accountant")

    def _new_dp_accountant(self) -> PrivacyAccountant:
        from dp_accounting.rdp import RdpAccountant as DpAccountingRdp

        _quiet_order_warnings()
        return DpAccountingRdp(list(self.orders))

    def _epsilon(self, composed: Any, delta: float) -> float:
        if self.conversion == "improved":
            return float(composed.get_epsilon(delta))
        return classic_epsilon(self.orders, _rdp_curve(composed), delta)

    def _delta(self, composed: Any, epsilon: float) -> float:
        if self.conversion == "improved":
            return float(composed.get_delta(epsilon))
        return classic_delta(self.orders, _rdp_curve(composed), epsilon)


@dataclass(frozen=True)
class PldAccountant(Accountant):
    """Privacy-loss-distribution accountant; ``value_discretization_interval`` trades speed for
    tightness (dp-accounting's default 1e-4; the result stays an upper bound either way)."""

    name: ClassVar[AccountantName] = "pld"
    value_discretization_interval: float = 1e-4

    def __post_init__(self) -> None:
        if not (0 < self.value_discretization_interval < 1):
            raise ConfigError(
                [
                    "value_discretization_interval must lie in (0, 1), got "
                    f"{self.value_discretization_interval!r}"
                ],
                source="PLD accountant",
            )

    @property
    def conversion(self) -> Conversion:
        return "pld"

    def _new_dp_accountant(self) -> PrivacyAccountant:
        from dp_accounting.pld import PLDAccountant

        return PLDAccountant(value_discretization_interval=self.value_discretization_interval)

    def _epsilon(self, composed: Any, delta: float) -> float:
        return float(composed.get_epsilon(delta))

    def _delta(self, composed: Any, epsilon: float) -> float:
        return float(composed.get_delta(epsilon))


def _quiet_order_warnings() -> None:
    """dp-accounting logs a warning each time a numerically hard RDP order is left out of the
    minimum; that makes the bound (slightly) looser, never unsound, so it is not worth a user's
    attention on every call."""
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _DroppedOrderFilter) for f in absl_logger.filters):
        absl_logger.addFilter(_DroppedOrderFilter())


class _DroppedOrderFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Excluding this order" not in record.getMessage()


def make_accountant(name: str, conversion: str | None = None) -> Accountant:
    """The accountant a policy or run config names: ``"rdp"`` (conversion ``"improved"`` unless
    ``"classic"`` is given) or ``"pld"``; raises :class:`ConfigError` otherwise."""
    if name == "rdp":
        if conversion not in (None, "classic", "improved"):
            raise ConfigError(
                [f"RDP conversion must be 'classic' or 'improved', got {conversion!r}"],
                source="accountant",
            )
        return RdpAccountant("classic" if conversion == "classic" else "improved")
    if name == "pld":
        if conversion not in (None, "pld"):
            raise ConfigError(
                [f"the PLD accountant needs no conversion, got {conversion!r}"],
                source="accountant",
            )
        return PldAccountant()
    raise ConfigError([f"accountant must be 'rdp' or 'pld', got {name!r}"], source="accountant")


def classic_epsilon(orders: Sequence[float], rdp: npt.ArrayLike, delta: float) -> float:
    """ε = min_α [RDP(α) + log(1/δ)/(α − 1)] (Mironov 2017, Prop. 3; Abadi et al. 2016).

    Orders where the curve is undefined (NaN) are left out; if it is undefined at every order
    there is no bound, and a :class:`ConfigError` says so (never ε = 0: fail closed).
    """
    alphas = np.asarray(orders, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        candidates = np.asarray(rdp, dtype=np.float64) + math.log(1 / delta) / (alphas - 1)
    if candidates.size == 0 or np.isnan(candidates).all():
        raise ConfigError(
            [
                "the RDP curve is undefined at every order, so it bounds no ε; use the PLD "
                "accountant or other RDP orders"
            ],
            source="accountant",
        )
    return max(0.0, float(np.nanmin(candidates)))


def classic_delta(orders: Sequence[float], rdp: npt.ArrayLike, epsilon: float) -> float:
    """δ = min_α exp((α − 1)(RDP(α) − ε)), capped at 1 (the same bound solved for δ)."""
    alphas = np.asarray(orders, dtype=np.float64)
    log_deltas = (alphas - 1) * (np.asarray(rdp, dtype=np.float64) - epsilon)
    return min(1.0, math.exp(float(np.min(log_deltas))))


def _rdp_curve(composed: Any) -> npt.NDArray[np.float64]:
    """The composed RDP ε(α) at each order. dp-accounting 0.6 keeps the curve in ``_rdp`` and
    offers no public getter; ``test_classic_conversion_reproduces_tf_privacy`` pins this."""
    return np.asarray(composed._rdp, dtype=np.float64)
