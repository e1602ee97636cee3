"""A simulated consortium's sites: the data each one holds and the runtime that answers for it.

Used by the simulation's driver (:mod:`fedpharma.sim.engine`) and by the workers of the process
and Ray backends (:mod:`fedpharma.sim.backends`), which build only the sites they host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedpharma.core.config import RunConfig
from fedpharma.core.dataset import Dataset, SiteData, TargetScaling
from fedpharma.data.datasets import featurizes_molecules, load_dataset
from fedpharma.data.partition import holdout_split, partition
from fedpharma.data.permutation import site_permutation
from fedpharma.data.preprocessing import SiteDescription, reference_smiles
from fedpharma.models.base import Trainer
from fedpharma.models.factory import build_private_trainer, build_trainer
from fedpharma.models.plugin_identity import plugin_identity, reads_smiles
from fedpharma.secure.ckks import SecretContext
from fedpharma.secure.identity import ephemeral_consortium
from fedpharma.sim.checks import check_test_sizes
from fedpharma.sim.privacy import site_policy
from fedpharma.site.plugin_approval import PluginApproval
from fedpharma.site.runtime import SiteRuntime
from fedpharma.site.secure import SecureParticipation


@dataclass(frozen=True)
class Simulation:
    """The sites of a simulated consortium, before any training."""

    sites: dict[str, SiteData]
    dataset: Dataset
    invalid_molecules: int
    import_summary: str = ""  # the molecule file's import report (rows and reasons, no SMILES)
    # Tabular regression: the fitted standardization of the targets every trainer applies
    targets: TargetScaling | None = None


def prepare_sites(config: RunConfig) -> Simulation:
    """Load, partition and split the data, reproducibly from ``config.seed``."""
    dataset, report = load_dataset(
        config.dataset, config.features, smiles=reads_smiles(config.model.plugin)
    )
    rng = np.random.default_rng(config.seed)
    parts = partition(dataset, config.partition, rng)
    sites = {}
    molecules = featurizes_molecules(config.dataset.name, config.dataset.kind)
    for index, rows in enumerate(parts, start=1):
        name = _site_name(config, dataset, rows, index)
        local = dataset.subset(rows, name=name)
        train, test = holdout_split(local, config.dataset.test_fraction, rng, molecules=molecules)
        sites[name] = split_validation(
            SiteData(local.subset(train), local.subset(test)),
            config.evaluation.validation_fraction,
            rng,
            molecules=molecules,
        )
    check_test_sizes({name: len(data.test) for name, data in sites.items()}, len(dataset))
    invalid = 0 if report is None else report.n_input - report.n_valid
    return Simulation(sites, dataset, invalid, "" if report is None else report.summary())


def split_validation(
    site: SiteData, fraction: float, rng: np.random.Generator, *, molecules: bool = True
) -> SiteData:
    """``site`` with ``fraction`` of its training rows held out as its validation fold
    (unchanged when ``fraction`` is 0), split like the test set (by scaffold for molecules)."""
    if fraction <= 0:
        return site
    train, validation = holdout_split(site.train, fraction, rng, molecules=molecules)
    return SiteData(site.train.subset(train), site.test, site.train.subset(validation))


def _site_name(config: RunConfig, dataset: Dataset, rows: npt.NDArray[np.int64], index: int) -> str:
    """The data's own name for a natural site (its site-column value), else ``site-INDEX``."""
    if config.partition.method == "natural" and dataset.group_names:
        name = dataset.group_names[int(dataset.groups[rows[0]])]
        if name != "pooled" and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
            return name
    return f"site-{index}"


def site_trainers(config: RunConfig, sim: Simulation, shared: Trainer) -> dict[str, Trainer]:
    """Each site's trainer: ``shared`` for a shared model; with ``[model] private_heads`` a
    fresh trainer per site, over its own tasks, that keeps its head at the site."""
    if not config.model.private_heads:
        return dict.fromkeys(sim.sites, shared)
    return {
        name: build_trainer(config, data.train, targets=sim.targets)
        for name, data in sim.sites.items()
    }


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
    uses the provisioned PKI) and the CKKS key if any. Every site checks the recipe's model
    plugin against ``[site_policy] approved_plugins``."""
    private_trainer = (
        # Simulation is reproducible from the seed: its DP-SGD noise is seeded (not a deployment).
        build_private_trainer(config, sim.dataset, reproducible=True, targets=sim.targets)
        if config.privacy.record_level
        else None
    )
    site_permutation(config.features, None)  # a simulation holds no permutation key: refuse
    molecules = featurizes_molecules(config.dataset.name, config.dataset.kind)
    from fedpharma.models.plugin import plugin_inputs  # torch: only when used

    inputs = plugin_inputs(config.model.plugin, reference_smiles) if molecules else {}
    preprocessing = (
        SiteDescription.of_site(config.features, model_inputs=inputs) if molecules else None
    )
    approval = PluginApproval(
        plugin_identity(config.model.plugin), config.site_policy.approved_plugins
    )
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
            approval=approval,
        )
        for name, data in sim.sites.items()
    }
