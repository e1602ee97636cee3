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
scales by the schema's declared plausible ranges, which cost no privacy. A column imputed by
its ``median`` also sends a histogram of its recorded values over the declared range
(:data:`MEDIAN_BINS` bins); the median is read off the summed histogram. Sums released under
differential privacy (:mod:`fedpharma.data.bounded_statistics`) are fitted with ``noised=True``:
counts, means and spreads are kept inside what the schema makes possible.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedpharma.core import serde
from fedpharma.core.dataset import TargetScaling
from fedpharma.core.errors import DataError
from fedpharma.data.tabular import Column, TabularSchema

FIT_VERSION = 3
"""Format version of :class:`FittedPreprocessing`; part of its digest. Version 3 added the
regression targets' scaling; a fit without one is still written (and digested) as version 2,
so earlier fits keep their digests."""

_READABLE_VERSIONS = (2, 3)

MEDIAN_BINS = 100
"""Equal-width bins over a column's declared range whose counts give its federated median."""


@dataclass(frozen=True)
class ColumnSums:
    """Per encoded column: recorded values (not NaN), their sum, their sum of squares; rows;
    and, per column imputed by its median, :data:`MEDIAN_BINS` histogram counts."""

    rows: float
    count: tuple[float, ...]
    total: tuple[float, ...]
    sum_of_squares: tuple[float, ...]
    histogram: tuple[float, ...] = ()

    def __add__(self, other: ColumnSums) -> ColumnSums:
        if len(self.count) != len(other.count) or len(self.histogram) != len(other.histogram):
            raise DataError("column sums of different widths cannot be added")
        return ColumnSums(
            self.rows + other.rows,
            *(
                tuple(a + b for a, b in zip(mine, theirs, strict=True))
                for mine, theirs in (
                    (self.count, other.count),
                    (self.total, other.total),
                    (self.sum_of_squares, other.sum_of_squares),
                    (self.histogram, other.histogram),
                )
            ),
        )


def column_sums(
    features: npt.NDArray[np.floating], schema: TabularSchema | None = None
) -> ColumnSums:
    """A site's contribution, over its recorded values only (a missing value is NaN); with the
    ``schema``, the histograms of its median-imputed columns too."""
    recorded = ~np.isnan(features)
    values = np.where(recorded, features, 0.0).astype(np.float64)
    histogram: list[float] = []
    if schema is not None:
        for column, start in median_columns(schema):
            histogram += [float(c) for c in median_histogram(column, features[:, start])]
    return ColumnSums(
        int(features.shape[0]),
        tuple(float(c) for c in recorded.sum(axis=0)),
        tuple(float(t) for t in values.sum(axis=0)),
        tuple(float(q) for q in (values**2).sum(axis=0)),
        tuple(histogram),
    )


def median_columns(schema: TabularSchema) -> list[tuple[Column, int]]:
    """Each column imputed by its median, with its index among the encoded columns."""
    found, start = [], 0
    for column, width in _blocks(schema):
        if column.impute == "median":
            found.append((column, start))
        start += width
    return found


def median_histogram(column: Column, values: npt.NDArray[np.floating]) -> npt.NDArray[np.int64]:
    """Counts of the recorded ``values`` in :data:`MEDIAN_BINS` equal bins over the declared
    range (a value outside it counts in the nearest end bin)."""
    assert column.minimum is not None and column.maximum is not None
    lo, hi = column.minimum, column.maximum
    recorded = np.clip(values[~np.isnan(values)].astype(np.float64), lo, hi)
    width = (hi - lo) / MEDIAN_BINS if hi > lo else 1.0
    index = np.minimum(((recorded - lo) / width).astype(np.int64), MEDIAN_BINS - 1)
    return np.bincount(index, minlength=MEDIAN_BINS)


def histogram_median(column: Column, counts: npt.NDArray[np.floating]) -> float:
    """The median of a summed :func:`median_histogram`, linearly interpolated within its bin
    (negative noised counts read as 0)."""
    assert column.minimum is not None and column.maximum is not None
    lo, hi = column.minimum, column.maximum
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 0.0)
    total = float(counts.sum())
    if total <= 0.0:
        return (lo + hi) / 2.0
    cumulative = np.cumsum(counts)
    k = int(np.searchsorted(cumulative, total / 2.0))
    below = float(cumulative[k - 1]) if k > 0 else 0.0
    inside = (total / 2.0 - below) / float(counts[k]) if counts[k] > 0 else 0.5
    width = (hi - lo) / MEDIAN_BINS
    return lo + (k + inside) * width


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
    # Regression targets: per label column, the pooled mean and standard deviation the model's
    # targets are standardized by (core.dataset.TargetScaling); empty: not standardized.
    label_center: tuple[float, ...] = ()
    label_scale: tuple[float, ...] = ()

    @classmethod
    def fit(
        cls,
        schema: TabularSchema,
        sums: ColumnSums,
        *,
        noised: bool = False,
        indicate_all: bool = False,
    ) -> FittedPreprocessing:
        """The pooled imputer and scaler, from the consortium's summed :class:`ColumnSums`.

        ``noised``: the sums carry DP noise, so a count is read as at least 1, a mean is kept
        in the declared range, a spread at most its half-width (the declared half-width where
        noise leaves no positive variance), and every imputing column gets its indicator (where
        values were missing cannot be read off noised counts). ``indicate_all``: so does a fit
        whose width must be known before any data (:func:`fitted_width`)."""
        blocks = _blocks(schema)
        if len(sums.count) != sum(width for _, width in blocks):
            raise DataError(
                f"the sites' statistics cover {len(sums.count)} columns; the schema encodes "
                f"{sum(width for _, width in blocks)}"
            )
        count, total, squares = (
            np.asarray(a, dtype=np.float64) for a in (sums.count, sums.total, sums.sum_of_squares)
        )
        if noised:
            count = np.maximum(count, 1.0)
        medians = _medians(schema, sums)
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
                mean, spread = _mean_and_spread(column, n[0], s[0], q[0], noised)
                fill.append(medians.get(start, mean))
                center.append(mean)
                scale.append(spread)
            if column.impute != "none" and (noised or indicate_all or n[0] < sums.rows):
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
            "federated DP sums" if noised else "federated sums",
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

    @property
    def target_scaling(self) -> TargetScaling | None:
        """How the regression targets are standardized, if they are."""
        if not self.label_center:
            return None
        return TargetScaling(self.label_center, self.label_scale)

    def with_targets(self, targets: TargetScaling | None) -> FittedPreprocessing:
        """This fit with the regression targets' scaling (``None``: not standardized)."""
        if targets is None:
            return dataclasses.replace(self, label_center=(), label_scale=())
        center = tuple(float(v) for v in targets.center)
        return dataclasses.replace(
            self, label_center=center, label_scale=tuple(float(v) for v in targets.scale)
        )

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

    def to_json(self) -> str:
        """Canonical JSON (with its format version): what the digest covers, and what the
        coordinator sends a deployed site (:class:`~fedpharma.core.protocol.PreprocessingTask`)."""
        fields = serde.to_dict(self)
        if not self.label_center:  # as version 2 wrote it: the same fit keeps its digest
            fields = {k: v for k, v in fields.items() if k not in ("label_center", "label_scale")}
        version = FIT_VERSION if self.label_center else 2
        document = {"version": version, **fields}
        return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str, schema: TabularSchema) -> FittedPreprocessing:
        """A fit received from the network, checked against this site's ``schema``; raises
        :class:`DataError` naming what does not fit."""
        try:
            raw = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise DataError("the fitted preprocessing received is not valid JSON") from exc
        version = raw.pop("version", None) if isinstance(raw, dict) else None
        if not isinstance(raw, dict) or version not in _READABLE_VERSIONS:
            raise DataError(
                "the fitted preprocessing received is not of version "
                f"{' or '.join(str(v) for v in _READABLE_VERSIONS)}"
            )
        if version == 2 and ("label_center" in raw or "label_scale" in raw):
            raise DataError("the fitted preprocessing received (version 2) scales no targets")
        fitted, problems = serde.from_dict(cls, raw, "fitted preprocessing")
        if fitted is not None:
            problems += fitted._problems(schema)
        if problems or fitted is None:
            why = "; ".join(problems)
            raise DataError(f"the fitted preprocessing received does not fit: {why}")
        return fitted

    def _problems(self, schema: TabularSchema) -> list[str]:
        width = len(self.feature_names)
        problems = []
        if self.feature_names != schema.feature_names:
            problems.append("its feature columns differ from this site's declared schema")
        if not len(self.fill) == len(self.center) == len(self.scale) == width:
            problems.append("its fill, center and scale do not cover every feature column")
        if any(not np.isfinite(v) for v in (*self.fill, *self.center, *self.scale)):
            problems.append("it holds a non-finite number")
        if any(v <= 0 for v in self.scale):
            problems.append("a scale is not positive")
        if len(self.indicators) != len(self.indicator_names) or any(
            not 0 <= i < width for i in self.indicators
        ):
            problems.append("its missingness indicators do not name feature columns")
        targets = (*self.label_center, *self.label_scale)
        if self.label_center and (
            len(self.label_center) != len(schema.label_columns)
            or len(self.label_scale) != len(self.label_center)
            or not all(np.isfinite(v) for v in targets)
            or any(v <= 0 for v in self.label_scale)
        ):
            problems.append(
                "its target scaling needs a finite center and a positive scale per label column"
            )
        return problems

    def digest(self) -> str:
        """SHA-256 (hex) of the fit's canonical JSON, for the run's recipe and audit trail."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()


def fitted_width(schema: TabularSchema) -> int:
    """The model's input width under a fit that indicates every imputing column (a deployed
    run's, :meth:`FittedPreprocessing.fit` with ``indicate_all``): known from the schema."""
    return len(schema.feature_names) + sum(c.impute != "none" for c in schema.feature_columns)


def pooled_target_scaling(
    count: npt.NDArray[np.floating],
    total: npt.NDArray[np.floating],
    squares: npt.NDArray[np.floating],
) -> TargetScaling | None:
    """The pooled label mean and population standard deviation per task from the summed label
    counts, sums and sums of squares (:mod:`fedpharma.server.label_statistics`), as scikit-learn's
    ``StandardScaler`` fits them on the pooled labels (a task with no spread is scaled by 1);
    ``None`` where a task has no label anywhere."""
    n, s, q = (np.asarray(a, dtype=np.float64) for a in (count, total, squares))
    if n.size == 0 or np.any(n <= 0) or not np.isfinite([*s, *q]).all():
        return None
    mean = s / n
    variance = q / n - mean**2
    std = np.where(variance > 0.0, np.sqrt(np.maximum(variance, 0.0)), 1.0)
    return TargetScaling(tuple(float(v) for v in mean), tuple(float(v) for v in std))


def declared_target_scaling(schema: TabularSchema) -> TargetScaling | None:
    """From the schema alone (public, costs no privacy): each label column centred on the
    midpoint of its declared range and scaled by its half-width; ``None`` unless every label
    column declares a range."""
    by_name = {c.name: c for c in schema.columns}
    center: list[float] = []
    scale: list[float] = []
    for name in schema.label_columns:
        lo, hi = by_name[name].minimum, by_name[name].maximum
        if lo is None or hi is None or hi <= lo:
            return None
        center.append((lo + hi) / 2.0)
        scale.append((hi - lo) / 2.0)
    return TargetScaling(tuple(center), tuple(scale))


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def _mean_and_spread(
    column: Column, n: float, total: float, squares: float, noised: bool
) -> tuple[float, float]:
    """Mean and population standard deviation (1 where there is no spread)."""
    mean = total / n
    variance = squares / n - mean**2
    lo, hi = column.minimum, column.maximum
    if noised and lo is not None and hi is not None:
        mean = min(max(mean, lo), hi)
        half = (hi - lo) / 2.0
        variance = min(squares / n - mean**2, half**2)
        if variance <= 0.0:
            return mean, half if half > 0.0 else 1.0
    return mean, float(np.sqrt(variance)) if variance > 0.0 else 1.0


def _medians(schema: TabularSchema, sums: ColumnSums) -> dict[int, float]:
    """Each median-imputed column's median (by encoded index), from the summed histograms."""
    found = median_columns(schema)
    if len(sums.histogram) != MEDIAN_BINS * len(found):
        raise DataError(
            f"the sites' statistics hold {len(sums.histogram)} histogram counts; the schema's "
            f"{len(found)} median-imputed column(s) need {MEDIAN_BINS * len(found)}"
        )
    histogram = np.asarray(sums.histogram, dtype=np.float64).reshape(len(found), MEDIAN_BINS)
    return {
        start: histogram_median(column, counts)
        for (column, start), counts in zip(found, histogram, strict=True)
    }


def _blocks(schema: TabularSchema) -> list[tuple[Column, int]]:
    """Each feature column and how many encoded columns it becomes."""
    return [
        (column, len(column.categories) if column.type == "category" else 1)
        for column in schema.feature_columns
    ]
