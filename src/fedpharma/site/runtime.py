"""A site answers the coordinator's tasks using data that never leaves it.

The runtime decodes a task, checks it, trains or evaluates with its :class:`Trainer`, and
returns only the update Δ_k = w_k − w, the example count n_k and aggregate metrics. No record,
label or prediction leaves the site.

Under secure aggregation not even Δ_k leaves in the clear. With ``secure = "secagg"``
(Bonawitz et al. 2017) the site quantizes n_k and its weighted update
(:meth:`~fedpharma.secure.FixedPoint.encode_weighted`), answers with a key advertisement, and
sends the contribution only under pairwise and self masks in the ``masked_input`` phase. With
``secure = "ckks"`` it answers with n_k·Δ_k encrypted under the consortium's CKKS key
(Cheon et al. 2017), and later decrypts the coordinator's encrypted *sum* of at least t
updates — never a single one — into the mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedpharma.data.dataset import SiteData
from fedpharma.data.preprocessing import SiteDescription
from fedpharma.errors import (
    DataError,
    FedPharmaError,
    PolicyRefused,
    PrivacyBudgetExceeded,
    ProtocolError,
)
from fedpharma.evaluation.label_statistics import statistics_metrics
from fedpharma.evaluation.metrics import compute_metrics
from fedpharma.models.base import FitOutput, Trainer
from fedpharma.params import Parameters
from fedpharma.privacy import (
    EpsilonReport,
    PrivacyEvent,
    Relation,
    clip_to_norm,
    distributed_noise_std,
    dp_sgd_event,
    gaussian_noise,
    production_rng,
)
from fedpharma.protocol import (
    DescribeTask,
    DescriptionReply,
    EvaluateResult,
    EvaluateTask,
    Refusal,
    Reply,
    SecureReply,
    SecureTask,
    Task,
    TrainResult,
    TrainTask,
)
from fedpharma.protocol.codec import EncodedMessage, decode_message, encode_message_parts
from fedpharma.protocol.messages import Scalar, secure_mode
from fedpharma.secure.ckks import EncryptedUpdate, SecretContext
from fedpharma.secure.quantize import FixedPoint, RingVector
from fedpharma.secure.secagg import (
    KeyRoster,
    RoundSetup,
    SecAggSite,
    ShareDelivery,
    SurvivorList,
)
from fedpharma.site.policy import PrivacyRequest, SiteLevelRequest, SitePolicy

if TYPE_CHECKING:
    from fedpharma.models.dpsgd import DPSGDSampling, DPSGDTrainer


NoiseSource = Callable[[int], np.random.Generator]


@dataclass(frozen=True)
class _SecAggRound:
    """A secagg round in progress: this round's secrets and quantized contribution."""

    site: SecAggSite
    contribution: RingVector


@dataclass(frozen=True)
class _CKKSRound:
    """A CKKS round this site contributed to: the fewest updates it will decrypt a sum of."""

    threshold: int


class SiteRuntime:
    """One site: its data, its trainers, its policy; answers train and evaluate tasks.

    ``policy`` holds the owner's privacy budgets and ledger; a site without one refuses every
    DP task (it could not account for it). ``private_trainer`` runs DP-SGD for record-level tasks.
    ``noise_source`` gives the generator for distributed DP noise from the task seed: a seeded
    one in simulation; by default the OS CSPRNG, as deployment needs. ``ckks_key`` is the
    consortium's CKKS secret key (provisioned with the PKI), needed for ``secure = "ckks"``.
    ``preprocessing`` is how this site prepared its molecules (computed once, from its own
    ``[features]`` and permutation key), sent when the coordinator asks at join; a site without
    molecule data has none and declines the join check.
    """

    def __init__(
        self,
        name: str,
        data: SiteData,
        trainer: Trainer,
        *,
        policy: SitePolicy | None = None,
        private_trainer: DPSGDTrainer | None = None,
        noise_source: NoiseSource | None = None,
        ckks_key: SecretContext | None = None,
        preprocessing: SiteDescription | None = None,
    ) -> None:
        self.name = name
        self.data = data
        self.trainer = trainer
        self.policy = policy
        self.private_trainer = private_trainer
        self.noise_source = noise_source or (lambda _seed: production_rng())
        self.ckks_key = ckks_key
        self.preprocessing = preprocessing
        # The secure-aggregation state of the current round, by (run_id, round), kept in memory
        # only and dropped after its last phase; a newer round drops an abandoned one.
        self._secure: dict[tuple[str, int], _SecAggRound | _CKKSRound] = {}

    def handle_encoded(self, request: bytes | memoryview) -> EncodedMessage:
        """Answer an encoded task with an encoded reply; a malformed task gets a Refusal."""
        try:
            task = decode_message(request)
        except ProtocolError as exc:
            return encode_message_parts(Refusal("", 0, self.name, "invalid-task", str(exc)))
        if not isinstance(task, Task):
            refusal = Refusal("", 0, self.name, "invalid-task", "a site only accepts tasks")
            return encode_message_parts(refusal)
        return encode_message_parts(self.handle(task))

    def handle(self, task: Task) -> Reply:
        try:
            if isinstance(task, DescribeTask):
                return self._describe(task)
            if isinstance(task, SecureTask):
                return self._secure_phase(task)
            if isinstance(task, TrainTask):
                return self._train(task)
            return self._evaluate(task)
        except PrivacyBudgetExceeded as exc:
            return Refusal(task.run_id, task.round, self.name, "privacy-budget", str(exc))
        except PolicyRefused as exc:
            return Refusal(task.run_id, task.round, self.name, "policy", str(exc))
        except FedPharmaError as exc:
            return Refusal(task.run_id, task.round, self.name, "error", str(exc))

    def _describe(self, task: DescribeTask) -> DescriptionReply:
        """This site's preprocessing recipe and public reference digests (no data is read)."""
        if self.preprocessing is None:
            raise DataError(
                "this site holds no molecule data, so it has no preprocessing recipe to compare; "
                "give it the consortium's kind of data ([data] of site.toml)"
            )
        return DescriptionReply(task.run_id, task.round, self.name, self.preprocessing.to_json())

    def _train(self, task: TrainTask) -> TrainResult | SecureReply:
        mode = secure_mode(task)
        if mode is None and self.policy is not None and self.policy.config.require_secure:
            raise PolicyRefused(
                "this site's policy requires secure aggregation and the task would send its "
                'update in the clear; set [secure] mode = "secagg" or "ckks" in the run config'
            )
        # Everything that can be refused is checked before any record is read.
        if mode == "secagg":
            codec, setup_args = _secagg_settings(task.config)
        elif mode == "ckks":
            ckks_key, ckks_round = self._ckks_settings(task.config)
        epochs = _int_setting(task.config, "epochs", default=1, minimum=1)
        seed = _int_setting(task.config, "seed", default=0, minimum=0)
        mu = _float_setting(task.config, "proximal_mu", default=0.0)
        request = PrivacyRequest.from_task(task.config)
        spent: dict[Relation, EpsilonReport] = {}
        if request.any or (self.policy is not None and self.policy.config.require_dp):
            if self.policy is None:
                raise PolicyRefused(
                    "this site has no privacy policy, so it cannot account for a DP task; give "
                    "it a policy with a budget for the requested relation"
                )
            private = self._plan_dp_sgd(request, task.run_id, epochs)
            record_event = private[2] if private else None
            # Before any record is read: refuse, or charge what the result will release.
            spent = self.policy.admit(request, record_event, task.run_id, task.round)
        else:
            private = None

        if private is not None:
            trainer, sampling, _ = private
            dp_outcome = trainer.fit(
                task.parameters,
                self.data.train,
                epochs=epochs,
                seed=seed,
                proximal_mu=mu,
                noise_multiplier=sampling.noise_multiplier,
                max_grad_norm=sampling.max_grad_norm,
            )
            if dp_outcome.sampling != sampling:
                raise DataError(
                    "DP-SGD released something other than what was charged; refusing to send it"
                )
            outcome: FitOutput = dp_outcome
        else:
            outcome = self.trainer.fit(
                task.parameters, self.data.train, epochs=epochs, seed=seed, proximal_mu=mu
            )
        update = outcome.parameters.minus(task.parameters)
        # Under DP only what the guarantee covers leaves the site: no raw training loss.
        metrics = {} if request.any else _finite({"train_loss": outcome.train_loss})
        if request.site is not None:
            update, within_clip = self._clip_and_noise(update, request.site, seed)
            metrics["update_within_clip"] = float(within_clip)
        metrics |= {f"epsilon_{relation}": report.epsilon for relation, report in spent.items()}
        if mode is not None:
            # Site-level DP weighs every site alike (its sensitivity bound needs that).
            weight = 1 if request.site is not None else outcome.n_examples
            flat = update.flatten()
            if mode == "ckks":
                self._secure = {(task.run_id, task.round): ckks_round}
                payload = ckks_key.encrypt_update(flat, weight).to_bytes()
                return SecureReply(task.run_id, task.round, self.name, "encrypted_update", payload)
            contribution = codec.encode_weighted(flat, weight)
            threshold, ring_bits = setup_args
            setup = RoundSetup(task.run_id, task.round, threshold, contribution.size, ring_bits)
            site = SecAggSite(setup, self.name)
            self._secure = {(task.run_id, task.round): _SecAggRound(site, contribution)}
            payload = site.advertise_keys().to_bytes()
            return SecureReply(task.run_id, task.round, self.name, "advertise", payload)
        return TrainResult(task.run_id, task.round, self.name, update, outcome.n_examples, metrics)

    def _secure_phase(self, task: SecureTask) -> SecureReply:
        """A later phase of a secure round whose train task this site answered: secagg's
        share_keys, masked_input and unmask (Bonawitz et al. 2017, Fig. 4), or CKKS decrypt."""
        key = (task.run_id, task.round)
        state = self._secure.get(key)
        if state is None:
            raise ProtocolError(
                f"no secure-aggregation round {task.round} of run {task.run_id!r} is open here"
            )
        if isinstance(state, _CKKSRound) and task.phase == "decrypt" and self.ckks_key is not None:
            encrypted_sum = EncryptedUpdate.from_bytes(task.payload)
            decrypted = self.ckks_key.decrypt_weighted_mean(
                encrypted_sum, min_contributors=state.threshold
            )
            payload = decrypted.to_bytes()
            del self._secure[key]
        elif isinstance(state, _SecAggRound) and task.phase == "share_keys":
            payload = state.site.share_keys(KeyRoster.from_bytes(task.payload)).to_bytes()
        elif isinstance(state, _SecAggRound) and task.phase == "masked_input":
            delivery = ShareDelivery.from_bytes(task.payload)
            payload = state.site.masked_input(delivery, state.contribution).to_bytes()
        elif isinstance(state, _SecAggRound) and task.phase == "unmask":
            payload = state.site.unmask(SurvivorList.from_bytes(task.payload)).to_bytes()
            del self._secure[key]
        else:
            raise ProtocolError(
                f"a site does not answer a secure task of phase {task.phase!r} in this round"
            )
        return SecureReply(task.run_id, task.round, self.name, task.phase, payload)

    def _ckks_settings(self, config: dict[str, Scalar]) -> tuple[SecretContext, _CKKSRound]:
        """This site's CKKS key, checked against the one the task names, and the round state."""
        if self.ckks_key is None:
            raise PolicyRefused(
                "this site holds no CKKS key; give it the key file made by `fedpharma provision` "
                '(site.toml [secure] ckks_key) or use [secure] mode = "secagg"'
            )
        named = config.get("secure_key_id")
        if named != self.ckks_key.key_id.hex():
            raise PolicyRefused(
                f"the task asks for CKKS key {str(named)[:8]}…, this site holds "
                f"{self.ckks_key.key_id.hex()[:8]}…; provision every party from the same key"
            )
        threshold = _int_setting(config, "secure_threshold", default=2, minimum=2)
        return self.ckks_key, _CKKSRound(threshold)

    def _plan_dp_sgd(
        self, request: PrivacyRequest, run_id: str, epochs: int
    ) -> tuple[DPSGDTrainer, DPSGDSampling, PrivacyEvent] | None:
        """The DP-SGD trainer, its sampling plan and the event it will release (from the row
        count alone), or None for a task without record-level DP."""
        if request.record is None:
            return None
        if self.private_trainer is None or self.policy is None:
            raise PolicyRefused("this site is not set up for DP-SGD (record-level DP)")
        n_rows, clip = len(self.data.train), request.record.max_grad_norm
        shape = self.private_trainer.plan(
            n_rows, epochs=epochs, noise_multiplier=1.0, max_grad_norm=clip
        )
        sigma = self.policy.record_noise_multiplier(
            request.record, run_id, shape.sampling_rate, shape.steps
        )
        sampling = self.private_trainer.plan(
            n_rows, epochs=epochs, noise_multiplier=sigma, max_grad_norm=clip
        )
        event = dp_sgd_event(sigma, sampling.sampling_rate, sampling.steps)
        return self.private_trainer, sampling, event

    def _clip_and_noise(
        self, update: Parameters, request: SiteLevelRequest, seed: int
    ) -> tuple[Parameters, bool]:
        """Site-level DP at the site: clip ‖Δ‖ ≤ C; with distributed noise, add this site's
        share N(0, σ²C²/n) so that the sum of n shares carries N(0, σ²C²)."""
        clipped = clip_to_norm(update.flatten(), request.clip_norm)
        vector = clipped.update
        if request.distributed:
            std = distributed_noise_std(
                request.noise_multiplier, request.clip_norm, request.planned_sites
            )
            vector = vector + gaussian_noise(vector.shape, std, self.noise_source(seed))
        return update.unflatten(vector), not clipped.clipped

    def _evaluate(self, task: EvaluateTask) -> EvaluateResult:
        if task.config.get("label_statistics") is True:
            return self._label_statistics(task)
        test = self.data.test
        predictions = self.trainer.predict(task.parameters, test)
        metrics = _finite(compute_metrics(test.task, test.labels, predictions))
        return EvaluateResult(task.run_id, task.round, self.name, len(test), metrics)

    def _label_statistics(self, task: EvaluateTask) -> EvaluateResult:
        """Per-task count, sum and sum of squares of the training labels (no record leaves)."""
        if self.policy is not None and self.policy.config.require_dp:
            raise PolicyRefused(
                "this site's policy requires differential privacy; label statistics would be an "
                "unaccounted release"
            )
        train = self.data.train
        metrics = statistics_metrics(train.labels)
        return EvaluateResult(task.run_id, task.round, self.name, len(train), metrics)


def _secagg_settings(config: dict[str, Scalar]) -> tuple[FixedPoint, tuple[int, int]]:
    """The fixed-point codec and (threshold, ring bits) a secagg train task asks for."""
    ring_bits = _int_setting(config, "secure_ring_bits", default=64, minimum=32)
    codec = FixedPoint(
        bits=ring_bits,
        clip=_float_setting(config, "secure_clip", default=1.0),
        max_sites=_int_setting(config, "secure_max_sites", default=100, minimum=1),
        max_examples=_int_setting(config, "secure_max_examples", default=1_000_000, minimum=1),
    )
    threshold = _int_setting(config, "secure_threshold", default=2, minimum=2)
    return codec, (threshold, ring_bits)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics that exist (an AUC is undefined on one class); the wire carries finite numbers."""
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


def _int_setting(config: dict[str, Scalar], key: str, *, default: int, minimum: int) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ProtocolError(f"task setting {key!r} must be an integer ≥ {minimum}, got {value!r}")
    return value


def _float_setting(config: dict[str, Scalar], key: str, *, default: float) -> float:
    value = config.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise ProtocolError(f"task setting {key!r} must be a number ≥ 0, got {value!r}")
    return float(value)
