"""The declared schema: its file, missing-value codes, integer codes as categories, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedpharma.core.config import DatasetConfig, FeaturesConfig
from fedpharma.core.errors import ConfigError, DataError
from fedpharma.data.datasets import load_dataset, resolve_schema
from fedpharma.data.schema import load_schema, schema_beside, schema_toml
from fedpharma.data.tabular import (
    Column,
    TabularSchema,
    check_same_schema,
    infer_schema,
    read_tabular,
)

TRIAL = """id,age,creatinine,grade,hospital,outcome
1,61,1.2,1,north,1
2,45,?,2,north,0
3,70,0,3,south,1
4,52,0,1,south,0
"""

SCHEMA_TEXT = """
[[columns]]
name = "id"
role = "drop"

[[columns]]
name = "age"
type = "int"
units = "years"
min = 18
max = 110

[[columns]]
name = "creatinine"
type = "float"
units = "mg/dL"
missing = ["?", "0"]
impute = "mean"

[[columns]]
name = "grade"
type = "category"
categories = ["1", "2", "3"]

[[columns]]
name = "hospital"
type = "category"
role = "site"
categories = ["north", "south"]

[[columns]]
name = "outcome"
type = "int"
role = "label"
"""


def write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_schema_file_declares_types_units_ranges_codes_and_roles(tmp_path: Path) -> None:
    schema = load_schema(write(tmp_path, SCHEMA_TEXT, "trial.schema.toml"))
    assert schema.label_columns == ("outcome",) and schema.site_column == "hospital"
    assert schema.drop_columns == ("id",)
    creatinine = schema.columns[1]
    assert creatinine.units == "mg/dL" and creatinine.missing == ("?", "0")
    assert schema.columns[0].minimum == 18 and schema.columns[0].maximum == 110
    # integer codes declared categorical are one-hot, in the declared order
    assert schema.feature_names == ("age", "creatinine", "grade=1", "grade=2", "grade=3")
    # what schema_toml writes reads back to the same schema
    again = load_schema(write(tmp_path, schema_toml(schema), "again.schema.toml"))
    assert again == schema


def test_declared_missing_codes_are_missing_and_never_encoded(tmp_path: Path) -> None:
    schema = load_schema(write(tmp_path, SCHEMA_TEXT, "trial.schema.toml"))
    dataset = read_tabular(write(tmp_path, TRIAL, "trial.csv"), schema, "classification")
    creatinine = dataset.features[:, 1]
    assert creatinine[0] == pytest.approx(1.2) and np.isnan(creatinine[1:]).all()
    np.testing.assert_array_equal(dataset.features[:, 2:], np.eye(3)[[0, 1, 2, 0]])
    assert dataset.group_names == ("north", "south")
    # the twin without the codes: "0" is a value, "?" a malformed number
    plain = TabularSchema(
        tuple(
            c if c.name != "creatinine" else Column("creatinine", "float") for c in schema.columns
        ),
        schema.label_columns,
        schema.site_column,
    )
    with pytest.raises(DataError, match="'creatinine' \\(float\\) has 1 rows that are not"):
        read_tabular(write(tmp_path, TRIAL, "trial.csv"), plain, "classification")


def test_missing_cells_without_imputation_are_refused_naming_what_to_declare(
    tmp_path: Path,
) -> None:
    schema = load_schema(
        write(tmp_path, SCHEMA_TEXT.replace('impute = "mean"\n', ""), "s.schema.toml")
    )
    with pytest.raises(DataError, match=r"'creatinine' has 3 rows with missing .* impute"):
        read_tabular(write(tmp_path, TRIAL, "trial.csv"), schema, "classification")


def test_a_question_mark_keeps_a_numeric_column_numeric(tmp_path: Path) -> None:
    schema = infer_schema(write(tmp_path, TRIAL, "trial.csv"), ["outcome"], "hospital")
    creatinine = {c.name: c for c in schema.columns}["creatinine"]
    assert creatinine.type == "float" and creatinine.missing == ("?",)
    assert creatinine.impute == "mean"
    assert "creatinine=?" not in schema.feature_names and "creatinine" in schema.feature_names


def test_an_outcome_coded_0_to_4_is_refused_as_binary_naming_the_column(tmp_path: Path) -> None:
    text = TRIAL.replace("north,1\n", "north,4\n").replace("south,1\n", "south,3\n")
    path = write(tmp_path, text, "trial.csv")
    schema = infer_schema(path, ["outcome"], "hospital")
    with pytest.raises(DataError, match="label column 'outcome' holds 3 distinct values"):
        read_tabular(path, schema, "classification")
    assert read_tabular(path, schema, "regression").labels[:, 0].tolist() == [4, 0, 3, 0]


def test_schema_file_typos_get_did_you_mean_and_bad_columns_are_named(tmp_path: Path) -> None:
    typo = SCHEMA_TEXT.replace('units = "years"', 'unit = "years"')
    with pytest.raises(ConfigError, match="did you mean 'units'"):
        load_schema(write(tmp_path, typo, "typo.schema.toml"))
    wrong = SCHEMA_TEXT.replace('type = "int"\nunits', 'type = "bool"\nunits')
    with pytest.raises(ConfigError, match="'age': only a numeric column has a plausible range"):
        load_schema(write(tmp_path, wrong, "wrong.schema.toml"))


def test_a_run_finds_the_schema_beside_the_data_and_checks_the_roles(tmp_path: Path) -> None:
    data = write(tmp_path, TRIAL, "trial.csv")
    config = DatasetConfig(
        path=str(data), kind="tabular", label_columns=("outcome",), task="classification"
    )
    assert resolve_schema(config)[1] is None  # nothing declared: inferred
    write(tmp_path, SCHEMA_TEXT, schema_beside(data).name)
    schema, declared = resolve_schema(config)
    assert declared == schema_beside(data) and schema.drop_columns == ("id",)
    dataset, _ = load_dataset(config, FeaturesConfig())
    assert "id" not in dataset.feature_names
    other = DatasetConfig(
        path=str(data), kind="tabular", label_columns=("age",), task="classification"
    )
    with pytest.raises(ConfigError, match="label_columns = \\['age'\\] but the schema's labels"):
        resolve_schema(other)


def test_sites_declaring_a_column_differently_are_told_which() -> None:
    ours = TabularSchema((Column("crp", "float", missing=("0",), impute="mean"),), ("crp",))
    theirs = TabularSchema((Column("crp", "float"),), ("crp",))
    check_same_schema(ours, ours, "a", "b")
    with pytest.raises(DataError, match="column 'crp' is declared differently"):
        check_same_schema(ours, theirs, "a", "b")
