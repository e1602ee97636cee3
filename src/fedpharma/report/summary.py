"""Read and validate a run's ``summary.json`` into typed objects the report can trust.

The simulation engine writes the file; this module is the one place that knows its shape. Every
structural problem becomes a :class:`~fedpharma.errors.DataError` naming the offending key, so
the rendering code never has to guard against a missing field. Unknown keys are ignored: later
issues add optional sections (privacy budgets, ...) without bumping the format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fedpharma.errors import DataError

SUMMARY_FILE = "summary.json"
SUPPORTED_FORMAT = 1
POOLED_NAME = "All sites (pooled)"

Model = Literal["local", "federated", "centralized"]
MODELS: tuple[Model, ...] = ("local", "federated", "centralized")

Relation = Literal["record", "site"]
RELATIONS: tuple[Relation, ...] = ("record", "site")


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
    task_names: tuple[str, ...]
    n_rows: int | None
    invalid_molecules: int | None


@dataclass(frozen=True)
class Scores:
    """Headline scores of the three models on one test set, plus every metric of each.

    A score is ``None`` when the model was not trained (baseline switched off) or the metric
    was undefined (e.g. ROC AUC on a test set holding a single class).
    """

    headline: Mapping[Model, float | None]
    metrics: Mapping[Model, Mapping[str, float | None]]


@dataclass(frozen=True)
class Partner:
    """One test set: a site's own, or the pooled one (``n_train`` is then ``None``)."""

    name: str
    n_train: int | None
    n_test: int | None
    scores: Scores


@dataclass(frozen=True)
class Curves:
    """Per-round series; all lists are as long as ``rounds`` (NaN marks a missing value)."""

    rounds: tuple[int, ...]
    train_loss: tuple[float, ...]
    pooled: tuple[float, ...]
    sites: Mapping[str, tuple[float, ...]]


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds spent on the whole run and its parts."""

    total_seconds: float | None
    federated_seconds: float | None
    baseline_seconds: float | None


@dataclass(frozen=True)
class Refusal:
    """A site declining a round's task (e.g. its privacy budget would be exceeded)."""

    round: int
    site: str
    kind: str
    reason: str


@dataclass(frozen=True)
class Privacy:
    """The ε each site spent under differential privacy, round by round, and its limits.

    ``epsilon[site][relation]`` is cumulative and aligned with ``rounds`` (NaN where the site did
    not train that round); ``final[site][relation]`` is the last value (``None`` if never
    reported). ``budget`` is ``None`` for a relation without a budget; values may be ``inf``.
    """

    record_level: bool
    site_level: bool
    accountant: str
    delta: Mapping[Relation, float | None]
    budget: Mapping[Relation, float | None]
    rounds: tuple[int, ...]
    epsilon: Mapping[str, Mapping[Relation, tuple[float, ...]]]
    final: Mapping[str, Mapping[Relation, float | None]]
    refusals: tuple[Refusal, ...]

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

    auc: float
    advantage: float
    n_members: int
    n_nonmembers: int


@dataclass(frozen=True)
class AuditTarget:
    """Both attacks on one target (the final model, or a site's raw update)."""

    loss_threshold: AttackScores
    calibrated: AttackScores

    def best_auc(self) -> float:
        """The stronger attack's AUC."""
        return max(self.loss_threshold.auc, self.calibrated.auc)


@dataclass(frozen=True)
class SiteAudit:
    """A site's records attacked through the final model and through its own raw update; a
    string instead of a target says why that audit could not run.

    ``nonmember_shift``: the held-out non-members come from unseen groups (scaffolds), so the
    AUCs are upper bounds on the leakage.
    """

    site: str
    nonmember_shift: bool
    final_model: AuditTarget | str
    site_update: AuditTarget | str


@dataclass(frozen=True)
class PrivacyAudit:
    """The membership-inference audit; ``secure_aggregation`` is the run's secure mode."""

    secure_aggregation: str
    sites: tuple[SiteAudit, ...]


@dataclass(frozen=True)
class CrossSiteRow:
    """One model's headline score per test site; a site absent from ``scores`` was not
    evaluated (not allowed by a site's policy, or different tasks); ``None``: undefined."""

    model: str
    trained_at: str | None
    scores: Mapping[str, float | None]


@dataclass(frozen=True)
class CrossEvaluation:
    """Every model on every site's test data, where the sites allow it."""

    test_sites: tuple[str, ...]
    allowed: Mapping[str, bool]
    rows: tuple[CrossSiteRow, ...]


@dataclass(frozen=True)
class RunSummary:
    """Everything the report shows, validated."""

    title: str
    run_id: str | None
    created: str | None
    dataset: DatasetInfo
    metric: Metric
    strategy: str
    rounds: int
    sites: tuple[Partner, ...]
    pooled: Partner
    curves: Curves
    timings: Timings
    config: object
    privacy: Privacy | None = None
    privacy_audit: PrivacyAudit | None = None
    cross_evaluation: CrossEvaluation | None = None


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
    root = _Node(data, "", source)
    fmt = root.integer("format")
    if fmt != SUPPORTED_FORMAT:
        raise DataError(
            f"{source}: 'format' is {fmt}, but this report understands format {SUPPORTED_FORMAT}"
        )
    sites = root.child("sites")
    return RunSummary(
        title=root.text("title"),
        run_id=root.optional_text("run_id"),
        created=root.optional_text("created"),
        dataset=_parse_dataset(root.child("dataset")),
        metric=_parse_metric(root.child("metric")),
        strategy=root.text("strategy"),
        rounds=root.integer("rounds"),
        sites=tuple(_parse_partner(name, sites.child(name)) for name in sites.names()),
        pooled=_parse_partner(POOLED_NAME, root.child("pooled")),
        curves=_parse_curves(root.optional_child("curves")),
        timings=_parse_timings(root.optional_child("timings")),
        config=root.raw("config"),
        privacy=_parse_privacy(root.optional_child("privacy")),
        privacy_audit=_parse_privacy_audit(root.optional_child("privacy_audit")),
        cross_evaluation=_parse_cross_evaluation(root.optional_child("cross_evaluation")),
    )


def _parse_dataset(node: _Node) -> DatasetInfo:
    task_names = node.optional_list("task_names")
    return DatasetInfo(
        name=node.text("name"),
        task=node.text("task"),
        task_names=tuple(str(name) for name in task_names),
        n_rows=node.optional_integer("n_rows"),
        invalid_molecules=node.optional_integer("invalid_molecules"),
    )


def _parse_metric(node: _Node) -> Metric:
    return Metric(name=node.text("name"), higher_is_better=node.flag("higher_is_better"))


def _parse_partner(name: str, node: _Node) -> Partner:
    metrics_node = node.optional_child("metrics")
    metrics: dict[Model, dict[str, float | None]] = {}
    for model in MODELS:
        model_node = metrics_node.optional_child(model) if metrics_node else None
        if model_node is not None:
            metrics[model] = {key: model_node.optional_number(key) for key in model_node.names()}
    return Partner(
        name=name,
        n_train=node.optional_integer("n_train"),
        n_test=node.optional_integer("n_test"),
        scores=Scores(
            headline={model: node.optional_number(model) for model in MODELS},
            metrics=metrics,
        ),
    )


def _parse_curves(node: _Node | None) -> Curves:
    if node is None:
        return Curves(rounds=(), train_loss=(), pooled=(), sites={})
    rounds = tuple(node.integer_list("round"))
    sites_node = node.optional_child("sites")
    sites = {}
    if sites_node is not None:
        sites = {name: sites_node.series(name, len(rounds)) for name in sites_node.names()}
    return Curves(
        rounds=rounds,
        train_loss=node.series("train_loss", len(rounds)),
        pooled=node.series("pooled", len(rounds)),
        sites=sites,
    )


def _parse_timings(node: _Node | None) -> Timings:
    if node is None:
        return Timings(total_seconds=None, federated_seconds=None, baseline_seconds=None)
    return Timings(
        total_seconds=node.optional_number("total_seconds"),
        federated_seconds=node.optional_number("federated_seconds"),
        baseline_seconds=node.optional_number("baseline_seconds"),
    )


def _parse_privacy(node: _Node | None) -> Privacy | None:
    if node is None:
        return None
    rounds = tuple(node.integer_list("round"))
    epsilon = {
        site: {
            _relation(by, rel): by.series(rel, len(rounds), "privacy.round", minimum=0.0)
            for rel in by.names()
        }
        for site, by in _children(node.optional_child("epsilon"))
    }
    final = {
        site: {_relation(by, rel): by.privacy_number(rel) for rel in by.names()}
        for site, by in _children(node.optional_child("final"))
    }
    delta, budget = node.child("delta"), node.optional_child("budget")
    for part in (delta, budget):
        if part is not None:
            for rel in part.names():
                _relation(part, rel)
    return Privacy(
        record_level=node.flag("record_level"),
        site_level=node.flag("site_level"),
        accountant=node.text("accountant"),
        delta={rel: delta.privacy_number(rel) for rel in RELATIONS},
        budget={rel: budget.privacy_number(rel) if budget else None for rel in RELATIONS},
        rounds=rounds,
        epsilon=epsilon,
        final=final,
        refusals=tuple(
            _parse_refusal(node.item("refusals", i))
            for i in range(len(node.optional_list("refusals")))
        ),
    )


def _children(node: _Node | None) -> list[tuple[str, _Node]]:
    """Each key of ``node`` with its object value; nothing when ``node`` is absent."""
    return [(name, node.child(name)) for name in node.names()] if node else []


def _relation(node: _Node, key: str) -> Relation:
    for rel in RELATIONS:
        if key == rel:
            return rel
    raise DataError(
        f"{node.source}: '{node.key_path(key)}' is not a privacy relation "
        f"(expected one of {', '.join(RELATIONS)})"
    )


def _parse_privacy_audit(node: _Node | None) -> PrivacyAudit | None:
    if node is None:
        return None
    sites = tuple(
        SiteAudit(
            site=name,
            nonmember_shift=by.flag("nonmember_shift"),
            final_model=_parse_audit_target(by.child("final_model")),
            site_update=_parse_audit_target(by.child("site_update")),
        )
        for name, by in _children(node.optional_child("sites"))
    )
    return PrivacyAudit(secure_aggregation=node.text("secure_aggregation"), sites=sites)


def _parse_audit_target(node: _Node) -> AuditTarget | str:
    unavailable = node.optional_text("unavailable")
    if unavailable is not None:
        return unavailable
    return AuditTarget(
        loss_threshold=_parse_attack(node.child("loss_threshold")),
        calibrated=_parse_attack(node.child("calibrated")),
    )


def _parse_attack(node: _Node) -> AttackScores:
    return AttackScores(
        auc=node.fraction("auc"),
        advantage=node.fraction("advantage"),
        n_members=node.integer("n_members"),
        n_nonmembers=node.integer("n_nonmembers"),
    )


def _parse_cross_evaluation(node: _Node | None) -> CrossEvaluation | None:
    if node is None:
        return None
    test_sites = tuple(site for site in node.optional_list("test_sites") if isinstance(site, str))
    if len(test_sites) != len(node.optional_list("test_sites")):
        raise DataError(f"{node.source}: '{node.key_path('test_sites')}' should list site names")
    allowed = node.optional_child("allow_cross_evaluation")
    rows = []
    for i in range(len(node.optional_list("rows"))):
        row = node.item("rows", i)
        scores = row.child("scores")
        for site in scores.names():
            if site not in test_sites:
                raise DataError(
                    f"{row.source}: '{scores.key_path(site)}' is not one of "
                    "'cross_evaluation.test_sites'"
                )
        rows.append(
            CrossSiteRow(
                model=row.text("model"),
                trained_at=row.optional_text("trained_at"),
                scores={site: scores.optional_number(site) for site in scores.names()},
            )
        )
    return CrossEvaluation(
        test_sites=test_sites,
        allowed={site: allowed.flag(site) for site in allowed.names()} if allowed else {},
        rows=tuple(rows),
    )


def _parse_refusal(node: _Node) -> Refusal:
    return Refusal(
        round=node.integer("round"),
        site=node.text("site"),
        kind=node.text("kind"),
        reason=node.optional_text("reason") or "",
    )


class _Node:
    """A JSON object plus its dotted key path, with typed getters that fail with that path."""

    def __init__(self, data: object, path: str, source: str) -> None:
        if not isinstance(data, dict):
            where = f"'{path}'" if path else "the top level"
            raise DataError(f"{source}: {where} should be a JSON object, got {_kind(data)}")
        self._data: dict[str, object] = data
        self._path = path
        self._source = source

    def names(self) -> list[str]:
        """The object's keys, in file order."""
        return list(self._data)

    def raw(self, key: str) -> object:
        """The value as decoded, or ``None`` when absent."""
        return self._data.get(key)

    def text(self, key: str) -> str:
        value = self._required(key)
        if not isinstance(value, str):
            raise self._wrong_type(key, "a string", value)
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self._data.get(key) is None else self.text(key)

    def integer(self, key: str) -> int:
        value = self._required(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong_type(key, "an integer", value)
        return value

    def optional_integer(self, key: str) -> int | None:
        return None if self._data.get(key) is None else self.integer(key)

    def flag(self, key: str) -> bool:
        value = self._required(key)
        if not isinstance(value, bool):
            raise self._wrong_type(key, "true or false", value)
        return value

    def fraction(self, key: str) -> float:
        """A number in [0, 1] (an AUC, an advantage)."""
        value = self._required(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise self._wrong_type(key, "a number in [0, 1]", value)
        return float(value)

    def optional_number(self, key: str) -> float | None:
        """A finite number, or ``None`` for absent / null / NaN (metric not computed)."""
        value = self._data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong_type(key, "a number or null", value)
        return float(value) if math.isfinite(value) else None

    def child(self, key: str) -> _Node:
        return _Node(self._required(key), self._key_path(key), self._source)

    def optional_child(self, key: str) -> _Node | None:
        return None if self._data.get(key) is None else self.child(key)

    def privacy_number(self, key: str) -> float | None:
        """A privacy parameter: a number ≥ 0 (``inf`` allowed: no guarantee), or absent/null."""
        value = self._data.get(key)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or math.isnan(value)
            or value < 0
        ):
            raise self._wrong_type(key, "a number ≥ 0 or null", value)
        return float(value)

    def item(self, key: str, index: int) -> _Node:
        """Element ``index`` of the list at ``key``, which must be a JSON object."""
        return _Node(
            self.optional_list(key)[index], f"{self._key_path(key)}[{index}]", self._source
        )

    def optional_list(self, key: str) -> list[object]:
        value = self._data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._wrong_type(key, "a list", value)
        return value

    def integer_list(self, key: str) -> list[int]:
        result: list[int] = []
        for value in self.optional_list(key):
            if isinstance(value, bool) or not isinstance(value, int):
                raise self._wrong_type(key, "a list of integers", value)
            result.append(value)
        return result

    def series(
        self,
        key: str,
        length: int,
        rounds_key: str = "curves.round",
        minimum: float | None = None,
    ) -> tuple[float, ...]:
        """A per-round list of numbers (null → NaN); empty, or exactly ``length`` long (the
        length of ``rounds_key``); with ``minimum``, every number must be at least that."""
        values = self.optional_list(key)
        if values and len(values) != length:
            raise DataError(
                f"{self._source}: '{self._key_path(key)}' has {len(values)} values "
                f"but '{rounds_key}' has {length}"
            )
        result: list[float] = []
        expected = "a list of numbers" + ("" if minimum is None else f" ≥ {minimum:g}")
        expected += " or nulls"
        for value in values:
            if value is None:
                result.append(math.nan)
            elif (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (minimum is not None and not value >= minimum)
            ):
                raise self._wrong_type(key, expected, value)
            else:
                result.append(float(value))
        return tuple(result)

    def _required(self, key: str) -> object:
        if key not in self._data:
            raise DataError(f"{self._source}: key '{self._key_path(key)}' is missing")
        return self._data[key]

    @property
    def source(self) -> str:
        return self._source

    def key_path(self, key: str) -> str:
        """The dotted path of ``key`` inside this object, as error messages show it."""
        return self._key_path(key)

    def _key_path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def _wrong_type(self, key: str, expected: str, value: object) -> DataError:
        return DataError(
            f"{self._source}: '{self._key_path(key)}' should be {expected}, got {_kind(value)}"
        )


def _kind(value: object) -> str:
    """A short description of a JSON value for error messages."""
    if value is None:
        return "null"
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else f"{type(value).__name__} {text[:37]}..."
