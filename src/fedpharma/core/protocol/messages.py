"""The messages a coordinator and a site exchange, as frozen dataclasses.

A round is a coordinator's :class:`TrainTask` (global parameters + the site's typed
:class:`~fedpharma.core.protocol.settings.TrainSettings`) answered by a site's :class:`TrainResult`
(its update Δ_k = w_k − w, its example count n_k and training metrics), or by a :class:`Refusal`
when the site's policy forbids the task. Evaluation follows the same pattern with
:class:`EvaluateTask` / :class:`EvaluateResult`. A :class:`Failure` is what a *channel* reports
when it could not get any answer from a site (crash, timeout).

Under secure aggregation a site answers a :class:`TrainTask` whose settings have ``secure`` set
with a :class:`SecureReply` instead of its update — phase ``"advertise"`` (a key advertisement)
for pairwise masking (``"secagg"``, Bonawitz et al. 2017), phase ``"encrypted_update"`` for CKKS
(``"ckks"``) — and the coordinator drives the remaining phases with :class:`SecureTask` messages
whose opaque ``payload`` is a :mod:`fedpharma.secure` message's bytes.

Before a site takes part in any round, the coordinator sends it a :class:`DescribeTask`; the
site's :class:`DescriptionReply` says how it prepares its data, and a site whose preprocessing
differs from the run's recipe is refused at join. Before the first round the coordinator may
send a :class:`LabelStatisticsTask`, answered by the site's per-task label sums
(:class:`LabelStatisticsResult`), to start the output layer at the labels. After the last round
it may send a :class:`TaskSummaryTask`, answered by the final model's per-task counts on the
site's test rows (:class:`TaskSummaryResult`), from which the run's report pools per-task results,
and a :class:`ChemicalOverlapTask`: its set sizes (:class:`ChemicalOverlapResult`), then, under
secure aggregation, its hashed scaffold and fingerprint-bit sets as its input to a secure sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol.settings import SecureSettings, TrainSettings

PROTOCOL_VERSION = 2
"""Version 2: train tasks carry typed settings; label statistics are their own task."""


@dataclass(frozen=True)
class TrainTask:
    """Train on local data starting from ``parameters``, as ``settings`` say (epochs, seed, μ,
    DP, secure aggregation)."""

    run_id: str
    round: int
    parameters: Parameters
    settings: TrainSettings = field(default_factory=TrainSettings)


@dataclass(frozen=True)
class EvaluateTask:
    """Evaluate ``parameters`` on the site's held-out test data."""

    run_id: str
    round: int
    parameters: Parameters


@dataclass(frozen=True)
class TrainResult:
    """A site's answer to a :class:`TrainTask`: its model update Δ_k and example count n_k."""

    run_id: str
    round: int
    site: str
    update: Parameters
    n_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateResult:
    run_id: str
    round: int
    site: str
    n_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """A site declined a task before touching its data. ``kind`` names the policy branch."""

    run_id: str
    round: int
    site: str
    kind: str
    reason: str


@dataclass(frozen=True)
class Failure:
    """No usable answer from a site (crashed, timed out, or sent something invalid)."""

    site: str
    reason: str


SECURE_FIRST_PHASE = {"secagg": "advertise", "ckks": "encrypted_update"}
"""Each secure-aggregation mode and the phase in which a site answers its train task."""
SECURE_PHASES = (
    "advertise",
    "share_keys",
    "masked_input",
    "consistency",
    "unmask",
    "encrypted_update",
    "sign_contributors",
    "decrypt",
)


@dataclass(frozen=True)
class SecureTask:
    """One secure-aggregation phase for a site; ``payload`` is the phase's secagg message bytes
    (key roster, share delivery or survivor list)."""

    run_id: str
    round: int
    phase: str
    payload: bytes


@dataclass(frozen=True)
class SecureReply:
    """A site's answer in one secure-aggregation phase: key advertisement, share bundle, masked
    input or unmasking shares, as bytes. Never a plaintext update."""

    run_id: str
    round: int
    site: str
    phase: str
    payload: bytes


@dataclass(frozen=True)
class DescribeTask:
    """Describe how you prepare your data: the coordinator's join check, before any training.

    The site answers with a :class:`DescriptionReply` carrying its preprocessing recipe and the
    digest of a public reference set's features (MELLODDY-TUNER's reference hash; Heyndrickx et
    al. 2023), as the JSON text of :class:`fedpharma.data.recipe.SiteDescription`.
    """

    run_id: str
    round: int


@dataclass(frozen=True)
class DescriptionReply:
    """A site's preprocessing description (JSON text, parsed as hostile input by the
    coordinator); it holds settings and digests of public molecules only, nothing of the site's
    data."""

    run_id: str
    round: int
    site: str
    description: str


@dataclass(frozen=True)
class LabelStatisticsTask:
    """Send your training labels' per-task sums, to start the output layer at the labels."""

    run_id: str
    round: int


@dataclass(frozen=True)
class LabelStatisticsResult:
    """Per task t: the count of observed training labels, their sum and their sum of squares —
    the same kind of aggregate as n_k, nothing of any single record."""

    run_id: str
    round: int
    site: str
    count: tuple[float, ...]
    total: tuple[float, ...]
    sum_of_squares: tuple[float, ...]


@dataclass(frozen=True)
class FeatureStatisticsTask:
    """Send your raw training features' per-column sums, to fit the consortium's imputation and
    standardization (:mod:`fedpharma.data.federated_preprocessing`); with ``noise_multiplier``
    σ, as the Gaussian mechanism on clipped per-record contributions
    (:mod:`fedpharma.data.bounded_statistics`), charged to the site's record-level budget.

    With ``secure`` set, the site answers with a :class:`SecureReply` (the first phase of that
    secure aggregation, as a secure train task's) whose input is its vector of bounded sums
    (and, with ``labels``, its label columns' bounded count, sum and sum of squares): the
    coordinator learns only the sum over the sites (:mod:`fedpharma.server.secure_statistics`)."""

    run_id: str
    round: int
    noise_multiplier: float | None = None
    secure: SecureSettings | None = None
    labels: bool = False


@dataclass(frozen=True)
class FeatureStatisticsResult:
    """Per encoded feature column: the count of recorded values, their sum and their sum of
    squares; the number of training rows (n_k); and the histogram counts of each median-imputed
    column — aggregates, nothing of any single record (noised, if the task asked for DP)."""

    run_id: str
    round: int
    site: str
    n_examples: int
    count: tuple[float, ...]
    total: tuple[float, ...]
    sum_of_squares: tuple[float, ...]
    histogram: tuple[float, ...] = ()


@dataclass(frozen=True)
class DataCheckTask:
    """Check your data against the declared schema and say which rules pass."""

    run_id: str
    round: int


@dataclass(frozen=True)
class DataCheckReply:
    """The outcome of each data rule as ``rule:column`` (:mod:`fedpharma.data.checks`): which
    passed, which failed; no value, count or row."""

    run_id: str
    round: int
    site: str
    passed: tuple[str, ...]
    failed: tuple[str, ...]


@dataclass(frozen=True)
class PreprocessingTask:
    """Apply the consortium's fitted tabular preprocessing (its canonical JSON,
    :meth:`fedpharma.data.federated_preprocessing.FittedPreprocessing.to_json`) to your rows."""

    run_id: str
    round: int
    fit: str


@dataclass(frozen=True)
class PreprocessingApplied:
    """The digest of the fit the site applied, as the site computed it."""

    run_id: str
    round: int
    site: str
    digest: str


@dataclass(frozen=True)
class TaskSummaryTask:
    """Summarize ``parameters`` on your test rows, per task, as counts that pool across sites
    (:mod:`fedpharma.evaluation.task_counts`): ``n_tasks`` vectors of ``width`` numbers each;
    ``edges``: each regression task's parity grid (``n_tasks`` runs of bins + 1 edges; empty
    for classification, whose grid is fixed); ``label_width``: per task, the numbers of the
    training-label distribution asked for (0: none)."""

    run_id: str
    round: int
    parameters: Parameters
    n_tasks: int
    width: int
    edges: tuple[float, ...] = ()
    label_width: int = 0


@dataclass(frozen=True)
class TaskSummaryResult:
    """Per task, the site's counts (``values``: ``n_tasks`` × ``width`` numbers, a size fixed by
    the task, whatever the number of rows), the site's own metrics (``metrics``, keys
    ``"<task index>:<metric>"``) and its training labels' counts per bin or class (``label_counts``,
    ``n_tasks`` × ``label_width``): counts and sums, never a row's label or prediction."""

    run_id: str
    round: int
    site: str
    values: tuple[float, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    label_counts: tuple[float, ...] = ()


@dataclass(frozen=True)
class ChemicalOverlapTask:
    """Hash your scaffolds under the sites' overlap key into ``buckets`` buckets and read your
    set fingerprint bits (of ``n_bits``; :mod:`fedpharma.data.overlap`). Without ``secure``,
    send the two set sizes (:class:`ChemicalOverlapResult`); with it, answer with a
    :class:`SecureReply` whose input is the 0/1 vector of buckets, then bits, so the coordinator
    learns only how many sites occupy each (:mod:`fedpharma.server.chemical_overlap`)."""

    run_id: str
    round: int
    buckets: int
    n_bits: int
    secure: SecureSettings | None = None


@dataclass(frozen=True)
class ChemicalOverlapResult:
    """A site's scaffold buckets occupied and fingerprint bits set: two counts."""

    run_id: str
    round: int
    site: str
    scaffold_buckets: int
    set_bits: int


Task = (
    TrainTask
    | EvaluateTask
    | SecureTask
    | DescribeTask
    | LabelStatisticsTask
    | FeatureStatisticsTask
    | DataCheckTask
    | PreprocessingTask
    | TaskSummaryTask
    | ChemicalOverlapTask
)
Reply = (
    TrainResult
    | EvaluateResult
    | Refusal
    | SecureReply
    | DescriptionReply
    | LabelStatisticsResult
    | FeatureStatisticsResult
    | DataCheckReply
    | PreprocessingApplied
    | TaskSummaryResult
    | ChemicalOverlapResult
)


def secure_mode(task: Task) -> str | None:
    """The secure-aggregation mode a train, feature-statistics or chemical-overlap task runs
    under ("secagg", "ckks"), else None."""
    if isinstance(task, FeatureStatisticsTask | ChemicalOverlapTask):
        return None if task.secure is None else task.secure.kind
    if not isinstance(task, TrainTask) or task.settings.secure is None:
        return None
    return task.settings.secure.kind


def validate_reply(task: Task, site: str, reply: Reply) -> Reply:
    """Check that ``reply`` is a well-formed answer from ``site`` to ``task``; return it.

    Raises :class:`ProtocolError` for an answer to another task, run or round, an answer in
    another site's name, an update whose names, shapes, dtypes or values do not fit the model
    sent, or
    an example count an aggregate could not weigh by (an update from no examples, a negative
    count).
    """
    expected: tuple[type, ...]
    mode = secure_mode(task)
    if isinstance(task, SecureTask) or mode is not None:
        expected = (SecureReply, Refusal)
    elif isinstance(task, TrainTask):
        expected = (TrainResult, Refusal)
    elif isinstance(task, DescribeTask):
        expected = (DescriptionReply, Refusal)
    elif isinstance(task, LabelStatisticsTask):
        expected = (LabelStatisticsResult, Refusal)
    elif isinstance(task, FeatureStatisticsTask):
        expected = (FeatureStatisticsResult, Refusal)
    elif isinstance(task, DataCheckTask):
        expected = (DataCheckReply, Refusal)
    elif isinstance(task, PreprocessingTask):
        expected = (PreprocessingApplied, Refusal)
    elif isinstance(task, TaskSummaryTask):
        expected = (TaskSummaryResult, Refusal)
    elif isinstance(task, ChemicalOverlapTask):
        expected = (ChemicalOverlapResult, Refusal)
    else:
        expected = (EvaluateResult, Refusal)
    if not isinstance(reply, expected):
        raise ProtocolError(f"a {type(task).__name__} was answered with a {type(reply).__name__}")
    if reply.site != site:
        raise ProtocolError(f"site {site!r} answered in the name of {reply.site!r}")
    if (reply.run_id, reply.round) != (task.run_id, task.round):
        raise ProtocolError(
            f"answer is for run {reply.run_id!r} round {reply.round}, "
            f"expected run {task.run_id!r} round {task.round} (stale or replayed)"
        )
    if isinstance(reply, SecureReply):
        phase = task.phase if isinstance(task, SecureTask) else SECURE_FIRST_PHASE[str(mode)]
        if reply.phase != phase:
            raise ProtocolError(f"a {phase!r} secure task was answered in phase {reply.phase!r}")
    if isinstance(reply, TrainResult) and isinstance(task, TrainTask):
        reply.update.check_matches(task.parameters, what=f"update from {site!r}")
        for (name, got), sent in zip(reply.update, task.parameters.arrays, strict=True):
            if got.dtype != sent.dtype:
                raise ProtocolError(
                    f"update from {site!r}: parameter {name!r} is {got.dtype}, the model sent is "
                    f"{sent.dtype}; send the update in the model's dtype"
                )
        if reply.n_examples < 1:
            raise ProtocolError(
                f"update from {site!r} claims {reply.n_examples} training examples; an update "
                "weighs by its examples, so a site with no training rows must refuse the task"
            )
    if (
        isinstance(reply, TaskSummaryResult)
        and isinstance(task, TaskSummaryTask)
        and (
            len(reply.values) != task.n_tasks * task.width
            or len(reply.label_counts) != task.n_tasks * task.label_width
        )
    ):
        raise ProtocolError(
            f"task summary from {site!r} holds {len(reply.values)} + {len(reply.label_counts)} "
            f"numbers; the task asked for {task.n_tasks} × ({task.width} + {task.label_width})"
        )
    if (
        isinstance(reply, ChemicalOverlapResult)
        and isinstance(task, ChemicalOverlapTask)
        and (reply.scaffold_buckets > task.buckets or reply.set_bits > task.n_bits)
    ):
        raise ProtocolError(
            f"chemical overlap from {site!r} claims {reply.scaffold_buckets} of {task.buckets} "
            f"buckets and {reply.set_bits} of {task.n_bits} bits"
        )
    if isinstance(reply, EvaluateResult) and reply.n_examples < 0:
        raise ProtocolError(
            f"evaluation from {site!r} claims {reply.n_examples} test examples; send the "
            "number of rows evaluated (0 or more)"
        )
    return reply
