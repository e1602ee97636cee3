"""Partitioners: disjoint, covering, reproducible, non-empty sites; groups kept whole."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpharma.core.config import PartitionConfig
from fedpharma.core.dataset import Dataset, Objective
from fedpharma.core.errors import DataError
from fedpharma.data.partition import (
    dirichlet_label_partition,
    natural_partition,
    partition,
    quantity_partition,
    scaffold_partition,
    scaffold_split,
    stratified_split,
)

METHODS = ("scaffold", "dirichlet", "quantity")


def make_dataset(
    n_rows: int, n_groups: int, task: Objective, seed: int, missing_fraction: float = 0.0
) -> Dataset:
    rng = np.random.default_rng(seed)
    if task == "classification":
        labels = rng.integers(0, 2, size=(n_rows, 2)).astype(np.float32)
    else:
        labels = rng.normal(size=(n_rows, 2)).astype(np.float32)
    labels[rng.random(n_rows) < missing_fraction, 0] = np.nan
    groups = np.concatenate([np.arange(n_groups), rng.integers(0, n_groups, n_rows - n_groups)])
    return Dataset(
        features=np.zeros((n_rows, 1), dtype=np.float32),
        labels=labels,
        task=task,
        task_names=("a", "b"),
        groups=rng.permutation(groups).astype(np.int64),
    )


def assert_valid_partition(sites: list[npt.NDArray[np.int64]], n_rows: int, n_sites: int) -> None:
    assert len(sites) == n_sites
    assert all(site.size >= 1 for site in sites), "every site gets a row"
    assert all(site.dtype == np.int64 for site in sites)
    everything = np.concatenate(sites)
    assert everything.size == n_rows, "disjoint"
    assert np.array_equal(np.sort(everything), np.arange(n_rows)), "covers every row"


datasets = st.builds(
    lambda n_sites, extra_groups, extra_rows, task, seed, missing: (
        make_dataset(
            n_sites + extra_groups + extra_rows, n_sites + extra_groups, task, seed, missing
        ),
        n_sites,
    ),
    n_sites=st.integers(1, 6),
    extra_groups=st.integers(0, 20),
    extra_rows=st.integers(0, 80),
    task=st.sampled_from(["classification", "regression"]),
    seed=st.integers(0, 2**16),
    missing=st.sampled_from([0.0, 0.3]),
)


@settings(max_examples=60, deadline=None)
@given(case=datasets, method=st.sampled_from(METHODS), seed=st.integers(0, 2**32 - 1))
def test_partitions_are_disjoint_covering_non_empty_and_reproducible(
    case: tuple[Dataset, int], method: str, seed: int
) -> None:
    dataset, n_sites = case
    config = PartitionConfig(method=method, n_sites=n_sites, alpha=1.0)
    sites = partition(dataset, config, np.random.default_rng(seed))
    assert_valid_partition(sites, len(dataset), n_sites)
    again = partition(dataset, config, np.random.default_rng(seed))
    assert all(np.array_equal(a, b) for a, b in zip(sites, again, strict=True))


@settings(max_examples=40, deadline=None)
@given(case=datasets, seed=st.integers(0, 2**32 - 1))
def test_scaffold_partition_keeps_every_group_at_one_site(
    case: tuple[Dataset, int], seed: int
) -> None:
    dataset, n_sites = case
    sites = scaffold_partition(dataset.groups, n_sites, np.random.default_rng(seed))
    groups_per_site = [set(dataset.groups[site].tolist()) for site in sites]
    for i, first in enumerate(groups_per_site):
        for second in groups_per_site[i + 1 :]:
            assert not first & second


@pytest.mark.parametrize("method", METHODS)
def test_different_seeds_give_different_partitions(method: str) -> None:
    dataset = make_dataset(300, 120, "classification", seed=1)
    config = PartitionConfig(method=method, n_sites=4, alpha=0.5)
    first = partition(dataset, config, np.random.default_rng(0))
    second = partition(dataset, config, np.random.default_rng(1))
    assert not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_scaffold_partition_balances_site_sizes() -> None:
    dataset = make_dataset(1000, 300, "regression", seed=2)
    sites = scaffold_partition(dataset.groups, 4, np.random.default_rng(0))
    sizes = [site.size for site in sites]
    assert max(sizes) - min(sizes) <= max(np.bincount(dataset.groups))


def test_small_alpha_skews_labels_and_quantities() -> None:
    dataset = make_dataset(2000, 10, "classification", seed=3)
    rng = np.random.default_rng(0)
    sites = dirichlet_label_partition(dataset.labels, "classification", 4, 0.05, rng)
    positive_rates = [float(np.nanmean(dataset.labels[site, 0])) for site in sites]
    assert max(positive_rates) - min(positive_rates) > 0.3
    sizes = [s.size for s in quantity_partition(2000, 4, 0.1, np.random.default_rng(0), 10)]
    assert min(sizes) >= 10
    assert max(sizes) > 4 * min(sizes)


def test_natural_partition_gives_one_site_per_group_value() -> None:
    sites = natural_partition(np.array([7, 3, 7, 3, 9], dtype=np.int64))
    assert [s.tolist() for s in sites] == [[1, 3], [0, 2], [4]]
    dataset = make_dataset(5, 1, "classification", seed=0)
    # The data names its sites: n_sites (here its default, 4) is not asked for.
    sites = partition(dataset, PartitionConfig(method="natural"), np.random.default_rng(0))
    assert len(sites) == 1


def test_impossible_partitions_say_why() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="3 scaffold groups for 4 sites"):
        scaffold_partition(np.array([0, 0, 1, 2]), 4, rng)
    with pytest.raises(DataError, match="at least 2 rows each from 5 rows"):
        quantity_partition(5, 3, 1.0, rng, min_rows=2)
    labels = np.array([[0.0], [1.0]], dtype=np.float32)
    with pytest.raises(DataError, match="3 sites a row each from 2 rows"):
        dirichlet_label_partition(labels, "classification", 3, 1.0, rng)
    with pytest.raises(DataError, match="every label is missing"):
        dirichlet_label_partition(np.full((4, 1), np.nan), "regression", 2, 1.0, rng)


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.integers(0, 30), min_size=2, max_size=200),
    test_fraction=st.floats(0.05, 0.5),
    seed=st.integers(0, 2**32 - 1),
)
def test_scaffold_split_never_puts_a_group_in_both_parts(
    groups: list[int], test_fraction: float, seed: int
) -> None:
    group_array = np.asarray(groups, dtype=np.int64)
    train, test = scaffold_split(group_array, test_fraction, np.random.default_rng(seed))
    assert train.size >= 1 and test.size >= 1
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(groups)))
    if np.unique(group_array).size > 1:
        assert not set(group_array[train].tolist()) & set(group_array[test].tolist())


def test_scaffold_split_test_size_is_close_to_the_fraction() -> None:
    groups = make_dataset(1000, 400, "regression", seed=4).groups
    _, test = scaffold_split(groups, 0.2, np.random.default_rng(0))
    assert 180 <= test.size <= 200


def test_partition_module_does_not_import_rdkit() -> None:
    code = "import sys, fedpharma.data.partition; print('rdkit' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_dirichlet_with_a_row_per_site_still_fills_every_site() -> None:
    labels = np.zeros((6, 1), dtype=np.float32)  # one class, six rows, six sites
    for seed in range(20):
        sites = dirichlet_label_partition(
            labels, "classification", 6, 1.0, np.random.default_rng(seed)
        )
        assert_valid_partition(sites, 6, 6)


def test_a_stratified_split_keeps_each_class_in_a_small_sites_test_set() -> None:
    labels = np.array([[1.0]] * 4 + [[0.0]] * 26, dtype=np.float32)
    for seed in range(20):
        train, test = stratified_split(labels, 0.25, np.random.default_rng(seed))
        assert sorted([*train, *test]) == list(range(30))
        assert set(labels[test, 0]) == {0.0, 1.0} and set(labels[train, 0]) == {0.0, 1.0}
        assert len(test) == 1 + 6  # round(0.25 × 4) positives, round(0.25 × 26) negatives
