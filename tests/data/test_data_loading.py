"""Streaming, parallel, cached loading of molecule files, and the import summary."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

from fedpharma.core.config import DatasetConfig, FeaturesConfig
from fedpharma.core.dataset import SparseMatrix
from fedpharma.core.errors import DataError
from fedpharma.data import feature_cache, loading
from fedpharma.data.datasets import load_dataset, permute_columns
from fedpharma.data.molecules import featurize, parse_smiles, scaffold_groups
from fedpharma.data.permutation import FingerprintPermutation, new_permutation_key

SMALL = FeaturesConfig(n_bits=256, counts=True)


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _load(path: Path, features: FeaturesConfig = SMALL, **changes: object):  # type: ignore[no-untyped-def]
    config = DatasetConfig(path=str(path), label_columns=("pIC50",), task="regression")
    return load_dataset(dataclasses.replace(config, **changes), features)


def _smiles_and_labels(molecules_csv: Path) -> tuple[list[str], list[str]]:
    lines = molecules_csv.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split(",")[0] for line in lines], [line.split(",")[1] for line in lines]


@pytest.mark.parametrize(
    "features",
    [SMALL, FeaturesConfig(n_bits=128), FeaturesConfig(n_bits=64, descriptors=True)],
    ids=["counts", "bits", "bits+descriptors"],
)
def test_sparse_features_equal_the_dense_featurization(
    molecules_csv: Path, features: FeaturesConfig
) -> None:
    dataset, report = _load(molecules_csv, features)
    smiles, _ = _smiles_and_labels(molecules_csv)
    mols = parse_smiles(smiles).mols
    assert isinstance(dataset.features, SparseMatrix)
    assert report.n_rows == len(dataset) == len(mols)
    np.testing.assert_allclose(dataset.features.dense(), featurize(mols, features), rtol=1e-6)
    assert dataset.groups.tolist() == scaffold_groups(mols).tolist()


def test_worker_processes_give_the_same_dataset_as_one_process(
    molecules_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loading, "CHUNK_ROWS", 40)  # 150 molecules: four chunks
    monkeypatch.setattr(loading, "worker_count", lambda n_chunks: 0)
    alone, _ = _load(molecules_csv, cache=False)
    monkeypatch.setattr(loading, "worker_count", lambda n_chunks: 2)
    parallel, report = _load(molecules_csv, cache=False)
    assert isinstance(alone.features, SparseMatrix) and isinstance(parallel.features, SparseMatrix)
    np.testing.assert_array_equal(parallel.features.dense(), alone.features.dense())
    np.testing.assert_array_equal(parallel.dense_labels(), alone.dense_labels())
    np.testing.assert_array_equal(parallel.groups, alone.groups)
    assert report.n_input == 150


def test_many_label_columns_are_read_into_their_tasks(tmp_path: Path) -> None:
    names = [f"t{i}" for i in range(300)]
    cells = [[""] * 300 for _ in range(3)]
    cells[0][7], cells[1][299], cells[2][0], cells[2][150] = "1.5", "2", "3", "-4e-1"
    rows = [f"{s},{','.join(c)}" for s, c in zip(["CCO", "CCN", "c1ccccc1"], cells, strict=True)]
    path = _csv(tmp_path / "wide.csv", "smiles," + ",".join(names), rows)
    config = DatasetConfig(path=str(path), label_columns=tuple(names), task="regression")
    dataset, _ = load_dataset(config, SMALL)
    labels = dataset.dense_labels()
    observed = {(int(r), int(t)): float(labels[r, t]) for r, t in np.argwhere(~np.isnan(labels))}
    assert observed == {(0, 7): 1.5, (1, 299): 2.0, (2, 0): 3.0, (2, 150): pytest.approx(-0.4)}


def test_label_columns_are_read_in_their_listed_order_and_blank_cells_are_missing(
    tmp_path: Path,
) -> None:
    path = _csv(tmp_path / "order.csv", "a,smiles,b,c", ["1, CCO ,  ,3", " ,CCN,2,", "4,CCC,5, 6 "])
    for columns, expected in [
        (("c", "a"), [[3.0, 1.0], [np.nan, np.nan], [6.0, 4.0]]),
        (("b",), [[np.nan], [2.0], [5.0]]),
    ]:
        config = DatasetConfig(path=str(path), label_columns=columns, task="regression")
        dataset, report = load_dataset(config, SMALL)
        assert report is not None and report.unlabelled == ((1,) if columns == ("c", "a") else (0,))
        every = np.full((3, len(columns)), np.nan)
        every[[r for r in range(3) if r not in report.unlabelled]] = dataset.dense_labels()
        np.testing.assert_array_equal(every, expected)


def test_a_second_load_reads_the_feature_cache(
    molecules_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = _load(molecules_csv, cache_dir=str(tmp_path))
    (entry,) = tmp_path.glob("*.npz")
    with np.load(entry, allow_pickle=False) as stored:  # plain arrays only
        assert "fp_indices" in stored.files

    def no_featurizing(*_: object) -> None:
        raise AssertionError("featurized although the cache holds this file and recipe")

    monkeypatch.setattr(loading, "read_csv_molecules", no_featurizing)
    again, _ = _load(molecules_csv, cache_dir=str(tmp_path))
    assert isinstance(again.features, SparseMatrix) and isinstance(first.features, SparseMatrix)
    np.testing.assert_array_equal(again.features.dense(), first.features.dense())
    np.testing.assert_array_equal(again.dense_labels(), first.dense_labels())
    with pytest.raises(AssertionError, match="featurized although"):  # another recipe: a miss
        _load(molecules_csv, FeaturesConfig(n_bits=512, counts=True), cache_dir=str(tmp_path))


@pytest.mark.parametrize("locked", [True, False], ids=["locked", "weakened-no-lock"])
def test_loads_that_start_together_featurize_once(
    molecules_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, locked: bool
) -> None:
    """A simulation's workers start at once: the first featurizes under the entry's lock and
    the others read its entry (without the lock, each featurizes: the weakened twin)."""
    import contextlib
    import threading
    import time

    featurize_file = loading.read_csv_molecules
    calls = []

    def slow(*args: object) -> loading.Featurized:
        calls.append(1)
        time.sleep(0.3)  # both loads are inside the miss at once
        return featurize_file(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(loading, "read_csv_molecules", slow)
    if not locked:
        monkeypatch.setattr(feature_cache, "exclusive", lambda *_: contextlib.nullcontext())
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(len(_load(molecules_csv, cache_dir=str(tmp_path))[0]))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [150, 150]
    assert len(calls) == (1 if locked else 2)


def test_a_damaged_cache_entry_is_ignored_and_rewritten(
    molecules_csv: Path, tmp_path: Path
) -> None:
    first, _ = _load(molecules_csv, cache_dir=str(tmp_path))
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(b"not a zip file")
    assert feature_cache.load(tmp_path, entry.stem) is None
    again, _ = _load(molecules_csv, cache_dir=str(tmp_path))
    assert feature_cache.load(tmp_path, entry.stem) is not None
    assert len(again) == len(first)


def test_import_summary_counts_salts_duplicates_and_names_rows_not_structures(
    tmp_path: Path,
) -> None:
    path = _csv(
        tmp_path / "assay.csv",
        "smiles,pIC50",
        ["CCO,5.0", "OCC,7.0", "C1CC,6.0", "CC(=O)[O-].[Na+],4.0", "c1ccccc1O,", "CCO,6.0"],
    )
    kept, report = _load(path)
    assert report.invalid == ((2, "unparsable"),)
    assert report.unlabelled == (4,)
    assert report.salts_stripped == 1
    assert report.duplicates == 2  # rows 2 and 6 repeat row 1's ethanol
    assert len(kept) == 4
    text = report.summary()
    assert "6 rows read" in text and "unparsable (rows 3)" in text
    assert "no label (rows 5)" in text and "salts or solvents stripped from 1" in text
    assert '2 duplicate molecule(s) kept as separate rows (duplicates = "keep")' in text
    assert "C1CC" not in text and "CCO" not in text

    first, report = _load(path, duplicates="first")
    assert len(first) == 2 == report.n_rows
    assert sorted(first.dense_labels()[:, 0].tolist()) == [4.0, 5.0]
    mean, _ = _load(path, duplicates="mean")
    assert sorted(mean.dense_labels()[:, 0].tolist()) == [4.0, 6.0]  # (5 + 7 + 6) / 3


def test_mean_merges_duplicates_task_by_task(tmp_path: Path) -> None:
    path = _csv(tmp_path / "two.csv", "smiles,a,b", ["CCO,1,", "CCN,2,3", "OCC,,5", "CCO,3,"])
    config = DatasetConfig(
        path=str(path), label_columns=("a", "b"), task="regression", duplicates="mean"
    )
    dataset, _ = load_dataset(config, SMALL)
    np.testing.assert_array_equal(dataset.dense_labels(), [[2.0, 5.0], [2.0, 3.0]])


def test_classification_labels_other_than_0_1_name_the_column_before_training(
    tmp_path: Path,
) -> None:
    path = _csv(tmp_path / "c.csv", "smiles,ok,dose", ["CCO,1,0", "CCN,0,2.5", "CCC,1,1"])
    config = DatasetConfig(path=str(path), label_columns=("ok", "dose"), task="classification")
    with pytest.raises(DataError, match=r"'dose' hold other values \(1 cells; first: data row 2\)"):
        load_dataset(config, SMALL)
    fine = dataclasses.replace(config, label_columns=("ok",))
    assert len(load_dataset(fine, SMALL)[0]) == 3


def test_sdf_records_stream_through_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mols.sdf"
    writer = Chem.SDWriter(str(path))
    for i, smiles in enumerate(["CCO", "c1ccccc1", "CCN", "CCCl", "OCCO"]):
        mol = Chem.MolFromSmiles(smiles)
        if i != 2:
            mol.SetProp("y", str(i))
        writer.write(mol)
    writer.close()
    monkeypatch.setattr(loading, "CHUNK_ROWS", 2)
    config = DatasetConfig(path=str(path), label_columns=("y",), task="regression", cache=False)
    dataset, report = load_dataset(config, SMALL)
    assert report.n_input == 5 and report.unlabelled == (2,)
    assert dataset.dense_labels()[:, 0].tolist() == [0.0, 1.0, 3.0, 4.0]


def test_a_permutation_moves_sparse_columns_as_it_moves_dense_ones(molecules_csv: Path) -> None:
    dataset, _ = _load(molecules_csv)
    assert isinstance(dataset.features, SparseMatrix)
    permutation = FingerprintPermutation.from_key(new_permutation_key(), SMALL.n_bits)
    permuted = permute_columns(dataset.features, permutation)
    assert isinstance(permuted, SparseMatrix)
    np.testing.assert_array_equal(permuted.dense(), permutation.apply(dataset.features.dense()))


def test_a_child_still_importing_its_parents_script_takes_no_cache_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script without a ``__main__`` guard re-runs its loading in each spawned child while the
    parent holds the lock and waits for the child: the child must not wait for that lock."""
    import multiprocessing
    import threading

    entered = threading.Event()

    def child() -> None:
        with feature_cache.exclusive(tmp_path, "key"):
            entered.set()

    with feature_cache.exclusive(tmp_path, "key"):  # the parent's lock
        monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
        thread = threading.Thread(target=child, daemon=True)
        thread.start()
        assert entered.wait(timeout=10)
        monkeypatch.undo()


def test_few_chunks_and_daemonic_processes_featurize_in_this_process(monkeypatch):
    assert loading.worker_count(loading.MIN_PARALLEL_CHUNKS - 1) == 0
    monkeypatch.setattr(loading.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert loading.worker_count(loading.MIN_PARALLEL_CHUNKS) == 2
    monkeypatch.setattr(loading.multiprocessing.current_process(), "daemon", True)
    assert loading.worker_count(loading.MIN_PARALLEL_CHUNKS) == 0
