"""A site's own data checked against the declared schema, summarised as pass/fail per rule.

Small registered rules (as Opacus validators), each giving ``(rule, column, passed)`` for every
column it applies to; the summary a site sends at join holds only those outcomes, never a value,
a count or a row. Rules: ``recorded`` (a column has at least one recorded value), ``range`` (every
recorded value of a numeric column lies in its declared plausible range), ``constant`` (a feature
column's recorded values are not all one value), ``labels`` (a classification label holds both
classes). Malformed cells and undeclared categories already stop reading the file
(:func:`fedpharma.data.tabular.read_tabular`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedpharma.core.dataset import Dataset, dense
from fedpharma.data.tabular import Column, TabularSchema

RULES = ("recorded", "range", "constant", "labels")


@dataclass(frozen=True)
class RuleOutcome:
    rule: str
    column: str
    passed: bool

    @property
    def key(self) -> str:
        """``rule:column``, the form the join summary carries."""
        return f"{self.rule}:{self.column}"


Rule = Callable[[TabularSchema, Dataset], Iterator[RuleOutcome]]


def _feature_blocks(
    schema: TabularSchema, data: Dataset
) -> Iterator[tuple[Column, npt.NDArray[np.float32]]]:
    start = 0
    for column in schema.feature_columns:
        width = len(column.categories) if column.type == "category" else 1
        yield column, dense(data.features)[:, start : start + width]
        start += width


def _recorded(schema: TabularSchema, data: Dataset) -> Iterator[RuleOutcome]:
    for column, block in _feature_blocks(schema, data):
        yield RuleOutcome("recorded", column.name, bool((~np.isnan(block[:, 0])).any()))


def _range(schema: TabularSchema, data: Dataset) -> Iterator[RuleOutcome]:
    for column, block in _feature_blocks(schema, data):
        if column.minimum is None and column.maximum is None:
            continue
        values = block[:, 0][~np.isnan(block[:, 0])]
        low = column.minimum if column.minimum is not None else -np.inf
        high = column.maximum if column.maximum is not None else np.inf
        yield RuleOutcome("range", column.name, bool(((values >= low) & (values <= high)).all()))


def _constant(schema: TabularSchema, data: Dataset) -> Iterator[RuleOutcome]:
    for column, block in _feature_blocks(schema, data):
        rows = block[~np.isnan(block).any(axis=1)]
        # nothing recorded is the `recorded` rule's finding, not this one's
        yield RuleOutcome(
            "constant", column.name, len(rows) == 0 or len(np.unique(rows, axis=0)) > 1
        )


def _labels(schema: TabularSchema, data: Dataset) -> Iterator[RuleOutcome]:
    if data.task != "classification":
        return
    for j, name in enumerate(schema.label_columns):
        labels = data.dense_labels()[:, j]
        observed = labels[~np.isnan(labels)]
        yield RuleOutcome("labels", name, set(np.unique(observed).tolist()) == {0.0, 1.0})


REGISTRY: dict[str, Rule] = {
    "recorded": _recorded,
    "range": _range,
    "constant": _constant,
    "labels": _labels,
}


def check_data(schema: TabularSchema, data: Dataset) -> tuple[RuleOutcome, ...]:
    """Every rule's outcome on ``data`` (raw features: missing values NaN, before any fit)."""
    return tuple(outcome for rule in RULES for outcome in REGISTRY[rule](schema, data))
