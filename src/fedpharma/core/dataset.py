"""The in-memory form every data source is turned into: features, labels, groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Objective = Literal["regression", "classification"]


@dataclass(frozen=True)
class Dataset:
    """Model-ready arrays for one site (or for a whole dataset before partitioning).

    ``labels`` has one column per task; NaN marks a missing label (multitask assay data is
    sparse). ``groups`` assigns each row a group id: its Bemis–Murcko scaffold (molecules) or its
    site (tabular data with a site column); partitioning and scaffold splits keep groups whole.
    """

    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.float32]
    task: Objective
    task_names: tuple[str, ...]
    groups: npt.NDArray[np.int64]
    name: str = "dataset"
    feature_names: tuple[str, ...] = field(default=(), repr=False)
    # What each group id stands for, where the data names it (a tabular site column's values).
    group_names: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if self.features.ndim != 2 or self.labels.ndim != 2:
            raise ValueError("features and labels must be 2-D (rows × columns)")
        if self.labels.shape != (n, len(self.task_names)):
            raise ValueError(
                f"labels have shape {self.labels.shape}, expected ({n}, {len(self.task_names)})"
            )
        if self.groups.shape != (n,):
            raise ValueError(f"groups have shape {self.groups.shape}, expected ({n},)")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    def subset(self, rows: npt.NDArray[np.integer], name: str | None = None) -> Dataset:
        return Dataset(
            features=self.features[rows],
            labels=self.labels[rows],
            task=self.task,
            task_names=self.task_names,
            groups=self.groups[rows],
            name=name or self.name,
            feature_names=self.feature_names,
            group_names=self.group_names,
        )


@dataclass(frozen=True)
class SiteData:
    """What one site holds: its training and its held-out test data, and optionally a
    validation fold (held out of training, for model selection)."""

    train: Dataset
    test: Dataset
    validation: Dataset | None = None
