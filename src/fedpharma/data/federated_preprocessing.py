"""Imputation and standardization of tabular features, fitted from the sites' sums alone.

Each site releases, per encoded feature column, the count of recorded values, their sum and
their sum of squares (:func:`column_sums`), the sufficient statistics of a mean and a variance
(Chan, Golub & LeVeque 1983); the coordinator adds them and :meth:`FittedPreprocessing.fit`
turns the totals into the same scaler and imputer a pooled fit would give: mean imputation and
z-scoring for numeric columns (population standard deviation, as scikit-learn's
``StandardScaler``), the most frequent category (the largest one-hot column sum) or binary
value, and a missingness indicator per column that imputes and was missing somewhere. Category
vocabularies come from the declared schema, never from another site's values. Without the
sites' sums (a site whose policy requires DP refuses them), :meth:`FittedPreprocessing.public`
scales by the schema's declared plausible ranges, which cost no privacy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedpharma.core.errors import DataError
from fedpharma.data.tabular import Column, TabularSchema

FIT_VERSION = 1
"""Format version of :class:`FittedPreprocessing`; part of its digest."""


@dataclass(frozen=True)
class ColumnSums:
    """Per encoded column: recorded values (not NaN), their sum, their sum of squares; and rows."""

    rows: int
    count: tuple[float, ...]
    total: tuple[float, ...]
    sum_of_squares: tuple[float, ...]

    def __add__(self, other: ColumnSums) -> ColumnSums:
        if len(self.count) != len(other.count):
            raise DataError("column sums of different widths cannot be added")
        return ColumnSums(
            self.rows + other.rows,
            tuple(a + b for a, b in zip(self.count, other.count, strict=True)),
            tuple(a + b for a, b in zip(self.total, other.total, strict=True)),
            tuple(a + b for a, b in zip(self.sum_of_squares, other.sum_of_squares, strict=True)),
        )


def column_sums(features: npt.NDArray[np.floating]) -> ColumnSums:
    """A site's contribution, over its recorded values only (a missing value is NaN)."""
    recorded = ~np.isnan(features)
    values = np.where(recorded, features, 0.0).astype(np.float64)
    return ColumnSums(
        int(features.shape[0]),
        tuple(float(c) for c in recorded.sum(axis=0)),
        tuple(float(t) for t in values.sum(axis=0)),
        tuple(float(q) for q in (values**2).sum(axis=0)),
    )


@dataclass(frozen=True)
class FittedPreprocessing:
    """Per encoded input column: the fill for a missing value, then ``(x - center) / scale``;
    indicator columns (1 where the source column was missing) appended after the features."""

    feature_names: tuple[str, ...]
    fill: tuple[float, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    indicators: tuple[int, ...]  # for each indicator: the input column whose NaN it marks
    indicator_names: tuple[str, ...]
    source: str  # "federated sums" or "declared ranges"

    @classmethod
    def fit(cls, schema: TabularSchema, sums: ColumnSums) -> FittedPreprocessing:
        """The pooled imputer and scaler, from the consortium's summed :class:`ColumnSums`."""
        blocks = _blocks(schema)
        if len(sums.count) != sum(width for _, width in blocks):
            raise DataError(
                f"the sites' statistics cover {len(sums.count)} columns; the schema encodes "
                f"{sum(width for _, width in blocks)}"
            )
        count, total, squares = (
            np.asarray(a, dtype=np.float64) for a in (sums.count, sums.total, sums.sum_of_squares)
        )
        fill: list[float] = []
        center: list[float] = []
        scale: list[float] = []
        indicators: list[int] = []
        names: list[str] = []
        start = 0
        for column, width in blocks:
            n, s, q = (a[start : start + width] for a in (count, total, squares))
            if n[0] == 0:
                raise DataError(f"column {column.name!r} has no recorded value at any site")
            if column.type == "category":
                most = int(np.argmax(s))
                fill += [1.0 if k == most else 0.0 for k in range(width)]
                center += [0.0] * width
                scale += [1.0] * width
            elif column.type == "bool":
                fill.append(1.0 if s[0] / n[0] >= 0.5 else 0.0)
                center.append(0.0)
                scale.append(1.0)
            else:
                mean = s[0] / n[0]
                variance = max(q[0] / n[0] - mean**2, 0.0)
                fill.append(mean)
                center.append(mean)
                scale.append(float(np.sqrt(variance)) if variance > 0.0 else 1.0)
            if column.impute != "none" and n[0] < sums.rows:
                indicators.append(start)
                names.append(f"missing({column.name})")
            start += width
        return cls(
            schema.feature_names,
            tuple(float(v) for v in fill),
            tuple(float(v) for v in center),
            tuple(float(v) for v in scale),
            tuple(indicators),
            tuple(names),
            "federated sums",
        )

    @classmethod
    def public(cls, schema: TabularSchema) -> FittedPreprocessing:
        """From the schema alone: a numeric column with a declared range is centred on its
        midpoint and scaled by its half-width (and filled with the midpoint); every other column
        is left as it is (filled with 0 and flagged, if it imputes)."""
        fill: list[float] = []
        center: list[float] = []
        scale: list[float] = []
        indicators: list[int] = []
        names: list[str] = []
        start = 0
        for column, width in _blocks(schema):
            lo, hi = column.minimum, column.maximum
            if lo is not None and hi is not None and hi > lo:
                middle = (lo + hi) / 2.0
                fill.append(middle)
                center.append(middle)
                scale.append((hi - lo) / 2.0)
            else:
                fill += [0.0] * width
                center += [0.0] * width
                scale += [1.0] * width
            if column.impute != "none":
                indicators.append(start)
                names.append(f"missing({column.name})")
            start += width
        return cls(
            schema.feature_names,
            tuple(fill),
            tuple(center),
            tuple(scale),
            tuple(indicators),
            tuple(names),
            "declared ranges",
        )

    @property
    def output_names(self) -> tuple[str, ...]:
        return (*self.feature_names, *self.indicator_names)

    def transform(self, features: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Impute, add the indicators, standardize: the same function at every site."""
        if features.ndim != 2 or features.shape[1] != len(self.fill):
            raise DataError(
                f"the fitted preprocessing expects {len(self.fill)} columns, got "
                f"{features.shape[1] if features.ndim == 2 else features.ndim}"
            )
        values = np.asarray(features, dtype=np.float64)
        missing = np.isnan(values)
        filled = np.where(missing, np.asarray(self.fill), values)
        scaled = (filled - np.asarray(self.center)) / np.asarray(self.scale)
        flags = missing[:, list(self.indicators)].astype(np.float64)
        return np.concatenate([scaled, flags], axis=1).astype(np.float32)

    def digest(self) -> str:
        """SHA-256 (hex) of the fit's canonical JSON, for the run's recipe and audit trail."""
        document = {"version": FIT_VERSION, **{k: v for k, v in vars(self).items()}}
        text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _blocks(schema: TabularSchema) -> list[tuple[Column, int]]:
    """Each feature column and how many encoded columns it becomes."""
    return [
        (column, len(column.categories) if column.type == "category" else 1)
        for column in schema.feature_columns
    ]
