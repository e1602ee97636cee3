"""A site's privacy policy: what a task would cost, checked and charged before any data is read.

The data owner's rules (:class:`~fedpharma.config.SitePolicyConfig`) and its privacy ledger live
at the site. For every train task the site first works out, from the task's DP settings and its
own row count alone, the privacy events the result would release; it refuses the task (a typed
:class:`~fedpharma.errors.PolicyRefused` / :class:`~fedpharma.errors.PrivacyBudgetExceeded`)
if any would exceed a budget, and otherwise charges them — all before training starts, since a
release that was not charged is a leak the ledger cannot see.
"""

from __future__ import annotations

from pathlib import Path

from fedpharma.config import SitePolicyConfig
from fedpharma.errors import PolicyRefused
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
from fedpharma.protocol import RecordDP, SiteDP, TrainSettings


def charged_noise_multiplier(site: SiteDP) -> float:
    """What a round's sum is sure to carry under site-level DP: with distributed noise, only the
    shares of the fewest sites the round accepts may arrive (McMahan et al. 2018)."""
    if not site.distributed:
        return site.noise_multiplier
    return surviving_noise_multiplier(site.noise_multiplier, site.planned_sites, site.min_sites)


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
        self, request: RecordDP, run_id: str, sampling_rate: float, steps: int
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
        settings: TrainSettings,
        record_event: PrivacyEvent | None,
        run_id: str,
        round: int,
    ) -> dict[Relation, EpsilonReport]:
        """Refuse, or charge every event this task releases; return the cumulative ε after it.

        Every event is checked before any is charged, so a refusal changes nothing.
        """
        if self.config.require_dp and settings.record_dp is None and settings.site_dp is None:
            raise PolicyRefused(
                "this site's policy requires differential privacy and the task asks for none; "
                "enable [privacy] record_level or site_level in the run config"
            )
        charges = self._charges(settings.site_dp, record_event)
        for relation, event in charges.items():
            self.ledger.check(event, relation, run_id)
        return {
            relation: self.ledger.charge(event, relation, run_id, round).cumulative
            for relation, event in charges.items()
        }

    def _charges(
        self, site_dp: SiteDP | None, record_event: PrivacyEvent | None
    ) -> dict[Relation, PrivacyEvent]:
        charges: dict[Relation, PrivacyEvent] = {}
        site_event = (
            GaussianEvent(charged_noise_multiplier(site_dp)) if site_dp is not None else None
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
