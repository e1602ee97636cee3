"""Per-record contributions to the feature sums, bounded so that Gaussian noise makes them DP.

Each record contributes one vector: 1 for its row; per encoded column its recorded flag, its
value and its square, the value first clipped into the column's declared range and divided by
B = max(|min|, |max|) (the square by B²; binary and one-hot columns have B = 1); and one count
in the histogram of each median-imputed column. Every coordinate lies in [-1, 1], so one
record moves the summed vector by at most Δ = √(1 + 3w + m) in L2 norm (w encoded columns, m
median columns): the sensitivity under adding or removing a record that the Gaussian mechanism
N(0, σ²Δ²) needs (Dwork & Roth 2014, §3.5.3; its accounting: Mironov 2017). The noise is added
at the site (:mod:`fedpharma.site.statistics`); here are the bounded sums, the way back to
:class:`~fedpharma.data.federated_preprocessing.ColumnSums` and the noise each statistic then
carries (:func:`noise_std`). Clipping applies to the release only; the data are not changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedpharma.core.errors import DataError
from fedpharma.data.federated_preprocessing import (
    MEDIAN_BINS,
    ColumnSums,
    median_columns,
    median_histogram,
)
from fedpharma.data.tabular import TabularSchema


@dataclass(frozen=True)
class StatisticNoise:
    """The standard deviation of the DP noise on each released statistic, per encoded column
    (``rows`` and histogram counts: one number each)."""

    rows: float
    count: tuple[float, ...]
    total: tuple[float, ...]
    sum_of_squares: tuple[float, ...]
    histogram: float


def column_bounds(schema: TabularSchema) -> npt.NDArray[np.float64]:
    """B per encoded column; a numeric feature without a declared range cannot be bounded, so
    its sums cannot be released under DP (the error names every such column)."""
    bounds: list[float] = []
    unbounded: list[str] = []
    for column in schema.feature_columns:
        if column.type == "category":
            bounds += [1.0] * len(column.categories)
        elif column.type == "bool":
            bounds.append(1.0)
        elif column.minimum is None or column.maximum is None:
            unbounded.append(column.name)
            bounds.append(1.0)
        else:
            bounds.append(max(abs(column.minimum), abs(column.maximum), 1e-12))
    if unbounded:
        raise DataError(
            "feature sums under differential privacy need each numeric column's plausible "
            f"range; declare min and max in the schema for {', '.join(unbounded)}"
        )
    return np.asarray(bounds)


def sensitivity(schema: TabularSchema) -> float:
    """Δ: the most one record moves the bounded summed vector, in L2 norm."""
    return math.sqrt(1 + 3 * len(schema.feature_names) + len(median_columns(schema)))


def bounded_sums(
    schema: TabularSchema, features: npt.NDArray[np.floating]
) -> npt.NDArray[np.float64]:
    """The sum over records of each record's bounded vector (rows, counts, totals, squares,
    histograms, in that order)."""
    bounds = column_bounds(schema)
    if features.ndim != 2 or features.shape[1] != len(bounds):
        raise DataError(
            f"the schema encodes {len(bounds)} feature columns; this site's data has "
            f"{features.shape[1] if features.ndim == 2 else features.ndim}"
        )
    values = np.asarray(features, dtype=np.float64)
    recorded = ~np.isnan(values)
    scaled = np.where(recorded, _clip(schema, values), 0.0) / bounds
    histograms = [
        median_histogram(column, values[:, start]).astype(np.float64)
        for column, start in median_columns(schema)
    ]
    return np.concatenate(
        [
            [float(values.shape[0])],
            recorded.sum(axis=0, dtype=np.float64),
            scaled.sum(axis=0),
            (scaled**2).sum(axis=0),
            *histograms,
        ]
    )


def sums_from_bounded(schema: TabularSchema, vector: npt.NDArray[np.floating]) -> ColumnSums:
    """:class:`ColumnSums` in data units from a (noised) :func:`bounded_sums` vector."""
    bounds = column_bounds(schema)
    w = len(bounds)
    if vector.shape != (1 + 3 * w + MEDIAN_BINS * len(median_columns(schema)),):
        raise DataError("the bounded sums do not fit the schema")
    count, total, squares = (vector[1 + k * w : 1 + (k + 1) * w] for k in range(3))
    return ColumnSums(
        float(vector[0]),
        tuple(float(c) for c in count),
        tuple(float(t) for t in total * bounds),
        tuple(float(q) for q in squares * bounds**2),
        tuple(float(h) for h in vector[1 + 3 * w :]),
    )


def noise_std(schema: TabularSchema, noise_multiplier: float) -> StatisticNoise:
    """What N(0, σ²Δ²) on the bounded sums becomes on each statistic in data units."""
    std = noise_multiplier * sensitivity(schema)
    bounds = column_bounds(schema)
    return StatisticNoise(
        std,
        tuple(std for _ in bounds),
        tuple(float(std * b) for b in bounds),
        tuple(float(std * b**2) for b in bounds),
        std,
    )


def _clip(schema: TabularSchema, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each numeric column's values clipped into its declared range."""
    lows, highs = [], []
    for column in schema.feature_columns:
        width = len(column.categories) if column.type == "category" else 1
        numeric = column.type in ("float", "int")
        lows += [column.minimum if numeric and column.minimum is not None else -np.inf] * width
        highs += [column.maximum if numeric and column.maximum is not None else np.inf] * width
    return np.clip(values, np.asarray(lows), np.asarray(highs))


def label_bounds(
    schema: TabularSchema, classification: bool = False
) -> npt.NDArray[np.float64] | None:
    """B per label column (binary, or any label of a ``classification``, whose outcomes the
    data checks hold to 0/1: 1), ``None`` unless every label column declares its range: what
    bounds a record's label in a secure sum of label statistics."""
    if classification:
        return np.ones(len(schema.label_columns))
    by_name = {c.name: c for c in schema.columns}
    bounds: list[float] = []
    for name in schema.label_columns:
        column = by_name[name]
        if column.type == "bool":
            bounds.append(1.0)
        elif column.minimum is None or column.maximum is None:
            return None
        else:
            bounds.append(max(abs(column.minimum), abs(column.maximum), 1e-12))
    return np.asarray(bounds)


def bounded_label_sums(
    schema: TabularSchema, labels: npt.NDArray[np.floating], classification: bool = False
) -> npt.NDArray[np.float64]:
    """Per label column: the count of recorded labels, then their sum and their sum of squares,
    each label first clipped into its declared range (a classification's: [0, 1]) and divided
    by B (squares by B²)."""
    bounds = label_bounds(schema, classification)
    if bounds is None:
        raise DataError(
            "label statistics in a secure sum need each label column's declared min and max"
        )
    values = np.asarray(labels, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(bounds):
        raise DataError(f"the schema declares {len(bounds)} label columns; the data has others")
    columns = {c.name: c for c in schema.columns}
    lows, highs = np.full(len(bounds), -np.inf), np.full(len(bounds), np.inf)
    for k, name in enumerate(schema.label_columns):
        low, high = (0.0, 1.0) if classification else (columns[name].minimum, columns[name].maximum)
        lows[k] = -np.inf if low is None else low
        highs[k] = np.inf if high is None else high
    recorded = ~np.isnan(values)
    scaled = np.where(recorded, np.clip(values, lows, highs), 0.0) / bounds
    return np.concatenate(
        [recorded.sum(axis=0, dtype=np.float64), scaled.sum(axis=0), (scaled**2).sum(axis=0)]
    )


def label_sums_from_bounded(
    schema: TabularSchema, vector: npt.NDArray[np.floating], classification: bool = False
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Count, sum and sum of squares per label column, in label units, from a (summed)
    :func:`bounded_label_sums` vector."""
    bounds = label_bounds(schema, classification)
    if bounds is None or vector.shape != (3 * len(bounds),):
        raise DataError("the bounded label sums do not fit the schema")
    count, total, squares = (
        np.asarray(vector[k * len(bounds) : (k + 1) * len(bounds)]) for k in range(3)
    )
    return count.astype(np.float64), total * bounds, squares * bounds**2
