"""The declared schema of a tabular dataset as a TOML file, and where a run finds it.

One ``[[columns]]`` table per CSV column, in file order::

    [[columns]]
    name = "creatinine"
    type = "float"            # float | int (numeric), category, bool (binary)
    role = "feature"          # feature | label | site | drop (e.g. a record id)
    units = "mg/dL"
    min = 0.1                 # plausible range, checked at join, never clipped
    max = 20.0
    missing = ["0", "?"]      # cell texts that mean "not recorded"
    impute = "mean"           # none | mean | median | most_frequent

A run reads ``[dataset] schema``, else ``NAME.schema.toml`` beside the data file ``NAME.csv``;
without either it infers one (:func:`fedpharma.data.tabular.infer_schema`) and says so, and
``fedpharma schema infer`` saves the inferred one as a starting point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from fedpharma.core import serde
from fedpharma.core.config import read_toml
from fedpharma.core.errors import ConfigError, DataError
from fedpharma.data.tabular import Column, ColumnType, Imputation, TabularSchema

Role = Literal["feature", "label", "site", "drop"]
SCHEMA_SUFFIX = ".schema.toml"


@dataclass(frozen=True)
class ColumnEntry:
    """One ``[[columns]]`` table (see the module docstring)."""

    name: str
    type: ColumnType = "float"
    role: Role = "feature"
    categories: tuple[str, ...] = ()
    units: str = ""
    minimum: float | None = field(default=None, metadata={"key": "min"})
    maximum: float | None = field(default=None, metadata={"key": "max"})
    missing: tuple[str, ...] = ()
    impute: Imputation = "none"


@dataclass(frozen=True)
class SchemaFile:
    columns: tuple[ColumnEntry, ...]


def load_schema(path: str | Path) -> TabularSchema:
    """Read a schema file; a :class:`ConfigError` lists every problem, with "did you mean"."""
    p = Path(path)
    document = serde.load(SchemaFile, read_toml(p), source=str(p))
    problems: list[str] = []
    columns: list[Column] = []
    for entry in document.columns:
        if entry.role == "drop":
            continue
        try:
            columns.append(
                Column(
                    entry.name,
                    entry.type,
                    entry.categories,
                    entry.units,
                    entry.minimum,
                    entry.maximum,
                    entry.missing,
                    entry.impute,
                )
            )
        except DataError as exc:
            problems.append(str(exc))
    roles = {role: [e.name for e in document.columns if e.role == role] for role in get_args(Role)}
    if len(roles["site"]) > 1:
        problems.append(f'only one column can have role = "site": {", ".join(roles["site"])}')
    if problems:
        raise ConfigError(problems, str(p))
    try:
        return TabularSchema(
            tuple(columns),
            tuple(roles["label"]),
            roles["site"][0] if roles["site"] else None,
            tuple(roles["drop"]),
        )
    except DataError as exc:
        raise ConfigError([str(exc)], str(p)) from exc


def schema_toml(schema: TabularSchema) -> str:
    """The schema as a file :func:`load_schema` reads back to an equal schema."""
    lines = ["# Declared schema of a tabular dataset (fedpharma.data.schema); check and edit it."]
    for column in schema.columns:
        role = (
            "label"
            if column.name in schema.label_columns
            else "site"
            if column.name == schema.site_column
            else "feature"
        )
        lines += ["", "[[columns]]", f"name = {_text(column.name)}", f'type = "{column.type}"']
        lines.append(f'role = "{role}"')
        if column.categories:
            lines.append(f"categories = [{', '.join(_text(c) for c in column.categories)}]")
        if column.units:
            lines.append(f"units = {_text(column.units)}")
        for key, bound in (("min", column.minimum), ("max", column.maximum)):
            if bound is not None:
                lines.append(f"{key} = {bound!r}")
        if column.missing:
            lines.append(f"missing = [{', '.join(_text(c) for c in column.missing)}]")
        if column.impute != "none":
            lines.append(f'impute = "{column.impute}"')
    for name in schema.drop_columns:
        lines += ["", "[[columns]]", f"name = {_text(name)}", 'role = "drop"']
    return "\n".join(lines) + "\n"


def schema_beside(data_path: str | Path) -> Path:
    """``NAME.schema.toml`` beside ``NAME.csv`` (or ``NAME.csv.gz``)."""
    p = Path(data_path)
    return p.with_name(p.name.split(".")[0] + SCHEMA_SUFFIX)


def check_roles(
    schema: TabularSchema, label_columns: tuple[str, ...], site_column: str | None, source: str
) -> None:
    """A declared schema and the run config must agree on the label and site columns."""
    problems = []
    if label_columns and tuple(label_columns) != schema.label_columns:
        problems.append(
            f"[dataset] label_columns = {list(label_columns)} but the schema's labels are "
            f"{list(schema.label_columns)}"
        )
    if site_column is not None and site_column != schema.site_column:
        problems.append(
            f"[dataset] site_column = {site_column!r} but the schema's site column is "
            f"{schema.site_column!r}"
        )
    if problems:
        raise ConfigError(problems, source)


def _text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string is a JSON string
