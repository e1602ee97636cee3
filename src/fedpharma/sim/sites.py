"""A simulated consortium's sites: the data each one holds and the runtime that answers for it.

Used by the simulation's driver (:mod:`fedpharma.sim.engine`) and by the workers of the process
and Ray backends (:mod:`fedpharma.sim.backends`), which build only the sites they host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedpharma.core.config import RunConfig
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.data.datasets import featurizes_molecules, load_dataset
from fedpharma.data.partition import partition, scaffold_split
from fedpharma.data.permutation import site_permutation
from fedpharma.data.preprocessing import SiteDescription
from fedpharma.models.base import Trainer
from fedpharma.models.factory import build_private_trainer, build_trainer
from fedpharma.secure.ckks import SecretContext
from fedpharma.secure.identity import ephemeral_consortium
from fedpharma.sim.privacy import site_policy
from fedpharma.site.runtime import SiteRuntime
from fedpharma.site.secure import SecureParticipation


@dataclass(frozen=True)
class Simulation:
    """The sites of a simulated consortium, before any training."""

    sites: dict[str, SiteData]
    dataset: Dataset
    invalid_molecules: int


def prepare_sites(config: RunConfig) -> Simulation:
    """Load, partition and split the data, reproducibly from ``config.seed``."""
    dataset, report = load_dataset(config.dataset, config.features)
    rng = np.random.default_rng(config.seed)
    parts = partition(dataset, config.partition, rng)
    sites = {}
    for index, rows in enumerate(parts, start=1):
        name = f"site-{index}"
        local = dataset.subset(rows, name=name)
        train, test = scaffold_split(local.groups, config.dataset.test_fraction, rng)
        sites[name] = SiteData(local.subset(train), local.subset(test))
    invalid = 0 if report is None else report.n_input - report.n_valid
    return Simulation(sites, dataset, invalid)


def site_trainers(config: RunConfig, sim: Simulation, shared: Trainer) -> dict[str, Trainer]:
    """Each site's trainer: ``shared`` for a shared model; with ``[model] private_heads`` a
    fresh trainer per site, over its own tasks, that keeps its head at the site."""
    if not config.model.private_heads:
        return dict.fromkeys(sim.sites, shared)
    return {name: build_trainer(config, data.train) for name, data in sim.sites.items()}


def build_site_runtimes(
    config: RunConfig,
    sim: Simulation,
    trainers: dict[str, Trainer],
    run_dir: Path,
    ckks_key: SecretContext | None = None,
) -> dict[str, SiteRuntime]:
    """One runtime per simulated site, each with its own policy and ledger under
    ``run_dir/sites/NAME``, for record-level DP a DP-SGD trainer, and under secure aggregation
    an identity from a throwaway consortium CA (the sites of one process share it; deployment
    uses the provisioned PKI) and the CKKS key if any."""
    private_trainer = (
        # Simulation is reproducible from the seed: its DP-SGD noise is seeded (not a deployment).
        build_private_trainer(config, sim.dataset, reproducible=True)
        if config.privacy.record_level
        else None
    )
    site_permutation(config.features, None)  # a simulation holds no permutation key: refuse
    molecules = featurizes_molecules(config.dataset.name, config.dataset.kind)
    preprocessing = SiteDescription.of_site(config.features) if molecules else None
    secure: dict[str, SecureParticipation] = {}
    if config.secure.enabled:
        consortium, identities = ephemeral_consortium(sorted(sim.sites))
        secure = {
            name: SecureParticipation(
                identities[name], consortium, min_sites=config.strategy.min_sites, ckks_key=ckks_key
            )
            for name in sim.sites
        }
    return {
        name: SiteRuntime(
            name,
            data,
            trainers[name],
            policy=site_policy(config, run_dir / "sites" / name),
            private_trainer=private_trainer,
            # Simulation noise is reproducible from the seed; deployment uses the OS CSPRNG.
            noise_source=lambda seed: np.random.default_rng(seed),
            secure=secure.get(name),
            preprocessing=preprocessing,
        )
        for name, data in sim.sites.items()
    }
