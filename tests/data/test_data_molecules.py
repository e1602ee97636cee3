"""Molecules: invalid input reported without structures, standardization, features, scaffolds."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem.MolStandardize import rdMolStandardize

from fedpharma.core.config import FeaturesConfig
from fedpharma.core.errors import ConfigError
from fedpharma.data import molecules
from fedpharma.data.molecules import (
    MoleculeReport,
    canonical_smiles,
    feature_names,
    featurize,
    morgan_fingerprints,
    murcko_scaffolds,
    normalized_descriptors,
    parse_sdf,
    parse_smiles,
    reference_descriptor_statistics,
    scaffold_groups,
)

BAD_INPUTS = ["CCO", "C1CCXyz", "", "C1CC", "c1ccccc1", "   ", None, "N#N=N(C)(C)(C)C"]


def test_invalid_smiles_are_counted_and_reported_by_row_without_structures(
    capfd: pytest.CaptureFixture[str],
) -> None:
    parsed = parse_smiles(BAD_INPUTS)
    report = parsed.report
    assert report.n_input == 8
    assert report.n_valid == 2
    assert parsed.rows.tolist() == [0, 4]
    assert report.invalid == (
        (1, "unparsable"),
        (2, "empty"),
        (3, "unparsable"),
        (5, "empty"),
        (6, "empty"),
        (7, "unparsable"),
    )
    summary = report.summary()
    assert "2 of 8 molecules valid" in summary
    assert "6 invalid" in summary
    captured = capfd.readouterr()
    for text in ("C1CCXyz", "C1CC", "N#N=N"):
        assert text not in summary
        assert text not in captured.err
        assert text not in captured.out


def test_summary_lists_unlabelled_rows_and_truncates_long_lists() -> None:
    report = MoleculeReport(
        n_input=30,
        n_valid=18,
        invalid=tuple((row, "unparsable") for row in range(12)),
        unlabelled=(20, 21),
    )
    assert report.n_kept == 16
    summary = report.summary(max_rows=3)
    assert "rows 1, 2, 3, …" in summary  # 1-based data rows
    assert "2 dropped with no label (rows 21, 22)" in summary


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("CC(=O)[O-].[Na+]", "CC(=O)O"),  # salt stripped, carboxylate neutralized
        ("C[NH3+].[Cl-]", "CN"),  # counter-ion stripped, ammonium neutralized
        ("O=C(O)c1ccccc1.O.O", "O=C(O)c1ccccc1"),  # solvent stripped
        ("OC(=O)c1ccccc1", "O=C(O)c1ccccc1"),  # canonical form
    ],
)
def test_standardization_strips_salts_and_neutralizes(raw: str, expected: str) -> None:
    (mol,) = parse_smiles([raw]).mols
    assert canonical_smiles(mol) == expected


# Each step of the cleanup changes at least one of these (planted-bug checked): explicit
# hydrogens (added below), metals, groups the normalizer rewrites, charges the reionizer moves,
# stereo the final pass clears; then salts and solvents, and charges to neutralize.
CLEANUP_CASES = [
    "CS(C)=O",
    "C[N+](C)(C)CCc1ccc([O-])cc1C(=O)O",
    "F[C@@H](Cl)[Zn]Cl",
    "CCO[Na]",
    "Cl[Zr](Cl)(C1=CC=CC1)C1C=CC=C1",
    "[O-][n+]1ccccc1[S-]",
    "CC(=O)[O-].[Na+]",
    "O=C([O-])CC[NH3+]",
    "[2H]C([2H])([2H])c1ccccc1",
    "C[C@H](N)C(=O)O.C[C@@H](N)C(=O)O.O",
    "F/C=C/F",
    "c1ccccc1.CC",
]


def _reference_standardize(mol: Chem.Mol) -> Chem.Mol:
    """The standardization as RDKit's one-call helpers spell it (slower: rebuilt per call)."""
    cleaned = rdMolStandardize.Cleanup(mol)
    largest = rdMolStandardize.LargestFragmentChooser(preferOrganic=True).choose(cleaned)
    return rdMolStandardize.Uncharger(canonicalOrder=True).uncharge(largest)


def _same_standardization(mols: list[Chem.Mol]) -> None:
    for mol in mols:
        ours, reference = molecules.standardize(Chem.Mol(mol)), _reference_standardize(mol)
        assert canonical_smiles(ours) == canonical_smiles(reference)
        assert Chem.MolToMolBlock(ours) == Chem.MolToMolBlock(reference)  # atom order included


def test_standardize_is_rdkits_cleanup_fragment_and_uncharge_steps() -> None:
    mols = [Chem.MolFromSmiles(smiles) for smiles in CLEANUP_CASES]
    _same_standardization([*mols, *(Chem.AddHs(mol) for mol in mols[:4])])


def test_standardize_matches_rdkits_cleanup_on_chembl_molecules(shared_data: Path) -> None:
    with gzip.open(shared_data / "chembl_5thresh.csv.gz", "rt", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        next(rows)
        smiles = [row[0] for row, _ in zip(rows, range(1500), strict=False)]
    _same_standardization([Chem.MolFromSmiles(text) for text in smiles])


def test_sdf_records_are_parsed_with_properties_and_empty_records_reported(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mols.sdf"
    writer = Chem.SDWriter(str(path))
    for smiles, value in [("CCO", "1.5"), ("", "2.0"), ("c1ccccc1[O-].[Na+]", "3.0")]:
        mol = Chem.MolFromSmiles(smiles)
        mol.SetProp("pIC50", value)
        writer.write(mol)
    writer.close()
    parsed, properties = parse_sdf(path)
    assert parsed.report.invalid == ((1, "no atoms after standardization"),)
    assert parsed.rows.tolist() == [0, 2]
    assert [p["pIC50"] for p in properties] == ["1.5", "3.0"]
    assert canonical_smiles(parsed.mols[1]) == "Oc1ccccc1"


MOLS = parse_smiles(["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C1CCNCC1", "CCCCCCCCCC"]).mols


def test_fingerprints_have_the_requested_shape_and_are_deterministic() -> None:
    first = morgan_fingerprints(MOLS, radius=2, n_bits=1024)
    second = morgan_fingerprints(MOLS, radius=2, n_bits=1024)
    assert first.shape == (5, 1024)
    assert first.dtype == np.float32
    assert set(np.unique(first)) <= {0.0, 1.0}
    np.testing.assert_array_equal(first, second)


def test_fingerprint_radius_changes_bits_and_counts_dominate_bits() -> None:
    radius_1 = morgan_fingerprints(MOLS, radius=1, n_bits=2048)
    radius_3 = morgan_fingerprints(MOLS, radius=3, n_bits=2048)
    assert not np.array_equal(radius_1, radius_3)
    counts = morgan_fingerprints(MOLS, radius=2, n_bits=2048, counts=True)
    bits = morgan_fingerprints(MOLS, radius=2, n_bits=2048)
    np.testing.assert_array_equal(counts > 0, bits > 0)
    assert counts.max() > 1  # decane repeats its CH2 environment


def test_descriptors_are_normalized_finite_clipped_and_identical_across_calls() -> None:
    first = normalized_descriptors(MOLS)
    second = normalized_descriptors(MOLS)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (5, len(molecules.DESCRIPTOR_NAMES))
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    assert np.abs(first).max() <= molecules.DESCRIPTOR_CLIP
    stats = reference_descriptor_statistics()
    assert stats is reference_descriptor_statistics()  # cached: computed once per process
    assert stats.n_reference == molecules.REFERENCE_SET_SIZE
    assert (stats.scale > 0).all()
    assert not stats.center.flags.writeable


def test_featurize_concatenates_fingerprint_and_descriptors_matching_names() -> None:
    config = FeaturesConfig(radius=2, n_bits=256, descriptors=True)
    features = featurize(MOLS, config)
    names = feature_names(config)
    assert features.shape == (5, len(names))
    assert names[0] == "morgan_r2_bit0"
    assert names[256] == f"rdkit_{molecules.DESCRIPTOR_NAMES[0]}"
    only_descriptors = FeaturesConfig(fingerprint="none", descriptors=True)
    np.testing.assert_array_equal(featurize(MOLS, only_descriptors), features[:, 256:])


def test_featurize_without_any_feature_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="descriptors"):
        featurize(MOLS, FeaturesConfig(fingerprint="none", descriptors=False))


def test_murcko_scaffolds_group_molecules_of_one_series() -> None:
    series = parse_smiles(
        ["c1ccccc1CC", "c1ccccc1O", "C1CCNCC1C", "CCO", "c1ccc2ccccc2c1", "CCCC"]
    ).mols
    assert murcko_scaffolds(series) == [
        "c1ccccc1",
        "c1ccccc1",
        "C1CCNCC1",
        "",
        "c1ccc2ccccc2c1",
        "",
    ]
    # Acyclic molecules share no chemical series: each is a group of its own.
    assert scaffold_groups(series).tolist() == [0, 0, 1, 2, 3, 4]
