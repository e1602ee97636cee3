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


def _write_sdf(path, records) -> None:
    """``records``: (molecule, pIC50 or None); gzipped when ``path`` ends in .gz."""
    import gzip
    import io

    text = io.StringIO()
    writer = Chem.SDWriter(text)
    for mol, value in records:
        if value is not None:
            mol.SetProp("pIC50", value)
        writer.write(mol)
    writer.close()
    path.write_bytes(gzip.compress(text.getvalue().encode()))


def test_an_sdf_keeps_the_same_smiles_as_a_csv_of_the_same_molecules(molecules_csv, tmp_path):
    # An SDF was refused for a plugin that reads SMILES (the D-MPNN): only a CSV kept them.
    rows = list(csv.DictReader(molecules_csv.open()))[:20]
    table = tmp_path / "series.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles", "pIC50"])
        writer.writerow([rows[0]["smiles"] + ".[Na+].[Cl-]", rows[0]["pIC50"]])  # a salt
        writer.writerows((r["smiles"], r["pIC50"]) for r in rows[1:])
    pentavalent = Chem.MolFromSmiles("C(C)(C)(C)(C)C", sanitize=False)  # unreadable when read
    records = [
        (pentavalent, "5.0"),
        (Chem.MolFromSmiles(rows[0]["smiles"] + ".[Na+].[Cl-]"), rows[0]["pIC50"]),
        (Chem.MolFromSmiles("CCO"), None),  # unlabelled: dropped
        *((Chem.MolFromSmiles(r["smiles"]), r["pIC50"]) for r in rows[1:]),
    ]
    sdf = tmp_path / "series.sdf.gz"
    _write_sdf(sdf, records)
    features = FeaturesConfig(n_bits=128)
    from_csv, _ = load_dataset(
        DatasetConfig(path=str(table), label_columns=("pIC50",), task="regression"),
        features,
        smiles=True,
    )
    from_sdf, report = load_dataset(
        DatasetConfig(path=str(sdf), label_columns=("pIC50",), task="regression"),
        features,
        smiles=True,
    )
    assert report is not None and len(report.invalid) == 1 and report.unlabelled == (2,)
    assert len(from_sdf.smiles) == len(from_sdf) == 20
    assert from_sdf.smiles == from_csv.smiles  # salt stripped, the bad records gone, in order
    np.testing.assert_array_equal(from_sdf.dense_labels(), from_csv.dense_labels())


def test_a_molecule_whose_standardized_smiles_rdkit_cannot_read_is_dropped_with_a_reason(
    molecules_csv, tmp_path
):
    # Ferrocene standardizes to its largest fragment, a neutral c1cccc1 that RDKit cannot read
    # back: the D-MPNN then refused the whole site (Tox21 has five such molecules).
    rows = list(csv.DictReader(molecules_csv.open()))[:10]
    table = tmp_path / "with-ferrocene.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles", "pIC50"])
        writer.writerows((r["smiles"], r["pIC50"]) for r in rows[:4])
        writer.writerow(["[cH-]1cccc1.[cH-]1cccc1.[Fe+2]", "5.0"])
        writer.writerows((r["smiles"], r["pIC50"]) for r in rows[4:])
    config = DatasetConfig(path=str(table), label_columns=("pIC50",), task="regression")
    graphs, report = load_dataset(config, FeaturesConfig(n_bits=128), smiles=True)
    fingerprints, _ = load_dataset(config, FeaturesConfig(n_bits=128))
    assert len(fingerprints) == 11  # fingerprints are computed from the molecule itself
    assert report is not None and [(row, "graph" in why) for row, why in report.invalid] == [
        (4, True)
    ]
    assert len(graphs) == len(graphs.smiles) == report.n_rows == 10
    assert all(Chem.MolFromSmiles(s) is not None for s in graphs.smiles)
    np.testing.assert_allclose(graphs.dense_labels()[:, 0], [float(r["pIC50"]) for r in rows])
