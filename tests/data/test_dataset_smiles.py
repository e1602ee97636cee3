"""A molecule CSV can keep each row's standardized SMILES, for a plugin that builds graphs."""

from __future__ import annotations

import csv

import numpy as np
from rdkit import Chem

from fedpharma.core.config import DatasetConfig, FeaturesConfig
from fedpharma.data.datasets import load_dataset
from fedpharma.data.molecules import canonical_smiles, standardize


def test_smiles_follow_the_rows_that_were_kept_and_their_subsets(molecules_csv, tmp_path):
    rows = list(csv.DictReader(molecules_csv.open()))
    salted = tmp_path / "salted.csv"
    with salted.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles", "pIC50"])
        writer.writerow(["not a molecule", "5.0"])  # dropped: invalid
        writer.writerow([rows[0]["smiles"] + ".[Na+].[Cl-]", rows[0]["pIC50"]])  # a salt
        writer.writerows((r["smiles"], r["pIC50"]) for r in rows[1:20])
    config = DatasetConfig(path=str(salted), label_columns=("pIC50",), task="regression")
    dataset, _ = load_dataset(config, FeaturesConfig(n_bits=128), smiles=True)
    plain, _ = load_dataset(config, FeaturesConfig(n_bits=128))
    assert plain.smiles == () and len(dataset.smiles) == len(dataset) == 20
    expected = [canonical_smiles(standardize(Chem.MolFromSmiles(r["smiles"]))) for r in rows[:20]]
    assert list(dataset.smiles) == expected  # salt stripped, the invalid row gone
    part = dataset.subset(np.array([3, 1]))
    assert part.smiles == (expected[3], expected[1])
