"""Splitting one dataset into simulated sites, and a site's data into train and test.

Real consortia are heterogeneous: companies work on different chemical series, assay
different label distributions, and hold very different amounts of data. The partitioners
reproduce each kind of skew so that federated methods are tested where they struggle:

- ``scaffold``: chemical-series skew; every Bemis–Murcko scaffold group stays whole at one site
  (Bemis & Murcko 1996), groups assigned so site sizes are roughly balanced.
- ``dirichlet``: label-distribution skew; each class's rows are split over sites with
  proportions drawn from Dir(α) (Hsu, Qi & Brown 2019, "Measuring the effects of non-identical
  data distribution for federated visual classification", §3). Small α, strong skew.
- ``quantity``: size skew; site sizes drawn from Dir(α), each site at least a minimum count.
- ``natural``: one site per distinct group value (e.g. a tabular site column).

All functions are pure: randomness comes only from the ``numpy.random.Generator`` passed in, so
the same seed gives the same partition. Each returns disjoint, sorted int64 index arrays that
together cover every row, and every site gets at least one row (or :class:`DataError` says why).
This module must not import RDKit.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedpharma.core.config import PartitionConfig
from fedpharma.core.dataset import Dataset, Objective
from fedpharma.core.errors import DataError

Indices = npt.NDArray[np.int64]

REGRESSION_LABEL_BINS = 5
"""Regression labels are cut at their quintiles into classes for Dirichlet label skew."""

DIRICHLET_MAX_DRAWS = 100
"""Dirichlet draws tried before giving up on giving every site at least one row."""

QUANTITY_MIN_ROWS_PER_SITE = 10
"""Quantity skew gives each site at least this many rows (fewer if the dataset is too small),
so that even the smallest site can hold out a test set."""


def partition(dataset: Dataset, config: PartitionConfig, rng: np.random.Generator) -> list[Indices]:
    """Split ``dataset`` into ``config.n_sites`` sites with ``config.method`` (``natural``: one
    site per distinct group value, however many there are)."""
    n_rows = len(dataset)
    if config.method == "scaffold":
        return scaffold_partition(dataset.groups, config.n_sites, rng)
    if config.method == "dirichlet":
        return dirichlet_label_partition(
            dataset.dense_labels(), dataset.task, config.n_sites, config.alpha, rng
        )
    if config.method == "quantity":
        min_rows = max(1, min(QUANTITY_MIN_ROWS_PER_SITE, n_rows // max(config.n_sites, 1)))
        return quantity_partition(n_rows, config.n_sites, config.alpha, rng, min_rows)
    if config.method == "natural":
        return natural_partition(dataset.groups)  # the data names its sites; n_sites is unused
    raise DataError(f"unknown partition method {config.method!r}")


def scaffold_partition(
    groups: npt.NDArray[np.integer], n_sites: int, rng: np.random.Generator
) -> list[Indices]:
    """Chemical-series skew: whole groups to sites, sizes roughly balanced.

    Groups are shuffled, then (stable-)sorted largest first and each is given to the site that
    currently has fewest rows — the greedy longest-processing-time rule, so sizes stay close
    while which series land together depends on the seed.
    """
    _check_sites(n_sites)
    unique, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if unique.size < n_sites:
        raise DataError(
            f"scaffold partition needs at least as many groups as sites: "
            f"{unique.size} scaffold groups for {n_sites} sites"
        )
    order = rng.permutation(unique.size)
    order = order[np.argsort(-counts[order], kind="stable")]
    site_of_group = np.empty(unique.size, dtype=np.int64)
    site_sizes = np.zeros(n_sites, dtype=np.int64)
    for group in order:
        site = int(np.argmin(site_sizes))
        site_of_group[group] = site
        site_sizes[site] += counts[group]
    return _sites_from_assignment(site_of_group[inverse], n_sites)


def dirichlet_label_partition(
    labels: npt.NDArray[np.floating],
    task: Objective,
    n_sites: int,
    alpha: float,
    rng: np.random.Generator,
) -> list[Indices]:
    """Label skew (Hsu et al. 2019): per class, site proportions ~ Dir(α·1).

    Classes are the first task that has any label: its distinct values for classification, its
    quintile bins for regression. Rows whose label is missing in that task are spread evenly
    over sites at random. Draws are repeated (up to :data:`DIRICHLET_MAX_DRAWS`) until every
    site has a row, as is usual for this partitioner; if none succeeds (a handful of rows per
    site), each empty site then takes one row from the largest.
    """
    _check_sites(n_sites)
    n_rows = labels.shape[0]
    if n_rows < n_sites:
        raise DataError(f"cannot give {n_sites} sites a row each from {n_rows} rows")
    classes = _label_classes(labels, task)
    unlabelled = np.flatnonzero(classes < 0)
    for _ in range(DIRICHLET_MAX_DRAWS):
        site_of_row = np.empty(n_rows, dtype=np.int64)
        for cls in np.unique(classes[classes >= 0]):
            rows = rng.permutation(np.flatnonzero(classes == cls))
            proportions = rng.dirichlet(np.full(n_sites, alpha))
            cuts = np.round(np.cumsum(proportions)[:-1] * rows.size).astype(np.int64)
            for site, chunk in enumerate(np.split(rows, cuts)):
                site_of_row[chunk] = site
        spread = rng.permutation(unlabelled)
        site_of_row[spread] = np.arange(spread.size) % n_sites
        if np.unique(site_of_row).size == n_sites:
            return _sites_from_assignment(site_of_row, n_sites)
    # Very few rows per site: give each still-empty site one random row of the largest site.
    for empty in np.setdiff1d(np.arange(n_sites), site_of_row):
        largest = np.bincount(site_of_row, minlength=n_sites).argmax()
        site_of_row[rng.choice(np.flatnonzero(site_of_row == largest))] = empty
    return _sites_from_assignment(site_of_row, n_sites)


def _label_classes(labels: npt.NDArray[np.floating], task: Objective) -> npt.NDArray[np.int64]:
    """Class id per row from the first task with labels; -1 where that label is missing."""
    labelled_tasks = np.flatnonzero(np.isfinite(labels).any(axis=0))
    if labelled_tasks.size == 0:
        raise DataError("Dirichlet label partition needs labels, but every label is missing")
    column = labels[:, labelled_tasks[0]].astype(np.float64)
    present = np.isfinite(column)
    classes = np.full(column.shape, -1, dtype=np.int64)
    if task == "classification":
        _, codes = np.unique(column[present], return_inverse=True)
    else:
        inner_edges = np.quantile(
            column[present], np.linspace(0, 1, REGRESSION_LABEL_BINS + 1)[1:-1]
        )
        codes = np.searchsorted(np.unique(inner_edges), column[present], side="right")
    classes[present] = codes
    return classes


def quantity_partition(
    n_rows: int, n_sites: int, alpha: float, rng: np.random.Generator, min_rows: int = 1
) -> list[Indices]:
    """Size skew: site sizes are ``min_rows`` plus a multinomial share of the rest with
    proportions ~ Dir(α·1); rows are assigned to sites at random."""
    _check_sites(n_sites)
    if min_rows < 1:
        raise DataError(f"min_rows must be at least 1, got {min_rows}")
    if n_rows < n_sites * min_rows:
        raise DataError(
            f"cannot give {n_sites} sites at least {min_rows} rows each from {n_rows} rows"
        )
    proportions = rng.dirichlet(np.full(n_sites, alpha))
    sizes = min_rows + rng.multinomial(n_rows - n_sites * min_rows, proportions)
    rows = rng.permutation(n_rows)
    return [np.sort(chunk).astype(np.int64) for chunk in np.split(rows, np.cumsum(sizes)[:-1])]


def natural_partition(groups: npt.NDArray[np.integer]) -> list[Indices]:
    """One site per distinct group value, in ascending order of the value."""
    if groups.size == 0:
        raise DataError("cannot partition an empty dataset")
    _, site_of_row = np.unique(groups, return_inverse=True)
    return _sites_from_assignment(site_of_row.astype(np.int64), int(site_of_row.max()) + 1)


def scaffold_split(
    groups: npt.NDArray[np.integer], test_fraction: float, rng: np.random.Generator
) -> tuple[Indices, Indices]:
    """A site's held-out split: no group in both parts, test ≈ ``test_fraction`` of the rows.

    Groups are visited in random order and go to test while they fit under the target size, so
    large scaffolds stay in training (as in the balanced scaffold split of Yang et al. 2019,
    Chemprop) and test sees unseen series. If no group fits, the smallest goes to test.

    When every row shares one group there is no series to keep apart (tabular data, where the
    group is the site): rows are then split at random.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    n_rows = groups.shape[0]
    if n_rows < 2:
        raise DataError(f"a train/test split needs at least 2 rows, got {n_rows}")
    target = min(n_rows - 1, max(1, round(test_fraction * n_rows)))
    unique, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if unique.size == 1:
        rows = rng.permutation(n_rows)
        return np.sort(rows[target:]).astype(np.int64), np.sort(rows[:target]).astype(np.int64)
    in_test = np.zeros(unique.size, dtype=bool)
    test_size = 0
    for group in rng.permutation(unique.size):
        if test_size + counts[group] <= target:
            in_test[group] = True
            test_size += int(counts[group])
    if not in_test.any():
        in_test[np.argmin(counts)] = True
    if in_test.all():
        in_test[np.argmax(counts)] = False
    test_rows = in_test[inverse]
    return np.flatnonzero(~test_rows).astype(np.int64), np.flatnonzero(test_rows).astype(np.int64)


def holdout_split(
    data: Dataset, test_fraction: float, rng: np.random.Generator, *, molecules: bool
) -> tuple[Indices, Indices]:
    """A site's train / test split: by scaffold for molecules or regression records, stratified
    by outcome for other classification records (a small site keeps both outcomes in test)."""
    if molecules or data.task != "classification":
        return scaffold_split(data.groups, test_fraction, rng)
    return stratified_split(data.dense_labels(), test_fraction, rng)


def stratified_split(
    labels: npt.NDArray[np.floating], test_fraction: float, rng: np.random.Generator
) -> tuple[Indices, Indices]:
    """A random held-out split that keeps each class's share (first task's label; a missing
    label is a class of its own): a small site's test set still holds both outcomes."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    n_rows = labels.shape[0]
    if n_rows < 2:
        raise DataError(f"a train/test split needs at least 2 rows, got {n_rows}")
    first = labels[:, 0]
    strata = np.where(np.isnan(first), -1.0, first)
    test: list[int] = []
    for value in np.unique(strata):
        rows = rng.permutation(np.flatnonzero(strata == value))
        take = round(test_fraction * rows.size) if rows.size > 1 else 0
        test += rows[:take].tolist()
    target = min(n_rows - 1, max(1, round(test_fraction * n_rows)))
    if not test:  # every class a single row: fall back to the overall target size
        test = rng.permutation(n_rows)[:target].tolist()
    in_test = np.zeros(n_rows, dtype=bool)
    in_test[test] = True
    if in_test.all():
        in_test[np.flatnonzero(in_test)[0]] = False
    return np.flatnonzero(~in_test).astype(np.int64), np.flatnonzero(in_test).astype(np.int64)


def _check_sites(n_sites: int) -> None:
    if n_sites < 1:
        raise DataError(f"n_sites must be at least 1, got {n_sites}")


def _sites_from_assignment(site_of_row: npt.NDArray[np.int64], n_sites: int) -> list[Indices]:
    sites = [np.flatnonzero(site_of_row == site).astype(np.int64) for site in range(n_sites)]
    empty = [site for site, rows in enumerate(sites) if rows.size == 0]
    if empty:
        raise DataError(f"sites {empty} received no rows")
    return sites
