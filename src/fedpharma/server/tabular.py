"""A deployed tabular run's preparation, before round 1: data checks, federated fit, hand-out.

The same protocol messages a simulation exchanges (:mod:`fedpharma.sim.tabular`): each admitted
site checks its rows against the declared schema (:mod:`fedpharma.server.data_checks`; a site
refused by ``[data_checks]`` is dismissed, told the rule and the column), the others send their
feature sums, plain or under DP (:mod:`fedpharma.server.feature_statistics`), the coordinator
fits imputation and standardization with an indicator for every imputing column (so the model's
width is the schema's, :func:`~fedpharma.data.federated_preprocessing.fitted_width`), writes it
with its digest to ``preprocessing.json`` and sends it to every site, which applies it to its own
rows and answers with the digest it computed; a site whose digest differs is dismissed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from fedpharma.core.config import RunConfig
from fedpharma.core.dataset import Objective
from fedpharma.core.errors import ConfigError
from fedpharma.core.protocol import (
    Channel,
    Failure,
    PreprocessingApplied,
    PreprocessingTask,
    Reply,
    Task,
)
from fedpharma.data.federated_preprocessing import FittedPreprocessing
from fedpharma.data.schema import load_schema, schema_beside
from fedpharma.data.tabular import TabularSchema
from fedpharma.secure.ckks import PublicContext
from fedpharma.server.data_checks import gather_data_checks
from fedpharma.server.feature_statistics import (
    fit_preprocessing,
    secure_calibration,
    secure_statistics,
    standardizes_targets,
    write_fit,
)
from fedpharma.server.label_statistics import label_prior

Dismiss = Callable[[str, str], None]


def declared_schema(recipe: RunConfig) -> TabularSchema | None:
    """The consortium's declared schema for a tabular file recipe: ``[dataset] schema``, else
    the file beside the recipe's data path if there is one; ``None`` for other data, or for
    tabular data without a schema (then no fit is made, and ``[server] n_features`` gives the
    width). The coordinator holds no data, so it never infers one."""
    ds = recipe.dataset
    if ds.kind != "tabular" or ds.path is None:
        return None
    path = Path(ds.schema) if ds.schema is not None else schema_beside(Path(ds.path))
    if ds.schema is not None and not path.exists():
        raise ConfigError([f"[dataset] schema {ds.schema!r} does not exist"], "run config")
    return load_schema(path) if path.exists() else None


class _Excluding:
    """A channel without the sites dismissed so far."""

    def __init__(self, channel: Channel, excluded: set[str]) -> None:
        self._channel, self._excluded = channel, excluded

    def available_sites(self) -> tuple[str, ...]:
        return tuple(s for s in self._channel.available_sites() if s not in self._excluded)

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        return self._channel.exchange(tasks, timeout)


def prepare_tabular_sites(
    channel: Channel,
    run_id: str,
    recipe: RunConfig,
    schema: TabularSchema,
    run_dir: Path,
    say: Callable[[str], None],
    dismiss: Dismiss,
    timeout: float | None = None,
    ckks_context: PublicContext | None = None,
) -> FittedPreprocessing:
    """Check, fit and hand out the preprocessing; return the fit. Under ``[secure]`` the
    statistics are a secure sum (CKKS: with the coordinator's public ``ckks_context``)."""
    task: Objective = "classification" if recipe.dataset.task == "classification" else "regression"
    checks = gather_data_checks(channel, run_id, schema, task, recipe.data_checks, timeout)
    for line in checks.lines():
        say(line)
    excluded: set[str] = set()
    for site, keys in checks.refused.items():
        dismiss(site, f"refused at join: data check failed for {', '.join(keys)}")
        excluded.add(site)
    admitted = _Excluding(channel, excluded)
    fitted, how = fit_preprocessing(
        admitted,
        run_id,
        schema,
        timeout,
        noise_multiplier=recipe.privacy.statistics_noise_multiplier,
        indicate_all=True,
        standardize_targets=standardizes_targets(recipe, task),
        label_prior=label_prior(recipe, len(schema.label_columns)),
        secure=secure_statistics(recipe, ckks_context),
        calibration_labels=secure_calibration(recipe, task),
    )
    say(how)
    write_fit(run_dir, fitted)
    hand_out_fit(admitted, run_id, fitted, say, dismiss, timeout)
    return fitted


def hand_out_fit(
    channel: Channel,
    run_id: str,
    fitted: FittedPreprocessing,
    say: Callable[[str], None],
    dismiss: Dismiss,
    timeout: float | None = None,
) -> None:
    """Send the fit to every listed site (again, on resume); dismiss a site that did not apply
    exactly this fit."""
    sites = channel.available_sites()
    fit = fitted.to_json()
    tasks: dict[str, Task] = {site: PreprocessingTask(run_id, 0, fit) for site in sites}
    replies = channel.exchange(tasks, timeout)
    digest = fitted.digest()
    applied = []
    for site in sites:
        reply = replies.get(site)
        if isinstance(reply, PreprocessingApplied) and reply.digest == digest:
            applied.append(site)
            continue
        why = getattr(reply, "reason", "another digest") if reply is not None else "no reply"
        say(f"site {site} did not apply the fitted preprocessing ({str(why)[:200]})")
        dismiss(site, "refused: it did not apply the consortium's fitted preprocessing")
    say(f"fitted preprocessing {digest[:12]} applied at {len(applied)} site(s)")
