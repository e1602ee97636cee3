"""Loading bundled datasets and files (molecule CSV/SDF, tabular CSV, shared benchmarks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

from fedpharma.core.config import DatasetConfig, FeaturesConfig
from fedpharma.core.errors import DataError
from fedpharma.data.datasets import BUNDLED, load_dataset

SMALL = FeaturesConfig(n_bits=256)
TOX21_TASKS = (
    "NR-AR",
    "NR-AR-LBD",
    "NR-AhR",
    "NR-Aromatase",
    "NR-ER",
    "NR-ER-LBD",
    "NR-PPAR-gamma",
    "SR-ARE",
    "SR-ATAD5",
    "SR-HSE",
    "SR-MMP",
    "SR-p53",
)
ESOL_LABEL = "measured log solubility in mols per litre"


def test_bundled_names_are_described() -> None:
    assert set(BUNDLED) == {"chembl2321810", "breast-cancer"}


def test_chembl2321810_is_a_pic50_regression_with_scaffold_groups() -> None:
    dataset, report = load_dataset(DatasetConfig(name="chembl2321810"), SMALL)
    assert report is not None
    assert 1000 <= len(dataset) <= 1017
    assert report.n_kept == len(dataset)
    assert dataset.task == "regression"
    assert dataset.task_names == ("pIC50",)
    assert dataset.features.shape == (len(dataset), 256)
    assert np.isfinite(dataset.dense_labels()).all()
    assert 3.0 < float(dataset.dense_labels().mean()) < 10.0
    assert 10 < np.unique(dataset.groups).size < len(dataset)


def test_breast_cancer_is_a_binary_classification_of_569_records() -> None:
    dataset, report = load_dataset(DatasetConfig(name="breast-cancer"), SMALL)
    assert report is None
    assert dataset.features.shape == (569, 30)
    assert dataset.task == "classification"
    assert set(np.unique(dataset.labels)) == {0.0, 1.0}
    assert int(dataset.labels.sum()) == 212  # malignant cases
    assert (dataset.groups == 0).all()
    assert len(dataset.feature_names) == 30


def test_unknown_bundled_name_lists_the_bundled_datasets() -> None:
    with pytest.raises(DataError, match="bundled: breast-cancer, chembl2321810"):
        load_dataset(DatasetConfig(name="tox99"), SMALL)


def test_molecule_csv_excludes_and_reports_invalid_and_unlabelled_rows(tmp_path: Path) -> None:
    path = tmp_path / "assay.csv"
    path.write_text(
        "smiles,ic50,herg\n"
        "CCO,5.1,\n"
        "C1CC,6.0,1\n"  # unparsable
        "c1ccccc1O,,\n"  # no label at all
        ",4.0,0\n"  # empty SMILES
        "CC(=O)[O-].[Na+],,1\n",
        encoding="utf-8",
    )
    config = DatasetConfig(path=str(path), label_columns=("ic50", "herg"), task="regression")
    dataset, report = load_dataset(config, SMALL)
    assert report is not None
    assert len(dataset) == 2
    assert report.invalid == ((1, "unparsable"), (3, "empty"))
    assert report.unlabelled == (2,)
    labels = dataset.dense_labels()
    assert np.isnan(labels[0, 1]) and labels[1, 1] == 1.0
    assert dataset.task_names == ("ic50", "herg")
    assert "C1CC" not in report.summary()


def test_missing_columns_are_listed_with_the_columns_present(tmp_path: Path) -> None:
    path = tmp_path / "assay.csv"
    path.write_text("SMILES,pIC50\nCCO,5\n", encoding="utf-8")
    config = DatasetConfig(path=str(path), label_columns=("pic50",), task="regression")
    with pytest.raises(DataError, match="lacks columns: smiles, pic50; columns present: SMILES"):
        load_dataset(config, SMALL)


def test_non_numeric_labels_are_reported_by_column_and_row(tmp_path: Path) -> None:
    path = tmp_path / "assay.csv"
    path.write_text("smiles,y\nCCO,5\nCCN,active\n", encoding="utf-8")
    config = DatasetConfig(path=str(path), label_columns=("y",), task="regression")
    with pytest.raises(DataError, match=r"'y' has 1 non-numeric or infinite values .*data row 2"):
        load_dataset(config, SMALL)


def test_sdf_labels_come_from_sd_properties(tmp_path: Path) -> None:
    path = tmp_path / "actives.sdf"
    writer = Chem.SDWriter(str(path))
    for smiles, value in [("CCO", "1"), ("c1ccccc1O", None), ("CCN", "0")]:
        mol = Chem.MolFromSmiles(smiles)
        if value is not None:
            mol.SetProp("active", value)
        writer.write(mol)
    writer.close()
    config = DatasetConfig(path=str(path), label_columns=("active",), task="classification")
    dataset, report = load_dataset(config, SMALL)
    assert report is not None and report.unlabelled == (1,)
    assert dataset.dense_labels()[:, 0].tolist() == [1.0, 0.0]
    with pytest.raises(DataError, match="lacks SD properties: pIC50; properties present: active"):
        load_dataset(
            DatasetConfig(path=str(path), label_columns=("pIC50",), task="regression"), SMALL
        )


def test_tabular_file_with_a_site_column_gives_site_groups(tmp_path: Path) -> None:
    path = tmp_path / "trial.csv"
    path.write_text("dose,sex,site,outcome\n1.0,f,b,1\n2.0,m,a,0\n0.5,f,b,1\n", encoding="utf-8")
    config = DatasetConfig(
        path=str(path),
        kind="tabular",
        label_columns=("outcome",),
        task="classification",
        site_column="site",
    )
    dataset, report = load_dataset(config, SMALL)
    assert report is None
    assert dataset.groups.tolist() == [1, 0, 1]
    assert dataset.feature_names == ("dose", "sex=f", "sex=m")


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    config = DatasetConfig(path=str(tmp_path / "nope.csv"), label_columns=("y",), task="regression")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(config, SMALL)


def test_esol_loads_from_the_shared_data(shared_data: Path) -> None:
    config = DatasetConfig(
        path=str(shared_data / "esol_delaney.csv.gz"),
        label_columns=(ESOL_LABEL,),
        task="regression",
    )
    dataset, report = load_dataset(config, SMALL)
    assert report is not None and report.n_input == 1128
    assert len(dataset) == report.n_kept >= 1100
    assert dataset.n_tasks == 1
    assert np.isfinite(dataset.dense_labels()).all()


def test_tox21_loads_from_the_shared_data_with_sparse_labels(shared_data: Path) -> None:
    config = DatasetConfig(
        path=str(shared_data / "tox21.csv.gz"),
        label_columns=TOX21_TASKS,
        task="classification",
    )
    dataset, report = load_dataset(config, SMALL)
    assert report is not None
    assert len(dataset) >= 7800
    assert report.invalid, "a few Tox21 SMILES do not parse; they must be reported"
    labels = dataset.dense_labels()
    assert labels.shape == (len(dataset), 12)
    assert np.isnan(labels).any()
    assert set(np.unique(labels[np.isfinite(labels)])) == {0.0, 1.0}
