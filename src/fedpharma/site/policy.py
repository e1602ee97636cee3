"""A site's privacy policy: what a task would cost, checked and charged before any data is read.

The data owner's rules (:class:`~fedpharma.core.config.SitePolicyConfig`) and its privacy ledger
live at the site. For every train task the site first works out, from the task's DP settings and
its own row count alone, the privacy events the result would release; it refuses the task (a typed
:class:`~fedpharma.core.errors.PolicyRefused` or
:class:`~fedpharma.core.errors.PrivacyBudgetExceeded`)
if any would exceed a budget, and otherwise charges them — all before training starts, since a
release that was not charged is a leak the ledger cannot see.
"""

from __future__ import annotations

from pathlib import Path

from fedpharma.core.config import SitePolicyConfig
from fedpharma.core.errors import PolicyRefused
from fedpharma.core.protocol import RecordDP, SecAggSettings, SiteDP, TrainSettings
from fedpharma.privacy import (
    Budget,
    EpsilonReport,
    GaussianEvent,
    PrivacyEvent,
    PrivacyLedger,
    Relation,
    make_accountant,
    noise_for_dp_sgd,
    noised_share_bound,
    record_level_bound,
    surviving_noise_multiplier,
)


def charged_noise_multiplier(site: SiteDP) -> float:
    """What a round's sum is sure to carry under site-level DP: with distributed noise, only the
    shares of the fewest sites the round accepts may arrive (McMahan et al. 2018)."""
    if not site.distributed:
        return site.noise_multiplier
    return surviving_noise_multiplier(site.noise_multiplier, site.planned_sites, site.min_sites)


def noise_placement_problems(settings: TrainSettings) -> list[str]:
    """Why the site-level noise of ``settings`` would not be what the site charges, if so.

    Distributed noise needs secure aggregation: in the clear each update would carry only its
    share σC/√K of the noise while the ledger charges σC. Under pairwise masks the ring must be
    64-bit (a weight-1 update in a 32-bit ring keeps a few hundred levels) and its range must
    hold the clipped update plus its share with headroom (:func:`noised_share_bound`), or the
    quantizer would truncate the noise.
    """
    site, secure = settings.site_dp, settings.secure
    if site is None or not site.distributed:
        return []
    if secure is None:
        return [
            "distributed noise needs secure aggregation: in the clear this update would carry "
            f"1/√{site.planned_sites} of the noise the site is charged for; use [secure] mode "
            '= "secagg" or "ckks", or [privacy] noise_placement = "central"'
        ]
    if not isinstance(secure, SecAggSettings):
        return []
    problems = []
    if secure.ring_bits != 64:
        problems.append(
            f"a {secure.ring_bits}-bit ring quantizes a site-level DP update too coarsely; "
            "use [secure] ring_bits = 64"
        )
    bound = noised_share_bound(site.noise_multiplier, site.clip_norm, site.planned_sites)
    if secure.clip < bound:
        problems.append(
            f"the secure quantizer's range ±{secure.clip:g} would truncate this site's noise "
            f"share; it needs at least ±{bound:.4g} (clip norm plus 10 noise stds)"
        )
    return problems


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
        problems = noise_placement_problems(settings)
        if problems:
            raise PolicyRefused("; ".join(problems))
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
