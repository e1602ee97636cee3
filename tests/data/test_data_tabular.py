"""Tabular CSV: schema inference, identical encoding at every site, mismatches named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedpharma.core.errors import DataError
from fedpharma.data.tabular import (
    Column,
    TabularSchema,
    check_same_schema,
    infer_schema,
    read_tabular,
)

SITE_A = """age,smoker,stage,hospital,response
61,yes,II,north,1
45,no,I,north,0
70,yes,III,south,
"""

SCHEMA = TabularSchema(
    columns=(
        Column("age", "int"),
        Column("smoker", "bool"),
        Column("stage", "category", ("I", "II", "III", "IV")),
        Column("hospital", "category", ("north", "south")),
        Column("response", "float"),
    ),
    label_columns=("response",),
    site_column="hospital",
)


def write(tmp_path: Path, text: str, name: str = "site.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_schema_is_inferred_from_a_csv(tmp_path: Path) -> None:
    schema = infer_schema(write(tmp_path, SITE_A), ["response"], site_column="hospital")
    assert schema.columns == (
        Column("age", "int"),
        Column("smoker", "bool"),
        Column("stage", "category", ("I", "II", "III")),
        Column("hospital", "category", ("north", "south")),
        Column("response", "int"),
    )
    assert schema.feature_names == ("age", "smoker", "stage=I", "stage=II", "stage=III")


def test_reading_one_hot_encodes_in_declared_order_and_keeps_missing_labels(
    tmp_path: Path,
) -> None:
    dataset = read_tabular(write(tmp_path, SITE_A), SCHEMA, "classification")
    assert dataset.feature_names == (
        "age",
        "smoker",
        "stage=I",
        "stage=II",
        "stage=III",
        "stage=IV",
    )
    np.testing.assert_array_equal(
        dataset.features,
        np.array([[61, 1, 0, 1, 0, 0], [45, 0, 1, 0, 0, 0], [70, 1, 0, 0, 1, 0]], dtype=np.float32),
    )
    assert dataset.labels[:2, 0].tolist() == [1.0, 0.0]
    assert np.isnan(dataset.labels[2, 0])
    assert dataset.groups.tolist() == [0, 0, 1]
    assert dataset.name == "site"


def test_missing_numeric_values_name_the_column_and_row_count(tmp_path: Path) -> None:
    text = "age,smoker,stage,hospital,response\n,yes,II,north,1\n,no,I,north,0\n"
    with pytest.raises(DataError, match=r"column 'age' has 2 rows with missing values"):
        read_tabular(write(tmp_path, text), SCHEMA, "classification")


def test_undeclared_category_and_malformed_numbers_are_errors_without_values(
    tmp_path: Path,
) -> None:
    unknown_stage = SITE_A.replace("III", "V")
    with pytest.raises(DataError, match="'stage' has 1 rows with a value not among") as error:
        read_tabular(write(tmp_path, unknown_stage), SCHEMA, "classification")
    assert "'V'" not in str(error.value)
    with pytest.raises(DataError, match="'age' \\(int\\) has 1 rows"):
        read_tabular(write(tmp_path, SITE_A.replace("45", "old")), SCHEMA, "classification")


def test_missing_columns_are_listed_with_the_columns_present(tmp_path: Path) -> None:
    text = "age,smoker,response\n61,yes,1\n"
    with pytest.raises(DataError, match="lacks columns: stage, hospital; columns present: age"):
        read_tabular(write(tmp_path, text), SCHEMA, "classification")


def test_schema_mismatch_between_sites_names_the_columns() -> None:
    other = TabularSchema(
        columns=(
            Column("age", "float"),
            Column("smoker", "bool"),
            Column("stage", "category", ("I", "II", "III")),
            Column("hospital", "category", ("north", "south")),
            Column("bmi", "float"),
            Column("response", "float"),
        ),
        label_columns=("response",),
        site_column="hospital",
    )
    check_same_schema(SCHEMA, SCHEMA, "site-a", "site-b")
    with pytest.raises(DataError) as error:
        check_same_schema(SCHEMA, other, "site-a", "site-b")
    message = str(error.value)
    assert "only site-b has columns: bmi" in message
    assert "column 'age' is int at site-a but float at site-b" in message
    assert "column 'stage' has different categories" in message


def test_invalid_schemas_are_rejected() -> None:
    with pytest.raises(DataError, match="must declare its categories"):
        Column("stage", "category")
    with pytest.raises(DataError, match="does not declare columns: outcome"):
        TabularSchema((Column("age", "int"),), label_columns=("outcome",))
    with pytest.raises(DataError, match="not categorical: stage"):
        TabularSchema((Column("stage", "category", ("I",)),), label_columns=("stage",))
