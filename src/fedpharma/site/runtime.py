"""A site answers the coordinator's tasks using data that never leaves it.

The runtime decodes a task, checks it, trains or evaluates with its :class:`Trainer`, and
returns only the update Δ_k = w_k − w, the example count n_k and aggregate metrics. No record,
label or prediction leaves the site. Its part in differential privacy is
:mod:`fedpharma.site.dp`; in secure aggregation, where not even Δ_k leaves in the clear,
:mod:`fedpharma.site.secure`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import TYPE_CHECKING

import numpy as np

from fedpharma.core.dataset import SiteData, concatenate_rows, dense
from fedpharma.core.errors import (
    DataError,
    FedPharmaError,
    PolicyRefused,
    PrivacyBudgetExceeded,
    ProtocolError,
)
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    ChemicalOverlapResult,
    ChemicalOverlapTask,
    DataCheckReply,
    DataCheckTask,
    DescribeTask,
    DescriptionReply,
    EvaluateResult,
    EvaluateTask,
    FeatureStatisticsResult,
    FeatureStatisticsTask,
    LabelStatisticsResult,
    LabelStatisticsTask,
    PreprocessingApplied,
    PreprocessingTask,
    Refusal,
    Reply,
    SecAggSettings,
    SecureReply,
    SecureTask,
    Task,
    TaskSummaryResult,
    TaskSummaryTask,
    TrainResult,
    TrainTask,
)
from fedpharma.core.protocol.codec import EncodedMessage, decode_message, encode_message_parts
from fedpharma.data.checks import check_data
from fedpharma.data.preprocessing import SiteDescription
from fedpharma.data.tabular import TabularSchema
from fedpharma.evaluation.label_statistics import label_sums
from fedpharma.evaluation.metrics import compute_metrics, per_task_metrics
from fedpharma.evaluation.selection import VALIDATION_PREFIX
from fedpharma.evaluation.task_counts import (
    PARITY_BINS,
    label_counts,
    label_edges,
    label_width,
    task_counts,
    to_vector,
    width,
)
from fedpharma.models.base import FitOutput, Trainer
from fedpharma.models.bundle import LABEL_SCALING_FOLDED
from fedpharma.models.output import fold_target_scaling
from fedpharma.models.private_head import PrivateHeadTrainer, join_head
from fedpharma.privacy import production_rng
from fedpharma.site.checkpoint import SiteModelKeeper
from fedpharma.site.dp import DPParticipation, NoiseSource
from fedpharma.site.overlap import OverlapParticipation
from fedpharma.site.plugin_approval import PluginApproval
from fedpharma.site.policy import SitePolicy
from fedpharma.site.scaffold import ControlVariates, check_scaffold, scaffold_fit
from fedpharma.site.secure import SecureParticipation
from fedpharma.site.statistics import (
    SECURE_STATISTICS,
    release_feature_sums,
    secure_statistics_vector,
)
from fedpharma.site.tabular import TabularPreparation

if TYPE_CHECKING:
    from fedpharma.models.dpsgd import DPSGDTrainer


class SiteRuntime:
    """One site: its data, its trainers, its policy; answers train and evaluate tasks.

    ``policy`` holds the owner's privacy budgets and ledger; a site without one refuses every
    DP task (it could not account for it). ``private_trainer`` runs DP-SGD for record-level tasks.
    ``noise_source`` gives the generator for distributed DP noise from the task seed: a seeded
    one in simulation; by default the OS CSPRNG, as deployment needs. ``secure`` is the site's
    part in secure aggregation (its identity, the consortium's CA, its floor for t and the CKKS
    key); a site without one refuses secure tasks. A charged plaintext task that arrives again
    unchanged (its round was retried) is answered with the same release, charged once; a
    restarted site process does not remember it and charges again (the safe side).
    ``preprocessing`` is how this site prepared its molecules (computed once, from its own
    ``[features]`` and permutation key), sent when the coordinator asks at join; a site without
    molecule data has none and declines the join check. ``schema`` is the declared schema of a
    tabular site's data, against which it checks its own rows when asked
    (:mod:`fedpharma.data.checks`). ``keeper``, if any, keeps the site's model (the global model
    a task carries, with this site's private head) in its state_dir.
    ``variates`` keeps the site's SCAFFOLD control variate (in memory by default; in its
    ``state_dir`` when deployed). ``tabular``: a deployed tabular site's raw rows, which wait
    for the consortium's fitted preprocessing before any training (:mod:`fedpharma.site.tabular`).
    ``approval`` is the model plugin code its owner approved: train, evaluate and secure tasks
    are refused, before any record is read, unless they run that code
    (:mod:`fedpharma.site.plugin_approval`); without one the site runs whatever its trainer is.
    ``overlap`` holds the consortium's overlap key (:mod:`fedpharma.site.overlap`); a site
    without one declines the chemical-space overlap.
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
        secure: SecureParticipation | None = None,
        preprocessing: SiteDescription | None = None,
        schema: TabularSchema | None = None,
        keeper: SiteModelKeeper | None = None,
        variates: ControlVariates | None = None,
        tabular: TabularPreparation | None = None,
        approval: PluginApproval | None = None,
        overlap: OverlapParticipation | None = None,
    ) -> None:
        self.name = name
        self.overlap = overlap
        self.approval = approval
        self.data = data
        self.trainer = trainer
        self.policy = policy
        self.private_trainer = private_trainer
        self.preprocessing = preprocessing
        self.schema = schema
        self.dp = DPParticipation(
            policy, private_trainer, noise_source or (lambda _seed: production_rng())
        )
        self.secure = secure
        # The last charged plaintext release and the digest of the task it answered: a round
        # that failed elsewhere (a hostile site, a timeout) is retried with the very same task,
        # and answering it again with a fresh release would charge the budget twice.
        self._last_release: tuple[bytes, TrainResult] | None = None
        self.keeper = keeper
        self.variates = variates or ControlVariates()
        self.tabular = tabular
        # Runs in which this site answered a train task under DP: it sends no un-noised
        # per-task counts in them (the ledger also remembers, across restarts).
        self._dp_runs: set[str] = set()

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
            runs_model = isinstance(task, TrainTask | EvaluateTask | SecureTask | TaskSummaryTask)
            if self.approval is not None and runs_model:
                installed = self.approval.installed
                self.approval.check(
                    task.settings.plugin if isinstance(task, TrainTask) else installed
                )
            if isinstance(task, DescribeTask):
                return self._describe(task)
            if isinstance(task, SecureTask):
                return self._secure().answer(task)
            if isinstance(task, TrainTask):
                if self.tabular is not None:
                    self.tabular.require_applied()
                return self._train(task)
            if isinstance(task, FeatureStatisticsTask):
                return self._feature_statistics(task)
            if isinstance(task, DataCheckTask):
                return self._check_data(task)
            if isinstance(task, PreprocessingTask):
                return self._apply_preprocessing(task)
            if isinstance(task, LabelStatisticsTask):  # raw labels: a tabular fit scales them
                return self._label_statistics(task)
            if isinstance(task, ChemicalOverlapTask):
                return self._chemical_overlap(task)
            if self.tabular is not None:
                self.tabular.require_applied()
            if isinstance(task, TaskSummaryTask):
                return self._task_summary(task)
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
        settings, local = task.settings, task.settings.local
        policy = self.policy
        if settings.secure is None and policy is not None and policy.config.require_secure:
            raise PolicyRefused(
                "this site's policy requires secure aggregation and the task would send its "
                'update in the clear; set [secure] mode = "secagg" or "ckks" in the run config'
            )
        if settings.record_dp is not None or settings.site_dp is not None:
            self._dp_runs.add(task.run_id)
        charged = settings.secure is None and (
            settings.record_dp is not None or settings.site_dp is not None
        )
        digest = _task_digest(task) if charged else b""
        if self._last_release is not None and self._last_release[0] == digest:
            return self._last_release[1]  # already released and charged: nothing new leaves
        # Everything that can be refused is checked, and charged, before any record is read.
        if settings.secure is not None:
            self._secure().check(settings.secure)
        scaffold = check_scaffold(task, self.trainer) if local.scaffold else None
        private = self.dp.admit(settings, task.run_id, task.round, len(self.data.train))
        received = self.whole_model(task.parameters)  # with the head before this round's fit
        outcome: FitOutput | None = None
        if private is not None:
            outcome = self.dp.fit(private, task.parameters, self.data.train, local)
        if scaffold is not None:
            outcome, update = scaffold_fit(scaffold, self.variates, task, self.data.train)
        else:
            if outcome is None:
                outcome = self.trainer.fit(
                    task.parameters,
                    self.data.train,
                    epochs=local.epochs,
                    seed=local.seed,
                    proximal_mu=local.proximal_mu,
                )
            update = outcome.parameters.minus(task.parameters)
        # Under DP only what the guarantee covers leaves the site: no raw training loss.
        dp = settings.record_dp is not None or settings.site_dp is not None
        metrics = {} if dp else _finite({"train_loss": outcome.train_loss})
        if settings.site_dp is not None:
            bound = settings.secure.clip if isinstance(settings.secure, SecAggSettings) else None
            update = self.dp.clip_and_noise(update, settings.site_dp, local.seed, bound=bound)
        if private is not None:
            metrics |= {f"epsilon_{r}": report.epsilon for r, report in private.spent.items()}
        self._keep(task, received, metrics)
        if settings.secure is not None:
            # Site-level DP weighs every site alike (its sensitivity bound needs that).
            weight = 1 if settings.site_dp is not None else outcome.n_examples
            return self._secure().contribute(task, settings.secure, update, weight)
        result = TrainResult(
            task.run_id, task.round, self.name, update, outcome.n_examples, metrics
        )
        if charged:
            self._last_release = (digest, result)
        return result

    def whole_model(self, params: Parameters) -> Parameters:
        """The model this site predicts with from the global ``params``: with a private head,
        the shared trunk joined with this site's head."""
        if isinstance(self.trainer, PrivateHeadTrainer):
            return join_head(params, self.trainer.head)
        return params

    def _keep(
        self, task: TrainTask | EvaluateTask, model: Parameters, metrics: dict[str, float]
    ) -> None:
        if self.keeper is None:
            return
        epsilon = {
            k.removeprefix("epsilon_"): v for k, v in metrics.items() if k.startswith("epsilon_")
        }
        train = self.data.train
        applied = None if self.tabular is None else self.tabular.applied
        targets = None if applied is None else applied.target_scaling
        if train.task != "regression":
            targets = None
        if targets is not None:  # trained on standardized targets: kept in label units
            model = fold_target_scaling(model, targets)
        folded = LABEL_SCALING_FOLDED if targets is not None else ""
        self.keeper.keep(
            task.run_id, task.round, train.task, train.task_names, model, epsilon, folded
        )

    def _secure(self) -> SecureParticipation:
        if self.secure is None:
            raise PolicyRefused(
                "this site has no identity for secure aggregation; give it its folder of "
                "`fedpharma provision` ([site] tls in site.toml)"
            )
        return self.secure

    def _evaluate(self, task: EvaluateTask) -> EvaluateResult:
        """Metrics of the task's model on the held-out data, and on the validation fold (if
        any) under :data:`VALIDATION_PREFIX`; refused under ``require_dp``: the metrics are an
        uncharged function of the labels (two constant "models" read their mean and spread off
        the errors), those of the validation fold as much as those of the test set."""
        self._refuse_unaccounted("evaluation metrics on its test labels and validation fold")
        test, validation = self.data.test, self.data.validation
        predictions = self.trainer.predict(task.parameters, test)
        metrics = _finite(compute_metrics(test.task, test.dense_labels(), predictions))
        self._keep(task, self.whole_model(task.parameters), {})
        if validation is not None and len(validation):
            scores = self.trainer.predict(task.parameters, validation)
            found = compute_metrics(validation.task, validation.dense_labels(), scores)
            metrics |= _finite({VALIDATION_PREFIX + k: v for k, v in found.items()})
        return EvaluateResult(task.run_id, task.round, self.name, len(test), metrics)

    def _label_statistics(self, task: LabelStatisticsTask) -> LabelStatisticsResult:
        """Per-task count, sum and sum of squares of the training labels (no record leaves)."""
        self._refuse_unaccounted("label statistics")
        sums = label_sums(self._raw().train.labels)
        return LabelStatisticsResult(
            task.run_id, task.round, self.name, sums.count, sums.total, sums.sum_of_squares
        )

    def _task_summary(self, task: TaskSummaryTask) -> TaskSummaryResult:
        """Per task, the counts of :mod:`fedpharma.evaluation.task_counts` of the task's model on
        the test rows, this site's own per-task metrics and (if asked) its training labels'
        counts per bin or class: a size the task fixes, whatever the number of rows. Refused
        where the policy declines it or requires DP, and in a run that asked this site for DP
        (in this process, or charged to its ledger): the counts carry no noise."""
        policy = self.policy
        if policy is not None and not policy.config.allow_task_summary:
            raise PolicyRefused("this site's policy declines per-task summaries")
        self._refuse_unaccounted("per-task counts of its test labels and predictions")
        self._refuse_in_private_run(task.run_id, "per-task counts of its test rows")
        test = self.data.test
        n_tasks, kind = len(test.task_names), test.task
        grid = PARITY_BINS + 1 if kind == "regression" else 0
        asked = (task.n_tasks, task.width, len(task.edges), task.label_width)
        shape = (n_tasks, width(kind), n_tasks * grid, label_width(kind))
        if asked != shape and asked != (*shape[:3], 0):
            raise DataError(
                f"the task summary asks for {task.n_tasks} task(s) of {task.width} numbers with "
                f"{len(task.edges)} edges and {task.label_width} label counts; this site's "
                f"{kind} data has {n_tasks} task(s) of {width(kind)} numbers, "
                f"{n_tasks * grid} edges and {label_width(kind)} label counts"
            )
        labels = test.dense_labels().astype(np.float64)
        predictions = np.asarray(self.trainer.predict(task.parameters, test), dtype=np.float64)
        predictions = predictions.reshape(labels.shape)
        edges = np.asarray(task.edges, dtype=np.float64)
        train = self.data.train.dense_labels().astype(np.float64)
        values: list[float] = []
        metrics: dict[str, float] = {}
        distribution: list[float] = []
        for j, found in enumerate(per_task_metrics(kind, labels, predictions)):
            grid_j = edges[j * grid : (j + 1) * grid] if grid else None
            values += to_vector(task_counts(kind, labels[:, j], predictions[:, j], grid_j))
            metrics |= _finite({f"{j}:{name}": value for name, value in found.items()})
            if task.label_width:
                bins = None if grid_j is None else label_edges(grid_j)
                distribution += label_counts(kind, train[:, j], bins)
        return TaskSummaryResult(
            task.run_id, task.round, self.name, tuple(values), metrics, tuple(distribution)
        )

    def _chemical_overlap(self, task: ChemicalOverlapTask) -> ChemicalOverlapResult | SecureReply:
        """This site's two set sizes, or (under secure aggregation) its hashed sets as its input
        to the secure sum (weight 1: the coordinator learns how many sites occupy each bucket);
        refused without the overlap key, where the policy requires DP and in a run that asked
        this site for DP (the counts carry no noise)."""
        if self.overlap is None:
            raise PolicyRefused(
                "this site holds no chemical-overlap key (site.toml overlap_key, the key the "
                "sites share and the coordinator never holds)"
            )
        self._refuse_unaccounted("counts of its scaffolds and fingerprint bits")
        self._refuse_in_private_run(task.run_id, "counts of its scaffolds and fingerprint bits")
        if task.secure is None:
            scaffolds, bits = self.overlap.sets(self.data, task)
            return ChemicalOverlapResult(
                task.run_id, task.round, self.name, int(scaffolds.sum()), int(bits.sum())
            )
        self._secure().check(task.secure)
        sets = self.overlap.secure_input(self.data, task)
        return self._secure().contribute(task, task.secure, sets, 1)

    def _feature_statistics(
        self, task: FeatureStatisticsTask
    ) -> FeatureStatisticsResult | SecureReply:
        """Per-column count, sum and sum of squares of the raw training features (and median
        histograms), plain or under DP as the task and this site's policy say
        (:mod:`fedpharma.site.statistics`); under secure aggregation only as this site's input
        to the secure sum (weight 1: the coordinator learns the sum and the number of sites)."""
        if task.secure is not None:
            self._secure().check(task.secure)  # before any record is read
            raw = self._raw().train
            vector = secure_statistics_vector(
                dense(raw.features),
                raw.dense_labels(),
                self.schema,
                self.policy,
                task.noise_multiplier,
                self.dp.noise_source(task.round),
                task.run_id,
                task.round,
                with_labels=task.labels,
                classification=raw.task == "classification",
            )
            if isinstance(task.secure, SecAggSettings) and len(raw) > task.secure.clip:
                raise DataError(
                    f"this site holds {len(raw)} training rows, more than the secure sum's range "
                    f"({task.secure.clip:g}) holds; raise [secure] max_examples"
                )
            statistics = Parameters((SECURE_STATISTICS,), (vector,))
            return self._secure().contribute(task, task.secure, statistics, 1)
        policy = self.policy
        if policy is not None and policy.config.require_secure:
            raise PolicyRefused(
                "this site's policy requires secure aggregation and the task would send its "
                'feature sums in the clear; set [secure] mode = "secagg" or "ckks" in the run '
                "config"
            )
        sums = release_feature_sums(
            dense(self._raw().train.features),
            self.schema,
            self.policy,
            task.noise_multiplier,
            self.dp.noise_source(task.round),
            task.run_id,
            task.round,
        )
        return FeatureStatisticsResult(
            task.run_id,
            task.round,
            self.name,
            max(0, round(sums.rows)),
            sums.count,
            sums.total,
            sums.sum_of_squares,
            sums.histogram,
        )

    def _check_data(self, task: DataCheckTask) -> DataCheckReply:
        """Each data rule's pass/fail on this site's train and test rows (no value leaves)."""
        if self.schema is None:
            raise DataError("this site holds no tabular data with a declared schema to check")
        train, test = self._raw().train, self._raw().test
        rows = dataclasses.replace(
            train,
            features=concatenate_rows([train.features, test.features]),
            labels=concatenate_rows([train.labels, test.labels]),
            groups=np.concatenate([train.groups, test.groups]),
        )
        outcomes = check_data(self.schema, rows)
        return DataCheckReply(
            task.run_id,
            task.round,
            self.name,
            tuple(o.key for o in outcomes if o.passed),
            tuple(o.key for o in outcomes if not o.passed),
        )

    def _raw(self) -> SiteData:
        """The rows as read (a deployed tabular site's, before the consortium's fit)."""
        return self.data if self.tabular is None else self.tabular.raw

    def _apply_preprocessing(self, task: PreprocessingTask) -> PreprocessingApplied:
        """Apply the consortium's fit to this site's rows; answer with its digest."""
        if self.tabular is None:
            raise DataError("this site holds no raw tabular rows to apply a fitted preprocessing")
        fitted = self.tabular.apply(task.fit)
        return PreprocessingApplied(task.run_id, task.round, self.name, fitted.digest())

    def _refuse_in_private_run(self, run_id: str, release: str) -> None:
        """Refuse an un-noised release in a run that asked this site for DP (in this process,
        or charged to its ledger)."""
        policy = self.policy
        if run_id in self._dp_runs or (
            policy is not None and any(e.run_id == run_id for e in policy.ledger.entries())
        ):
            raise PolicyRefused(
                f"this run asked this site for differential privacy; {release} would be an "
                "unaccounted release"
            )

    def _refuse_unaccounted(self, release: str) -> None:
        """Refuse a release no DP mechanism covers where the policy requires DP."""
        if self.policy is not None and self.policy.config.require_dp:
            raise PolicyRefused(
                f"this site's policy requires differential privacy; {release} would be an "
                "unaccounted release"
            )


def _task_digest(task: TrainTask) -> bytes:
    """sha256 of the task's wire encoding: equal exactly for the same run, round, model and
    settings."""
    digest = hashlib.sha256()
    for part in encode_message_parts(task):
        digest.update(part)
    return digest.digest()


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics that exist (an AUC is undefined on one class); the wire carries finite numbers."""
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
