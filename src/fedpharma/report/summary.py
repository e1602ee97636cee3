"""A run's summary (``summary.json``): typed, built by the simulation, read back by the report.

The dataclasses below *are* the file: :func:`fedpharma.core.serde.to_dict` writes them and
:func:`load_summary` reads them back with the same engine, so every structural problem becomes
one :class:`~fedpharma.core.errors.DataError` naming each offending key. A missing or non-finite
score means "not computed" (baseline switched off, metric undefined on a test set).

Compatibility rule for ``summary.json``: ``format`` is bumped when a reader of the current
format would misread a newer file — a key removed or renamed, or a value whose type or meaning
changes. Adding a key that has a default keeps the format: readers ignore keys they do not know
(a newer file's additions), and a key missing from an older file reads as its default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fedpharma.core import serde
from fedpharma.core.errors import DataError

SUMMARY_FILE = "summary.json"
SUMMARY_FORMAT = 1
POOLED_NAME = "All sites (weighted mean)"
POOLED_IS = "test-size-weighted mean of the sites' metrics"

Model = Literal["local", "federated", "centralized"]
MODELS: tuple[Model, ...] = ("local", "federated", "centralized")

Relation = Literal["record", "site"]
RELATIONS: tuple[Relation, ...] = ("record", "site")

Series = tuple[float | None, ...]
"""A per-round list of values; ``None`` where there is none that round."""


@dataclass(frozen=True)
class Metric:
    """The headline metric of the run and which direction is good."""

    name: str
    higher_is_better: bool


@dataclass(frozen=True)
class DatasetInfo:
    """What was learned: dataset name, task type and size."""

    name: str
    task: str
    task_names: tuple[str, ...] = ()
    n_rows: int | None = None
    invalid_molecules: int | None = None


@dataclass(frozen=True)
class Partner:
    """One test set (a site's own, or the pooled one, without ``n_train``): the three models'
    headline scores and every metric of each model that was trained."""

    n_train: int | None = None
    n_test: int | None = None
    local: float | None = None
    federated: float | None = None
    centralized: float | None = None
    metrics: Mapping[Model, Mapping[str, float | None] | None] = field(default_factory=dict)

    def score(self, model: Model) -> float | None:
        """The model's headline score; ``None`` when not computed."""
        value: float | None = getattr(self, model)
        return value if value is not None and math.isfinite(value) else None

    def headline(self) -> dict[Model, float | None]:
        """Every model's headline score, ``None`` where not computed."""
        return {model: self.score(model) for model in MODELS}

    def details(self) -> dict[Model, Mapping[str, float | None]]:
        """Every metric per model, for the models that have them."""
        return {model: values for model, values in self.metrics.items() if values is not None}


@dataclass(frozen=True)
class Curves:
    """Per-round series, each empty or as long as ``rounds``."""

    rounds: tuple[int, ...] = field(default=(), metadata={"key": "round"})
    train_loss: Series = ()
    pooled: Series = ()
    pooled_is: str = POOLED_IS
    sites: Mapping[str, Series] = field(default_factory=dict)
    # The pooled metric on the sites' validation folds, aggregated like ``pooled`` (empty
    # without a validation fold): what the federated round is selected on.
    validation: Series = ()


@dataclass(frozen=True)
class Parity:
    """A 2-D histogram of (label, prediction): ``counts[i][j]`` test rows have their label in
    bin i and their prediction in bin j of the shared ``edges``. Counts only, no row's value."""

    edges: tuple[float, ...]
    counts: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class CurvePoints:
    """A curve as points: ROC (x = false positive rate, y = true positive rate) or
    precision–recall (x = recall, y = precision)."""

    x: tuple[float, ...]
    y: tuple[float, ...]


@dataclass(frozen=True)
class Calibration:
    """Reliability by bin of predicted probability: mean prediction, observed positive rate and
    row count per non-empty bin."""

    predicted: tuple[float, ...]
    observed: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True)
class TaskResult:
    """The federated model on one task, over every site's test rows together: its metrics and
    the aggregates the report draws (parity for regression; ROC, PR, calibration for
    classification). ``sites``: each site's own metrics on the task (a deployed run's, as the
    sites sent them); ``auc_tolerance``: where the ROC AUC comes from binned counts (a
    deployment), how far it can be from the exact one."""

    n_test: int
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    parity: Parity | None = None
    roc: CurvePoints | None = None
    pr: CurvePoints | None = None
    calibration: Calibration | None = None
    sites: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    auc_tolerance: float | None = None


@dataclass(frozen=True)
class TaskSummaryInfo:
    """Where a deployed run's per-task results come from: the sites that sent their counts,
    those that declined (and why), or why no site was asked; and the results' resolution."""

    sites: tuple[str, ...] = ()
    declined: Mapping[str, str] = field(default_factory=dict)
    skipped: str | None = None
    resolution: str | None = None


@dataclass(frozen=True)
class LabelDistribution:
    """One task's training labels at each site, as counts: per bin of the shared ``edges``
    (regression) or per class 0 / 1 (classification, ``edges`` empty); ``missing``: the site's
    training rows without this label."""

    edges: tuple[float, ...] = ()
    counts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    missing: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundActivity:
    """Every completed round: its wall-clock seconds and how many sites' updates it
    aggregated (of ``planned_sites``)."""

    rounds: tuple[int, ...] = field(default=(), metadata={"key": "round"})
    seconds: tuple[float, ...] = ()
    participants: tuple[int, ...] = ()
    planned_sites: int | None = None


@dataclass(frozen=True)
class Interval:
    """A 95 % paired bootstrap interval of a headline difference (first model minus second, in
    the metric's units), resampling each site's test rows
    (:func:`fedpharma.evaluation.bootstrap.site_weighted_differences`)."""

    low: float
    high: float
    resamples: int = field(default=0, metadata={"min": 0})


@dataclass(frozen=True)
class SiteOverlap:
    """A site's scaffolds (keyed-hash buckets) and fingerprint bits, and how many of each another
    site also holds — counts computed from hashed sets, never molecules
    (:mod:`fedpharma.data.overlap`)."""

    scaffolds: int = field(metadata={"min": 0})
    scaffolds_shared: int = field(metadata={"min": 0})
    bits: int = field(metadata={"min": 0})
    bits_shared: int = field(metadata={"min": 0})


@dataclass(frozen=True)
class SiteSetSizes:
    """A deployed site's own scaffold buckets occupied and fingerprint bits set, as it sent
    them."""

    scaffolds: int = field(metadata={"min": 0})
    bits: int = field(metadata={"min": 0})


@dataclass(frozen=True)
class ConsortiumOverlap:
    """A deployed run's chemical-space overlap (:mod:`fedpharma.server.chemical_overlap`): each
    site's set sizes and, from the secure sum of the ``contributors``' hashed sets, how many of
    the ``buckets`` scaffold buckets and of the fingerprint bits exactly 1, 2, … of them hold
    (``scaffolds_held_by[k - 1]``: by exactly k sites) — counts only, never one site's set.
    ``declined``: the sites that took no part, and why; ``missing``: why the consortium counts
    are not there."""

    buckets: int = field(default=0, metadata={"min": 0})
    sites: Mapping[str, SiteSetSizes] = field(default_factory=dict)
    contributors: tuple[str, ...] = ()
    scaffolds_held_by: tuple[int, ...] = ()
    bits_held_by: tuple[int, ...] = ()
    declined: Mapping[str, str] = field(default_factory=dict)
    missing: str | None = None


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds spent on the whole run and its parts."""

    total_seconds: float | None = None
    federated_seconds: float | None = None
    baseline_seconds: float | None = None


@dataclass(frozen=True)
class Refusal:
    """A site declining a round's task (e.g. its privacy budget would be exceeded)."""

    round: int
    site: str
    kind: str
    reason: str = ""


@dataclass(frozen=True)
class Privacy:
    """The ε each site spent under differential privacy, round by round, and its limits.

    ``epsilon[site][relation]`` is cumulative and aligned with ``rounds`` (``None`` where the
    site did not train that round); ``final[site][relation]`` is the last value. A relation
    without a budget has ``None``; values may be ``inf``.
    """

    record_level: bool
    site_level: bool
    accountant: str
    delta: Mapping[Relation, float | None]
    budget: Mapping[Relation, float | None] = field(default_factory=dict)
    rounds: tuple[int, ...] = field(default=(), metadata={"key": "round"})
    epsilon: Mapping[str, Mapping[Relation, Series]] = field(default_factory=dict)
    final: Mapping[str, Mapping[Relation, float | None]] = field(default_factory=dict)
    refusals: tuple[Refusal, ...] = ()

    def relations(self) -> tuple[Relation, ...]:
        """Relations switched on or with any ε reported, in ``RELATIONS`` order."""
        enabled = {"record": self.record_level, "site": self.site_level}
        reported = {rel for by in (*self.epsilon.values(), *self.final.values()) for rel in by}
        return tuple(rel for rel in RELATIONS if enabled[rel] or rel in reported)

    def max_final(self, relation: Relation) -> float | None:
        """The largest final ε over the sites for ``relation``; None if no site reported one."""
        values = [v for by in self.final.values() if (v := by.get(relation)) is not None]
        return max(values) if values else None


@dataclass(frozen=True)
class AttackScores:
    """One membership-inference attack: ROC AUC (0.5 = chance) and advantage max(TPR − FPR),
    both in [0, 1], on ``n_members`` training and ``n_nonmembers`` held-out records."""

    auc: float = field(metadata={"min": 0.0, "max": 1.0})
    advantage: float = field(metadata={"min": 0.0, "max": 1.0})
    n_members: int = field(metadata={"min": 0})
    n_nonmembers: int = field(metadata={"min": 0})


@dataclass(frozen=True)
class AuditTarget:
    """Both attacks on one target (the final model, or a site's raw update)."""

    loss_threshold: AttackScores
    calibrated: AttackScores

    def best_auc(self) -> float:
        """The stronger attack's AUC."""
        return max(self.loss_threshold.auc, self.calibrated.auc)


@dataclass(frozen=True)
class NotAudited:
    """Why an audit could not run (a refused task, a diverged model...)."""

    unavailable: str


@dataclass(frozen=True)
class SiteAudit:
    """A site's records attacked through the final model and through its own raw update.

    ``nonmember_shift``: the held-out non-members come from unseen groups (scaffolds), so the
    AUCs are upper bounds on the leakage.
    """

    nonmember_shift: bool
    final_model: AuditTarget | NotAudited
    site_update: AuditTarget | NotAudited


@dataclass(frozen=True)
class PrivacyAudit:
    """The membership-inference audit per site; ``secure_aggregation`` is the run's secure
    mode."""

    secure_aggregation: str
    sites: Mapping[str, SiteAudit] = field(default_factory=dict)


@dataclass(frozen=True)
class CrossSiteRow:
    """One model's headline score per test site; a site absent from ``scores`` was not
    evaluated (not allowed by a site's policy, or different tasks); ``None``: undefined."""

    model: str
    scores: Mapping[str, float | None]
    trained_at: str | None = None


@dataclass(frozen=True)
class CrossEvaluation:
    """Every model on every site's test data, where the sites allow it."""

    test_sites: tuple[str, ...] = ()
    allowed: Mapping[str, bool] = field(
        default_factory=dict, metadata={"key": "allow_cross_evaluation"}
    )
    rows: tuple[CrossSiteRow, ...] = ()


@dataclass(frozen=True)
class Selection:
    """Model selection on the sites' validation folds: the validation metric every model kind
    was chosen on, and where each was chosen — the federated model's round, the centralized
    model's epochs and each local-only model's epochs (``None``: no checkpoint was scored, the
    last one was kept)."""

    metric: str
    validation_fraction: float
    patience: int = 0
    federated_round: int | None = None
    centralized_epochs: int | None = None
    local_epochs: Mapping[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    """Everything the report shows. ``config`` is the run's configuration as it was written."""

    format: int = field(metadata={"choices": (SUMMARY_FORMAT,)})
    title: str
    dataset: DatasetInfo
    metric: Metric
    strategy: str
    rounds: int
    sites: Mapping[str, Partner]
    pooled: Partner
    run_id: str | None = None
    created: str | None = None
    curves: Curves = field(default_factory=Curves)
    timings: Timings = field(default_factory=Timings)
    config: Mapping[str, object] | None = None
    privacy: Privacy | None = None
    privacy_audit: PrivacyAudit | None = None
    cross_evaluation: CrossEvaluation | None = None
    activity: RoundActivity | None = None
    deployed: bool = False
    tasks: Mapping[str, TaskResult] = field(default_factory=dict)
    label_distributions: Mapping[str, LabelDistribution] = field(default_factory=dict)
    selection: Selection | None = None
    # "federated-local", "federated-centralized", "centralized-local": each difference's
    # interval, so the report's words follow the noise of these test sets.
    intervals: Mapping[str, Interval] = field(default_factory=dict)
    chemical_overlap: Mapping[str, SiteOverlap] = field(default_factory=dict)
    task_summary: TaskSummaryInfo | None = None
    # A deployed run's overlap: the sites' set sizes and the consortium's multiplicity counts.
    consortium_overlap: ConsortiumOverlap | None = None

    def partners(self) -> tuple[tuple[str, Partner], ...]:
        """Every test set by name: the sites', then the pooled one."""
        return (*self.sites.items(), (POOLED_NAME, self.pooled))


def write_summary(summary: RunSummary, run_dir: Path) -> Path:
    """Write ``run_dir/summary.json`` and return its path."""
    path = run_dir / SUMMARY_FILE
    path.write_text(json.dumps(serde.to_dict(summary), indent=2), encoding="utf-8")
    return path


def load_summary(run_dir: Path) -> RunSummary:
    """Read ``run_dir/summary.json``; raise :class:`DataError` saying what is missing or wrong."""
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        raise DataError(f"no {SUMMARY_FILE} in {run_dir} (has the run finished?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    return parse_summary(data, source=str(path))


def parse_summary(data: object, source: str = SUMMARY_FILE) -> RunSummary:
    """Validate an already-decoded summary; ``source`` names it in error messages."""
    if isinstance(data, dict) and data.get("format", SUMMARY_FORMAT) != SUMMARY_FORMAT:
        raise DataError(
            f"{source}: 'format' is {data['format']!r}, but this report understands format "
            f"{SUMMARY_FORMAT}"
        )
    summary = serde.load(RunSummary, data, source=source, ignore_unknown=True, error=_error)
    problems = [*_curve_problems(summary.curves), *_privacy_problems(summary.privacy)]
    problems += _cross_evaluation_problems(summary.cross_evaluation)
    if summary.activity is not None:
        activity = summary.activity
        series = {"seconds": activity.seconds, "participants": activity.participants}
        rounds = len(activity.rounds)
        problems += _length_problems("[activity]", series.items(), "[activity] round", rounds)
    if problems:
        raise _error(problems, source)
    return summary


def _error(problems: Sequence[str], source: str) -> DataError:
    lines = "\n".join(f"  - {p}" for p in problems)
    return DataError(f"{source} has {len(problems)} problem(s):\n{lines}")


def _curve_problems(curves: Curves) -> Iterator[str]:
    series = {
        "train_loss": curves.train_loss,
        "pooled": curves.pooled,
        "validation": curves.validation,
    }
    yield from _length_problems("[curves]", series.items(), "[curves] round", len(curves.rounds))
    yield from _length_problems(
        "[curves.sites]", curves.sites.items(), "[curves] round", len(curves.rounds)
    )


def _privacy_problems(privacy: Privacy | None) -> Iterator[str]:
    if privacy is None:
        return
    for site, by in privacy.epsilon.items():
        table = f"[privacy.epsilon.{site}]"
        yield from _length_problems(table, by.items(), "[privacy] round", len(privacy.rounds))
        for relation, series in by.items():
            if any(v is not None and not v >= 0 for v in series):
                yield f"{table} {relation}: every ε must be ≥ 0"
    parameters: dict[str, Mapping[Relation, float | None]]
    parameters = {"delta": privacy.delta, "budget": privacy.budget}
    parameters |= {f"final.{site}": final for site, final in privacy.final.items()}
    for name, values in parameters.items():
        for relation, value in values.items():
            if value is not None and not value >= 0:
                yield f"[privacy.{name}] {relation} = {value!r}: must be ≥ 0 (inf allowed)"


def _length_problems(
    table: str, series: Iterable[tuple[str, Sequence[object]]], rounds_key: str, length: int
) -> Iterator[str]:
    for name, values in series:
        if values and len(values) != length:
            yield f"{table} {name} has {len(values)} values but {rounds_key} has {length}"


def _cross_evaluation_problems(matrix: CrossEvaluation | None) -> Iterator[str]:
    if matrix is None:
        return
    for i, row in enumerate(matrix.rows):
        for site in row.scores:
            if site not in matrix.test_sites:
                table = f"[cross_evaluation.rows[{i}].scores]"
                yield f"{table} {site}: not one of [cross_evaluation] test_sites"
