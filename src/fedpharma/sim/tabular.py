"""The simulated consortium's tabular preprocessing: schema notice, data checks, federated fit.

Sites first check their own rows against the schema (pass/fail per rule, refused or warned by
``[data_checks]``, :mod:`fedpharma.server.data_checks`); the sites admitted then answer the
coordinator's feature-statistics task over the in-process channel (the protocol messages a
deployment carries), the coordinator fits imputation and standardization from the summed
statistics (:mod:`fedpharma.server.feature_statistics`), and every site applies the fit to its
own train and test rows. The fit is written to the run directory with its digest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import cast

import numpy as np

from fedpharma.core.config import RunConfig
from fedpharma.core.dataset import Dataset, SiteData, dense
from fedpharma.core.errors import ConfigError, DataError
from fedpharma.data.datasets import resolve_schema
from fedpharma.data.federated_preprocessing import FittedPreprocessing
from fedpharma.data.schema import schema_toml
from fedpharma.models.base import Trainer
from fedpharma.secure.ckks import SecretContext
from fedpharma.secure.identity import ephemeral_consortium
from fedpharma.server.data_checks import gather_data_checks
from fedpharma.server.feature_statistics import (
    PREPROCESSING_FILE,
    fit_preprocessing,
    read_fit,
    secure_calibration,
    secure_statistics,
    standardizes_targets,
    write_fit,
)
from fedpharma.server.label_statistics import label_prior
from fedpharma.sim.privacy import site_policy
from fedpharma.site.runtime import SiteRuntime
from fedpharma.site.secure import SecureParticipation
from fedpharma.transport.inprocess import InProcessChannel


def is_tabular_file(config: RunConfig) -> bool:
    return config.dataset.kind == "tabular" and config.dataset.path is not None


def preprocess_sites(
    config: RunConfig,
    sites: dict[str, SiteData],
    dataset: Dataset,
    run_dir: Path,
    run_id: str,
    say: Callable[[str], None],
    ckks_key: SecretContext | None = None,
) -> tuple[dict[str, SiteData], Dataset, FittedPreprocessing]:
    """Each site's data, and the whole dataset, through the consortium's federated fit; under
    ``[secure]`` the statistics are a secure sum among the sites (each with an identity from a
    throwaway consortium CA, and ``ckks_key`` for CKKS), as the updates will be."""
    schema, declared = resolve_schema(config.dataset)
    if config.partition.method == "natural" and schema.site_column is None:
        raise ConfigError(
            [
                '[partition] method "natural" needs [dataset] `site_column`, or a column of '
                'role = "site" in the schema'
            ],
            str(declared or config.dataset.path),
        )
    if declared is None:
        say(
            "no schema declared for the data; inferred (save and edit it with `fedpharma schema "
            f"infer {config.dataset.path} --label ... --out FILE`, then set [dataset] schema):\n"
            + schema_toml(schema)
        )
    # Checks and statistics are answered before any model exists: the runtimes hold no trainer.
    secure: dict[str, SecureParticipation] = {}
    if config.secure.enabled:
        consortium, identities = ephemeral_consortium(sorted(sites))
        secure = {
            name: SecureParticipation(
                identities[name], consortium, min_sites=config.strategy.min_sites, ckks_key=ckks_key
            )
            for name in sites
        }
    runtimes = {
        name: SiteRuntime(
            name,
            data,
            cast(Trainer, None),
            policy=site_policy(config, run_dir / "sites" / name),
            schema=schema,
            noise_source=_statistics_noise(config.seed, index),
            secure=secure.get(name),
        )
        for index, (name, data) in enumerate(sites.items())
    }
    checks = gather_data_checks(
        InProcessChannel(runtimes), run_id, schema, dataset.task, config.data_checks
    )
    for line in checks.lines():
        say(line)
    sites = {name: data for name, data in sites.items() if name not in checks.refused}
    if not sites:
        raise DataError("every site failed a data check the run refuses for; see the lines above")
    runtimes = {name: runtimes[name] for name in sites}
    fitted, how = fit_preprocessing(
        InProcessChannel(runtimes),
        run_id,
        schema,
        noise_multiplier=config.privacy.statistics_noise_multiplier,
        standardize_targets=standardizes_targets(config, dataset.task),
        label_prior=label_prior(config, dataset.n_tasks),
        secure=secure_statistics(config, None if ckks_key is None else ckks_key.public_context()),
        calibration_labels=secure_calibration(config, dataset.task),
    )
    say(how)
    write_fit(run_dir, fitted)
    return apply_fit(fitted, sites), transformed(fitted, dataset), fitted


def apply_fit(fitted: FittedPreprocessing, sites: Mapping[str, SiteData]) -> dict[str, SiteData]:
    """Each site's rows through the consortium's fit."""
    return {
        name: SiteData(
            transformed(fitted, d.train),
            transformed(fitted, d.test),
            None if d.validation is None else transformed(fitted, d.validation),
        )
        for name, d in sites.items()
    }


def hosted_fit(config: RunConfig, run_dir: Path) -> FittedPreprocessing:
    """The fit the driver made and wrote to ``run_dir``, for sites hosted in a worker process
    or a Ray actor (the driver fits before it opens them)."""
    schema, _declared = resolve_schema(config.dataset)
    if not (run_dir / PREPROCESSING_FILE).exists():
        raise ConfigError(
            [
                f"a worker's tabular sites need the consortium's fit in {run_dir}; it is made "
                "by `simulate` before the workers start (see fedpharma.sim.tabular)"
            ],
            "[simulation]",
        )
    return read_fit(run_dir, schema)


def transformed(fitted: FittedPreprocessing, data: Dataset) -> Dataset:
    """``data``'s features through the fit."""
    return dataclasses.replace(
        data, features=fitted.transform(dense(data.features)), feature_names=fitted.output_names
    )


def _statistics_noise(seed: int, index: int) -> Callable[[int], np.random.Generator]:
    """A simulated site's generator for its DP feature sums: reproducible from the run seed."""
    return lambda rnd: np.random.default_rng([seed, index, rnd, 0x57A7])
