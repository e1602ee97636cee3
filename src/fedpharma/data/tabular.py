"""Tabular data: CSV files read against a declared schema, identically at every site.

A federated model only makes sense if every site turns its records into the same feature
columns in the same order. The :class:`TabularSchema` fixes column names, types and — for
categorical columns — the category order of the one-hot encoding, so a category that one site
never observes still gets its (all-zero) column. Infer the schema once (:func:`infer_schema`),
share it, and have every site read with it; :func:`check_same_schema` turns a mismatch into an
error that names the columns.

A column may declare units, a plausible range, missing-value codes (cells such as ``?`` or a
hospital's ``0`` that mean "not recorded") and how to impute them. Declared missing cells are read
as NaN; they are filled, and numeric columns standardized, only by the consortium's federated fit
(:mod:`fedpharma.data.federated_preprocessing`), never by per-site statistics, which would encode
the same value differently at different sites. The schema file: :mod:`fedpharma.data.schema`.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from fedpharma.core.dataset import Dataset, Objective
from fedpharma.core.errors import DataError

ColumnType = Literal["float", "int", "category", "bool"]
COLUMN_TYPES: tuple[str, ...] = get_args(ColumnType)
Imputation = Literal["none", "mean", "median", "most_frequent"]
IMPUTATIONS: tuple[str, ...] = get_args(Imputation)

MISSING_TOKENS = frozenset({"?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", ".", "-"})
"""Cells that schema inference takes for missing-value codes in an otherwise numeric column."""

ID_MIN_ROWS = 20
"""Inference drops a column distinct in every row as a record id only from this many rows on."""

TRUE_TOKENS = frozenset({"true", "yes", "1"})
FALSE_TOKENS = frozenset({"false", "no", "0"})


@dataclass(frozen=True)
class Column:
    """One CSV column: its name, type and, for a categorical column, its ordered categories.

    ``float`` / ``int`` are numeric, ``category`` categorical (an integer code is declared as a
    category whose categories are its codes' text), ``bool`` binary. ``units`` is for people;
    ``minimum`` / ``maximum`` bound the plausible values (checked, never clipped); ``missing``
    lists cell texts that mean "not recorded" (an empty cell always does); ``impute`` says how a
    missing feature is filled: ``none`` refuses missing cells, ``mean`` or ``median`` (numeric;
    the median from a histogram over the declared range, so it needs one) or ``most_frequent``
    (categorical, binary) fills from the federated fit and adds a missingness indicator.
    """

    name: str
    type: ColumnType
    categories: tuple[str, ...] = ()
    units: str = ""
    minimum: float | None = None
    maximum: float | None = None
    missing: tuple[str, ...] = ()
    impute: Imputation = "none"

    def __post_init__(self) -> None:
        if self.type not in COLUMN_TYPES:
            raise DataError(
                f"column {self.name!r}: type {self.type!r} is not one of {', '.join(COLUMN_TYPES)}"
            )
        if self.type == "category" and not self.categories:
            raise DataError(f"categorical column {self.name!r} must declare its categories")
        if self.type != "category" and self.categories:
            raise DataError(f"column {self.name!r} of type {self.type!r} cannot have categories")
        if len(set(self.categories)) != len(self.categories):
            raise DataError(f"categorical column {self.name!r} declares a category twice")
        if self.impute not in IMPUTATIONS:
            raise DataError(
                f"column {self.name!r}: impute {self.impute!r} is not one of "
                f"{', '.join(IMPUTATIONS)}"
            )
        numeric = self.type in ("float", "int")
        if self.impute in ("mean", "median") and not numeric:
            raise DataError(
                f'column {self.name!r} ({self.type}): impute = "{self.impute}" needs a numeric '
                'column; use "most_frequent"'
            )
        if self.impute == "median" and (self.minimum is None or self.maximum is None):
            raise DataError(
                f'column {self.name!r}: impute = "median" is read off a histogram over the '
                "declared plausible range; declare min and max for the column"
            )
        if self.impute == "most_frequent" and numeric:
            raise DataError(
                f'column {self.name!r} ({self.type}): impute = "most_frequent" is for '
                'categorical and binary columns; use "mean" or "median"'
            )
        if (self.minimum is not None or self.maximum is not None) and not numeric:
            raise DataError(f"column {self.name!r}: only a numeric column has a plausible range")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise DataError(f"column {self.name!r}: minimum exceeds maximum")
        clash = sorted(set(self.missing) & set(self.categories))
        if clash:
            raise DataError(
                f"column {self.name!r}: {len(clash)} missing-value code(s) are also categories"
            )

    def is_missing(self, text: str) -> bool:
        """Whether a cell means "not recorded": empty, or one of the declared codes."""
        return not text or text in self.missing


@dataclass(frozen=True)
class TabularSchema:
    """Columns of a tabular dataset; which are labels; which (optionally) names each row's site.

    Every column that is neither a label nor the site column is a feature. Label columns must be
    numeric or bool (encode a categorical outcome as 0/1); empty label cells mean "missing".
    """

    columns: tuple[Column, ...]
    label_columns: tuple[str, ...]
    site_column: str | None = None
    drop_columns: tuple[str, ...] = ()  # e.g. record ids: in the file, never read

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise DataError(f"schema lists columns more than once: {', '.join(duplicated)}")
        undeclared = [n for n in (*self.label_columns, self.site_column) if n and n not in names]
        if undeclared:
            raise DataError(f"schema does not declare columns: {', '.join(undeclared)}")
        if not self.label_columns:
            raise DataError("schema needs at least one label column")
        categorical_labels = [
            c.name for c in self.columns if c.name in self.label_columns and c.type == "category"
        ]
        if categorical_labels:
            raise DataError(
                f"label columns must be numeric or bool, not categorical: "
                f"{', '.join(categorical_labels)} (encode the outcome as 0/1)"
            )
        if self.site_column in self.label_columns:
            raise DataError(f"column {self.site_column!r} cannot be both a label and the site")
        dropped = sorted(set(self.drop_columns) & set(names))
        if dropped:
            raise DataError(f"dropped columns cannot also be declared: {', '.join(dropped)}")

    @property
    def feature_columns(self) -> tuple[Column, ...]:
        not_features = {*self.label_columns, self.site_column}
        return tuple(c for c in self.columns if c.name not in not_features)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the encoded feature columns; a categorical column gives ``name=category``."""
        names: list[str] = []
        for column in self.feature_columns:
            if column.type == "category":
                names += [f"{column.name}={category}" for category in column.categories]
            else:
                names.append(column.name)
        return tuple(names)


def check_same_schema(a: TabularSchema, b: TabularSchema, site_a: str, site_b: str) -> None:
    """Raise :class:`DataError` naming every column on which two sites' schemas differ."""
    columns_a = {c.name: c for c in a.columns}
    columns_b = {c.name: c for c in b.columns}
    problems: list[str] = []
    only_a = [n for n in columns_a if n not in columns_b]
    only_b = [n for n in columns_b if n not in columns_a]
    if only_a:
        problems.append(f"only {site_a} has columns: {', '.join(only_a)}")
    if only_b:
        problems.append(f"only {site_b} has columns: {', '.join(only_b)}")
    for name, column_a in columns_a.items():
        column_b = columns_b.get(name)
        if column_b is None:
            continue
        if column_a.type != column_b.type:
            problems.append(
                f"column {name!r} is {column_a.type} at {site_a} but {column_b.type} at {site_b}"
            )
        elif column_a.categories != column_b.categories:
            problems.append(f"column {name!r} has different categories (or order)")
        elif column_a != column_b:
            problems.append(
                f"column {name!r} is declared differently (units, range, missing codes or "
                "imputation)"
            )
    if columns_a.keys() == columns_b.keys() and list(columns_a) != list(columns_b):
        problems.append("the columns are in a different order")
    if a.label_columns != b.label_columns:
        problems.append(
            f"label columns differ: {', '.join(a.label_columns)} at {site_a}, "
            f"{', '.join(b.label_columns)} at {site_b}"
        )
    if a.site_column != b.site_column:
        problems.append(f"site column differs: {a.site_column!r} vs {b.site_column!r}")
    if problems:
        raise DataError(f"schemas of {site_a} and {site_b} differ: " + "; ".join(problems))


def read_csv_columns(path: str | os.PathLike[str]) -> tuple[list[str], list[list[str]]]:
    """Header and data rows of a CSV file (``.csv`` or ``.csv.gz``), cells stripped."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {p} does not exist")
    try:
        with (
            gzip.open(p, "rt", encoding="utf-8", newline="")
            if p.name.endswith(".gz")
            else open(p, encoding="utf-8", newline="")
        ) as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            rows = [[cell.strip() for cell in row] for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV file {p}: {exc}") from exc
    if not header:
        raise DataError(f"CSV file {p} is empty (no header row)")
    short = [i for i, row in enumerate(rows) if len(row) != len(header)]
    if short:
        raise DataError(
            f"CSV file {p}: {len(short)} rows do not have {len(header)} cells "
            f"(first: data row {short[0]})"
        )
    return header, rows


def require_columns(header: Sequence[str], wanted: Sequence[str], source: str) -> None:
    """Raise :class:`DataError` listing the missing columns and the columns present."""
    missing = [name for name in wanted if name not in header]
    if missing:
        raise DataError(
            f"{source} lacks columns: {', '.join(missing)}; columns present: {', '.join(header)}"
        )


def infer_schema(
    path: str | os.PathLike[str], label_columns: Sequence[str], site_column: str | None = None
) -> TabularSchema:
    """Guess a schema from a CSV file: bool, int, float, or else categorical (sorted categories).

    A numeric column whose only other cells are :data:`MISSING_TOKENS` (``?``, ``NA``, ...) stays
    numeric with those as missing-value codes, rather than turning into one-hot columns. A
    feature column with missing cells is imputed (mean, or most frequent). A column distinct in
    every row that is named like a record id, or is not numeric, is dropped (role ``drop``).
    Infer at one place, check and share the result (:func:`fedpharma.data.schema.schema_toml`):
    sites that infer separately may see different categories (:func:`check_same_schema`).
    """
    header, rows = read_csv_columns(path)
    require_columns(header, [*label_columns, *([site_column] if site_column else [])], str(path))
    columns, dropped = [], []
    for j, name in enumerate(header):
        cells = [row[j] for row in rows]
        if name == site_column:
            columns.append(Column(name, "category", tuple(sorted({v for v in cells if v}))))
        elif name not in label_columns and _looks_like_an_id(name, cells):
            dropped.append(name)
        else:
            columns.append(_infer_column(name, cells, feature=name not in label_columns))
    return TabularSchema(tuple(columns), tuple(label_columns), site_column, tuple(dropped))


def _looks_like_an_id(name: str, cells: list[str]) -> bool:
    """A record identifier: distinct in every row, and named like one or not a number."""
    if len(cells) < ID_MIN_ROWS or len(set(cells)) < len(cells):
        return False
    named = re.search(r"(^|_)(id|record|patient|mrn)($|_)", name.lower()) is not None
    return named or not all(_parses(float, v) for v in cells)


def _infer_column(name: str, cells: list[str], *, feature: bool) -> Column:
    present = [v for v in cells if v]
    codes = tuple(sorted({v for v in present if v in MISSING_TOKENS}))
    values = [v for v in present if v not in MISSING_TOKENS]
    missing = len(values) < len(cells)
    lowered = {v.lower() for v in values}
    column: Column
    if lowered and lowered <= {"true", "false", "yes", "no"}:
        column = Column(name, "bool", missing=codes)
    elif values and all(_parses(int, v) for v in values):
        column = Column(name, "int", missing=codes)
    elif values and all(_parses(float, v) for v in values):
        column = Column(name, "float", missing=codes)
    else:
        return Column(
            name,
            "category",
            tuple(sorted(set(present))),
            impute="most_frequent" if feature and len(present) < len(cells) else "none",
        )
    if feature and missing:
        return replace(column, impute="most_frequent" if column.type == "bool" else "mean")
    return column


def _parses(kind: type[int] | type[float], text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def read_tabular(
    path: str | os.PathLike[str], schema: TabularSchema, task: Objective, name: str | None = None
) -> Dataset:
    """Read a CSV file with ``schema`` into a :class:`Dataset`.

    Features: numeric and bool columns as they are (bool → 0/1), categoricals one-hot in the
    schema's category order; a missing cell (empty or a declared code) of a column that imputes
    is NaN (every one-hot column of the row, for a categorical), to be filled by the federated
    fit, and an error otherwise. Labels: missing cells → NaN; a classification label must be 0/1.
    Groups: index of the row's site value among the site column's declared categories, or 0 for
    every row without a site column. Columns in the file but not in the schema are ignored.
    Error messages give columns and row numbers, never cell values.
    """
    header, rows = read_csv_columns(path)
    require_columns(header, [c.name for c in schema.columns], str(path))
    index = {n: header.index(n) for n in header}

    def cells(column: Column) -> list[str]:
        return [row[index[column.name]] for row in rows]

    blocks: list[npt.NDArray[np.float32]] = []
    for column in schema.feature_columns:
        values = cells(column)
        missing = np.array([column.is_missing(v) for v in values], dtype=bool)
        if missing.any() and column.impute == "none":
            raise DataError(
                f"{path}: column {column.name!r} has {int(missing.sum())} rows with missing "
                f"values (first: data row {int(np.argmax(missing))}); impute or drop them before "
                'federating, or declare impute = "mean" / "most_frequent" for the column'
            )
        present = ["" if gone else v for v, gone in zip(values, missing, strict=True)]
        if column.type == "category":
            block = _one_hot(column, present, str(path), missing)
        else:
            block = _numeric(column, present, str(path))[:, None]
        block[missing] = np.nan
        blocks.append(block)

    declared = {c.name: c for c in schema.columns}
    labels = np.stack(
        [_label(declared[n], cells(declared[n]), str(path), task) for n in schema.label_columns],
        axis=1,
    )
    if schema.site_column is None:
        groups = np.zeros(len(rows), dtype=np.int64)
    else:
        site = declared[schema.site_column]
        groups = _category_codes(site, cells(site), str(path)).astype(np.int64)

    features = (
        np.concatenate(blocks, axis=1) if blocks else np.zeros((len(rows), 0), dtype=np.float32)
    )
    return Dataset(
        features=features.astype(np.float32),
        labels=labels.astype(np.float32),
        task=task,
        task_names=schema.label_columns,
        groups=groups,
        name=name or Path(path).name.split(".")[0],
        feature_names=schema.feature_names,
        group_names=() if schema.site_column is None else declared[schema.site_column].categories,
    )


def _label(
    column: Column, values: list[str], source: str, task: Objective
) -> npt.NDArray[np.float32]:
    """A label column; for classification only 0/1 (an outcome coded 0–4 is not binary)."""
    labels = _numeric(column, ["" if column.is_missing(v) else v for v in values], source)
    if task == "classification":
        observed = labels[np.isfinite(labels)]
        distinct = np.unique(observed)
        if not np.isin(distinct, (0.0, 1.0)).all():
            raise DataError(
                f"{source}: label column {column.name!r} holds {distinct.size} distinct values, "
                "not only 0 and 1; a classification outcome must be binary: recode it (e.g. "
                '1 where the outcome is present) or set task = "regression"'
            )
    return labels


def _numeric(column: Column, values: list[str], source: str) -> npt.NDArray[np.float32]:
    """Numeric or bool cells as float32; empty cells → NaN."""
    out = np.full(len(values), np.nan, dtype=np.float32)
    bad: list[int] = []
    for i, text in enumerate(values):
        if not text:
            continue
        if column.type == "bool":
            lowered = text.lower()
            if lowered in TRUE_TOKENS or lowered in FALSE_TOKENS:
                out[i] = 1.0 if lowered in TRUE_TOKENS else 0.0
            else:
                bad.append(i)
        else:
            try:
                out[i] = int(text) if column.type == "int" else float(text)
            except ValueError:
                bad.append(i)
    if bad:
        raise DataError(
            f"{source}: column {column.name!r} ({column.type}) has {len(bad)} rows that are not "
            f"a valid {column.type} (first: data row {bad[0]})"
        )
    return out


def _category_codes(
    column: Column,
    values: list[str],
    source: str,
    missing: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.intp]:
    position = {category: k for k, category in enumerate(column.categories)}
    codes = np.asarray([position.get(v, -1) for v in values], dtype=np.intp)
    unknown = np.flatnonzero((codes < 0) & (True if missing is None else ~missing))
    if unknown.size:
        raise DataError(
            f"{source}: column {column.name!r} has {unknown.size} rows with a value not among "
            f"its {len(column.categories)} declared categories (first: data row {unknown[0]})"
        )
    return codes


def _one_hot(
    column: Column, values: list[str], source: str, missing: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float32]:
    codes = _category_codes(column, values, source, missing)
    encoded = np.zeros((len(values), len(column.categories)), dtype=np.float32)
    present = codes >= 0
    encoded[np.flatnonzero(present), codes[present]] = 1.0
    return encoded
