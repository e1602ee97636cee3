"""A deployed site: its own data, featurized with the run's recipe, served over gRPC + mTLS.

``fedpharma site --config site.toml`` builds the site from its own config file:

- the run recipe (``run_config``): model, features, training and seed, the *same* file the
  coordinator uses. Its ``[features]`` decide how the site featurizes its molecules; at join
  the site describes that preprocessing (:class:`~fedpharma.data.preprocessing.SiteDescription`) and
  the coordinator refuses it if its copy of the recipe differs;
- optionally the partners' secret fingerprint-permutation key (``permutation_key``), when the
  recipe names one (``[features] permutation_key_id``), and their chemical-overlap key
  (``overlap_key``), without which the site declines the overlap counts;
- its data (``[data]``): a CSV/SDF file of its own, or a bundled dataset name; its held-out test
  split is a scaffold split seeded with the recipe's seed;
- then it dials out to the coordinator (:func:`~fedpharma.transport.grpc.run_site`): it never
  opens a port. Its name is its certificate's common name.

Demo convenience: ``partition_index = k`` (with optional ``n_partitions``) makes the site take
part k of a shared dataset, partitioned and split exactly as ``fedpharma simulate`` does (same
method, seed and order of random draws as ``sim.engine.prepare_sites``). Named ``site-k``, such a
site then trains exactly what simulated site ``site-k`` trains, so a deployment reproduces a
simulation. A real site holds its own file and leaves these keys unset.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedpharma.core.config import DatasetConfig, RunConfig, load_site_policy, site_policy_toml
from fedpharma.core.dataset import SiteData, TargetScaling
from fedpharma.core.deploy_config import SiteConfig, SiteDataConfig
from fedpharma.core.errors import ConfigError, CryptoError, DataError, PolicyRefused
from fedpharma.data.datasets import featurizes_molecules, load_dataset, resolve_schema
from fedpharma.data.overlap import load_overlap_key
from fedpharma.data.partition import holdout_split, partition
from fedpharma.data.permutation import FingerprintPermutation, site_permutation
from fedpharma.data.preprocessing import SiteDescription, reference_smiles
from fedpharma.models.factory import build_private_trainer, build_trainer
from fedpharma.models.plugin_identity import plugin_identity, reads_smiles
from fedpharma.secure.ckks import load_secret_context
from fedpharma.secure.identity import load_identity
from fedpharma.site.checkpoint import SiteModelKeeper
from fedpharma.site.overlap import OverlapParticipation
from fedpharma.site.plugin_approval import PluginApproval, RefusingSite
from fedpharma.site.policy import SitePolicy
from fedpharma.site.runtime import SiteRuntime
from fedpharma.site.scaffold import ControlVariates
from fedpharma.site.secure import SecureParticipation
from fedpharma.site.tabular import Rebuild, TabularPreparation
from fedpharma.site.witness import HeadWitness
from fedpharma.transport.pki import CA_FILE, CERT_FILE, CKKS_SECRET_FILE, KEY_FILE

Status = Callable[[str], None]
LEDGER_FILE, POLICY_FILE = "privacy.sqlite", "policy.toml"
"""In a site's ``state_dir``: its privacy ledger, and the policy in force (a copy of its
``policy`` file, written at start) that ``fedpharma privacy STATE_DIR`` reads."""


def _quiet(_: str) -> None:
    return None


def load_site_data(
    data: SiteDataConfig,
    recipe: RunConfig,
    permutation: FingerprintPermutation | None = None,
    on_status: Status = _quiet,
) -> SiteData:
    """The site's train and held-out test data, featurized with the recipe's ``[features]`` and
    permuted by the partners' ``permutation``, if any. Molecules that could not be used are
    counted by reason in one ``on_status`` line (row numbers, never a structure)."""
    dataset_config = DatasetConfig(
        name=data.name,
        path=data.path,
        kind=data.kind,
        smiles_column=data.smiles_column,
        label_columns=data.label_columns,
        task=data.task,
        duplicates=recipe.dataset.duplicates,
        # a "natural" demo partition needs the recipe's site column
        site_column=recipe.dataset.site_column if data.partition_index is not None else None,
        schema=recipe.dataset.schema,  # tabular: the consortium's declared schema
    )
    test_fraction = (
        recipe.dataset.test_fraction if data.test_fraction is None else data.test_fraction
    )
    dataset, report = load_dataset(
        dataset_config, recipe.features, permutation, smiles=reads_smiles(recipe.model.plugin)
    )
    if report is not None and report.n_kept < report.n_input:
        source = data.path or data.name
        on_status(f"{source}: {report.summary()}")
    molecules = featurizes_molecules(data.name, data.kind)
    rng = np.random.default_rng(recipe.seed)
    if data.partition_index is None:
        train, test = holdout_split(dataset, test_fraction, rng, molecules=molecules)
        return SiteData(dataset.subset(train), dataset.subset(test))
    # Mirror sim.engine.prepare_sites draw for draw: one generator seeded with the run seed
    # partitions the data, then splits site 1, site 2, ... in order.
    n_parts = recipe.partition.n_sites if data.n_partitions is None else data.n_partitions
    if data.partition_index > n_parts:
        raise ConfigError(
            [f"[data] partition_index = {data.partition_index} exceeds {n_parts} partitions"],
            "site config",
        )
    parts = partition(dataset, dataclasses.replace(recipe.partition, n_sites=n_parts), rng)
    for index, rows in enumerate(parts, start=1):
        local = dataset.subset(rows, name=f"site-{index}")
        train, test = holdout_split(local, test_fraction, rng, molecules=molecules)
        if index == data.partition_index:
            return SiteData(local.subset(train), local.subset(test))
    raise DataError(f"the partition made {len(parts)} parts, not {data.partition_index}")


def build_site(
    name: str, config: SiteConfig, recipe: RunConfig, on_status: Status = _quiet
) -> SiteRuntime:
    """The site runtime: its data, the recipe's trainers, the owner's policy and ledger, and
    the description of its preprocessing for the join check. Raises :class:`PolicyRefused`,
    before reading any record or importing any plugin code, if the owner's policy does not
    approve the recipe's model plugin."""
    approval = plugin_approval(config, recipe)
    refusal = approval.refusal()
    if refusal is not None:
        raise PolicyRefused(refusal)
    permutation = site_permutation(recipe.features, config.permutation_key)
    overlap = _overlap(config)
    data = load_site_data(config.data, recipe, permutation, on_status)
    molecules = featurizes_molecules(config.data.name, config.data.kind)
    policy = None
    if config.policy is not None:
        policy_config = load_site_policy(config.policy)
        state_dir = Path(config.state_dir)
        policy = SitePolicy(policy_config, state_dir / LEDGER_FILE)
        # `fedpharma privacy STATE_DIR` reads the ledger next to the policy in force
        in_force = state_dir / POLICY_FILE
        if in_force.resolve() != Path(config.policy).resolve():
            in_force.write_text(site_policy_toml(policy_config), encoding="utf-8")
    from fedpharma.models.plugin import plugin_inputs  # torch: only when used

    trainer = build_trainer(recipe, data.train)  # approved above: may run the plugin's code
    preprocessing = (
        SiteDescription.of_site(
            recipe.features,
            permutation,
            model_inputs=plugin_inputs(recipe.model.plugin, reference_smiles),
        )
        if molecules
        else None
    )
    keeper = SiteModelKeeper(
        Path(config.state_dir),
        name,
        recipe.to_dict(),
        "" if preprocessing is None else preprocessing.to_json(),
    )
    schema = None
    if config.data.kind == "tabular" and config.data.path is not None:
        found, declared = resolve_schema(
            DatasetConfig(
                path=config.data.path,
                kind="tabular",
                label_columns=config.data.label_columns,
                schema=recipe.dataset.schema,
            )
        )
        schema = found if declared is not None else None
    missing = any(
        isinstance(part.features, np.ndarray) and np.isnan(part.features).any()
        for part in (data.train, data.test)
    )
    if schema is None and missing:
        raise DataError(
            "the data has missing feature values and no declared schema says how to impute "
            "them; declare one ([dataset] schema in the run recipe, `fedpharma schema infer` "
            "writes a start) so the consortium fits the imputation"
        )
    runtime = SiteRuntime(
        name,
        data,
        trainer,
        policy=policy,
        private_trainer=build_private_trainer(recipe, data.train) if policy is not None else None,
        secure=_secure(name, config, recipe) if recipe.secure.enabled else None,
        preprocessing=preprocessing,
        schema=schema,
        keeper=keeper,
        variates=ControlVariates(Path(config.state_dir)),
        approval=approval,
        overlap=overlap,
    )
    if schema is not None:
        runtime.tabular = TabularPreparation(data, schema, _rebuild(runtime, recipe))
    return runtime


def _overlap(config: SiteConfig) -> OverlapParticipation | None:
    """The site's part in the chemical overlap, if it holds the partners' key; a key file that
    cannot be read is a :class:`ConfigError`, before any data is read."""
    if config.overlap_key is None:
        return None
    try:
        return OverlapParticipation(load_overlap_key(config.overlap_key))
    except CryptoError as exc:
        raise ConfigError([f"overlap_key: {exc}"], "site config") from exc


def _rebuild(runtime: SiteRuntime, recipe: RunConfig) -> Rebuild:
    """Give ``runtime`` its prepared rows and trainers of their width and target scaling."""

    def rebuild(data: SiteData, targets: TargetScaling | None) -> None:
        runtime.data = data
        runtime.trainer = build_trainer(recipe, data.train, targets=targets)
        if runtime.policy is not None:
            private = build_private_trainer(recipe, data.train, targets=targets)
            runtime.private_trainer = runtime.dp.private_trainer = private

    return rebuild


def plugin_approval(config: SiteConfig, recipe: RunConfig) -> PluginApproval:
    """The recipe's model plugin as installed here, and the digests the owner's policy
    approves (none without a policy file)."""
    approved = () if config.policy is None else load_site_policy(config.policy).approved_plugins
    return PluginApproval(plugin_identity(recipe.model.plugin), approved)


def _secure(name: str, config: SiteConfig, recipe: RunConfig) -> SecureParticipation:
    """The site's part in secure aggregation: its identity and the consortium's CA from its
    provisioned folder (and the CKKS key), its floor for t from its own copy of the recipe."""
    if config.site.tls is None:
        raise ConfigError(
            [
                "[secure] needs this site's folder of `fedpharma provision` (its certificate, "
                "key and CA endorse and check what the sites say); set [site] tls"
            ],
            "site config",
        )
    folder = Path(config.site.tls)
    consortium, identity = load_identity(
        name,
        (folder / CA_FILE).read_bytes(),
        (folder / CERT_FILE).read_bytes(),
        (folder / KEY_FILE).read_bytes(),
    )
    ckks_key = (
        load_secret_context(folder / CKKS_SECRET_FILE) if recipe.secure.mode == "ckks" else None
    )
    return SecureParticipation(
        identity, consortium, min_sites=recipe.strategy.min_sites, ckks_key=ckks_key
    )


def site_name(config: SiteConfig) -> str:
    """The site's name: its certificate's common name (the config's ``name`` must agree)."""
    from fedpharma.transport.grpc import CertificateRefused, SiteTls

    if config.site.tls is None:
        if config.site.name is None:
            raise ConfigError(["[site] an insecure site needs a `name`"], "site config")
        return config.site.name
    certified = SiteTls.from_folder(Path(config.site.tls)).check().common_name
    if config.site.name is not None and config.site.name != certified:
        raise CertificateRefused(
            f"[site] name {config.site.name!r} differs from the certificate's name {certified!r}"
        )
    return certified


def serve(
    config: SiteConfig,
    recipe: RunConfig,
    *,
    on_status: Status = _quiet,
    stop: threading.Event | None = None,
) -> str:
    """Build the site and serve the coordinator until the run ends; return why it ended."""
    from fedpharma.transport.grpc import SiteSettings, SiteTls, run_site

    name = site_name(config)
    runtime: SiteRuntime | RefusingSite
    try:
        runtime = build_site(name, config, recipe, on_status)
        on_status(
            f"site {name}: {len(runtime.data.train)} training and {len(runtime.data.test)} test "
            "records loaded (they stay here)"
        )
    except PolicyRefused as exc:
        # Said to the coordinator too (every task is refused with it), which audits it.
        on_status(f"site {name}: refusing every task: {exc}")
        runtime = RefusingSite(name, str(exc))
    tls = None if config.site.tls is None else SiteTls.from_folder(Path(config.site.tls))
    settings = SiteSettings(
        pull_wait=config.site.pull_wait,
        backoff_max=config.site.backoff_max,
        give_up_after=config.site.give_up_after,
    )
    on_status(f"site {name}: dialing the coordinator at {config.site.coordinator}")
    summary = run_site(
        config.site.coordinator,
        tls,
        runtime,
        site_name=name,
        insecure=config.site.insecure,
        settings=settings,
        stop=stop,
        on_status=on_status,
        witness=HeadWitness(Path(config.state_dir)),
    )
    return f"{summary.ended_because}; {summary.results_sent} result(s) sent"
