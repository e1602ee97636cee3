"""Tabular data: CSV files read against a declared schema, identically at every site.

A federated model only makes sense if every site turns its records into the same feature
columns in the same order. The :class:`TabularSchema` fixes column names, types and — for
categorical columns — the category order of the one-hot encoding, so a category that one site
never observes still gets its (all-zero) column. Infer the schema once (:func:`infer_schema`),
share it, and have every site read with it; :func:`check_same_schema` turns a mismatch into an
error that names the columns.

Numeric columns are *not* standardized here: scaling statistics are a modelling decision, and
per-site statistics would encode the same value differently at different sites.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from fedpharma.core.dataset import Dataset, Objective
from fedpharma.core.errors import DataError

ColumnType = Literal["float", "int", "category", "bool"]
COLUMN_TYPES: tuple[str, ...] = get_args(ColumnType)

TRUE_TOKENS = frozenset({"true", "yes", "1"})
FALSE_TOKENS = frozenset({"false", "no", "0"})


@dataclass(frozen=True)
class Column:
    """One CSV column: its name, type and, for a categorical column, its ordered categories."""

    name: str
    type: ColumnType
    categories: tuple[str, ...] = ()

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


@dataclass(frozen=True)
class TabularSchema:
    """Columns of a tabular dataset; which are labels; which (optionally) names each row's site.

    Every column that is neither a label nor the site column is a feature. Label columns must be
    numeric or bool (encode a categorical outcome as 0/1); empty label cells mean "missing".
    """

    columns: tuple[Column, ...]
    label_columns: tuple[str, ...]
    site_column: str | None = None

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

    Empty cells are ignored when guessing. Infer at one place and share the result: sites that
    infer separately may see different categories, which :func:`check_same_schema` reports.
    """
    header, rows = read_csv_columns(path)
    require_columns(header, [*label_columns, *([site_column] if site_column else [])], str(path))
    columns = []
    for j, name in enumerate(header):
        present = [row[j] for row in rows if row[j]]
        if name == site_column:
            columns.append(Column(name, "category", tuple(sorted(set(present)))))
        else:
            columns.append(_infer_column(name, present))
    return TabularSchema(tuple(columns), tuple(label_columns), site_column)


def _infer_column(name: str, present: list[str]) -> Column:
    lowered = {v.lower() for v in present}
    if lowered and lowered <= {"true", "false", "yes", "no"}:
        return Column(name, "bool")
    if all(_parses(int, v) for v in present):
        return Column(name, "int")
    if all(_parses(float, v) for v in present):
        return Column(name, "float")
    return Column(name, "category", tuple(sorted(set(present))))


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
    schema's category order. Labels: empty cells → NaN. Groups: index of the row's site value
    among the site column's declared categories, or 0 for every row without a site column.
    Columns in the file but not in the schema are ignored. Error messages give columns and
    row numbers, never cell values.
    """
    header, rows = read_csv_columns(path)
    require_columns(header, [c.name for c in schema.columns], str(path))
    index = {n: header.index(n) for n in header}

    def cells(column: Column) -> list[str]:
        return [row[index[column.name]] for row in rows]

    blocks: list[npt.NDArray[np.float32]] = []
    for column in schema.feature_columns:
        values = cells(column)
        missing = [i for i, v in enumerate(values) if not v]
        if missing:
            raise DataError(
                f"{path}: column {column.name!r} has {len(missing)} rows with missing values "
                f"(first: data row {missing[0]}); impute or drop them before federating"
            )
        if column.type == "category":
            blocks.append(_one_hot(column, values, str(path)))
        else:
            blocks.append(_numeric(column, values, str(path))[:, None])

    declared = {c.name: c for c in schema.columns}
    labels = np.stack(
        [_numeric(declared[n], cells(declared[n]), str(path)) for n in schema.label_columns],
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
    )


def _numeric(column: Column, values: list[str], source: str) -> npt.NDArray[np.float32]:
    """Numeric or bool cells as float32; empty cells → NaN (only labels may be empty)."""
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


def _category_codes(column: Column, values: list[str], source: str) -> npt.NDArray[np.intp]:
    position = {category: k for k, category in enumerate(column.categories)}
    codes = np.asarray([position.get(v, -1) for v in values], dtype=np.intp)
    unknown = np.flatnonzero(codes < 0)
    if unknown.size:
        raise DataError(
            f"{source}: column {column.name!r} has {unknown.size} rows with a value not among "
            f"its {len(column.categories)} declared categories (first: data row {unknown[0]})"
        )
    return codes


def _one_hot(column: Column, values: list[str], source: str) -> npt.NDArray[np.float32]:
    codes = _category_codes(column, values, source)
    encoded = np.zeros((len(values), len(column.categories)), dtype=np.float32)
    encoded[np.arange(len(values)), codes] = 1.0
    return encoded
