"""A site's part in differential privacy, mirroring :mod:`fedpharma.server.dp`.

Record-level DP (:class:`~fedpharma.core.protocol.settings.RecordDP`): the site trains with DP-SGD
(Abadi et al. 2016), its sampling plan worked out from its row count alone. Site-level DP
(:class:`~fedpharma.core.protocol.settings.SiteDP`; McMahan et al. 2018): the site clips its update
to ‖Δ_k‖ ≤ C and, with distributed noise, adds its own share N(0, σ²C²/K) of the sum's noise.
Either way the site's policy refuses or charges what the result will release before any record
is read (:mod:`fedpharma.site.policy`), and only what the guarantee covers leaves the site.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedpharma.core.dataset import Dataset
from fedpharma.core.errors import DataError, PolicyRefused
from fedpharma.core.params import Parameters
from fedpharma.core.protocol.settings import LocalTraining, RecordDP, SiteDP, TrainSettings
from fedpharma.models.base import FitOutput
from fedpharma.privacy import (
    EpsilonReport,
    Relation,
    clip_to_norm,
    distributed_noise_std,
    dp_sgd_event,
    gaussian_noise,
)
from fedpharma.site.policy import SitePolicy

if TYPE_CHECKING:
    from fedpharma.models.dpsgd import DPSGDSampling, DPSGDTrainer

NoiseSource = Callable[[int], np.random.Generator]


@dataclass(frozen=True)
class PrivateRound:
    """A DP task, admitted and charged: its DP-SGD run (record-level) and the site's cumulative
    ε after it, per relation."""

    dp_sgd: tuple[DPSGDTrainer, DPSGDSampling] | None
    spent: dict[Relation, EpsilonReport]


class DPParticipation:
    """``policy`` holds the owner's budgets and ledger (a site without one refuses every DP
    task: it could not account for it); ``private_trainer`` runs DP-SGD; ``noise_source`` gives
    the generator of distributed noise from the task's seed (seeded in simulation, the OS CSPRNG
    in deployment)."""

    def __init__(
        self,
        policy: SitePolicy | None,
        private_trainer: DPSGDTrainer | None,
        noise_source: NoiseSource,
    ) -> None:
        self.policy = policy
        self.private_trainer = private_trainer
        self.noise_source = noise_source

    def admit(
        self, settings: TrainSettings, run_id: str, rnd: int, n_rows: int
    ) -> PrivateRound | None:
        """Refuse, or charge what the task's result will release (from ``n_rows`` alone); None
        for a task without DP at a site that does not require DP."""
        wants_dp = settings.record_dp is not None or settings.site_dp is not None
        if not wants_dp and (self.policy is None or not self.policy.config.require_dp):
            return None
        if self.policy is None:
            raise PolicyRefused(
                "this site has no privacy policy, so it cannot account for a DP task; give "
                "it a policy with a budget for the requested relation"
            )
        dp_sgd = None
        record_event = None
        if settings.record_dp is not None:
            trainer, sampling = self._plan_dp_sgd(
                settings.record_dp, run_id, n_rows, settings.local.epochs
            )
            dp_sgd = (trainer, sampling)
            record_event = dp_sgd_event(
                sampling.noise_multiplier, sampling.sampling_rate, sampling.steps
            )
        spent = self.policy.admit(settings, record_event, run_id, rnd)
        return PrivateRound(dp_sgd, spent)

    def fit(
        self,
        admitted: PrivateRound,
        parameters: Parameters,
        data: Dataset,
        local: LocalTraining,
    ) -> FitOutput | None:
        """Train with DP-SGD as charged; None when the task asks for no record-level DP."""
        if admitted.dp_sgd is None:
            return None
        trainer, sampling = admitted.dp_sgd
        outcome = trainer.fit(
            parameters,
            data,
            epochs=local.epochs,
            seed=local.seed,
            proximal_mu=local.proximal_mu,
            noise_multiplier=sampling.noise_multiplier,
            max_grad_norm=sampling.max_grad_norm,
        )
        if outcome.sampling != sampling:
            raise DataError(
                "DP-SGD released something other than what was charged; refusing to send it"
            )
        return outcome

    def clip_and_noise(
        self, update: Parameters, settings: SiteDP, seed: int, *, bound: float | None = None
    ) -> Parameters:
        """Clip ‖Δ‖ ≤ C; with distributed noise, add this site's share N(0, σ²C²/K) so that the
        sum of K shares carries N(0, σ²C²). With ``bound`` (the secure quantizer's range), a
        noised coordinate outside ±bound is refused, never truncated: the sum would no longer
        carry the Gaussian noise charged (:func:`~fedpharma.privacy.noised_share_bound`)."""
        vector = clip_to_norm(update.flatten(), settings.clip_norm).update
        if settings.distributed:
            std = distributed_noise_std(
                settings.noise_multiplier, settings.clip_norm, settings.planned_sites
            )
            vector = vector + gaussian_noise(vector.shape, std, self.noise_source(seed))
            if bound is not None and float(np.max(np.abs(vector), initial=0.0)) > bound:
                raise PolicyRefused(
                    "this site's noised update leaves the secure quantizer's range; it refuses "
                    "to send it rather than truncate its noise (raise [secure] clip)"
                )
        return update.unflatten(vector)

    def _plan_dp_sgd(
        self, record: RecordDP, run_id: str, n_rows: int, epochs: int
    ) -> tuple[DPSGDTrainer, DPSGDSampling]:
        """The DP-SGD trainer and its sampling plan, σ as given or calibrated by the policy."""
        if self.private_trainer is None or self.policy is None:
            raise PolicyRefused("this site is not set up for DP-SGD (record-level DP)")
        clip = record.max_grad_norm
        shape = self.private_trainer.plan(
            n_rows, epochs=epochs, noise_multiplier=1.0, max_grad_norm=clip
        )
        sigma = self.policy.record_noise_multiplier(
            record, run_id, shape.sampling_rate, shape.steps
        )
        sampling = self.private_trainer.plan(
            n_rows, epochs=epochs, noise_multiplier=sigma, max_grad_norm=clip
        )
        return self.private_trainer, sampling
