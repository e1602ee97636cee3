"""The privacy audit of a simulation: measured membership leakage, beside the formal ε.

Each site's records are attacked with the two attacks of :mod:`fedpharma.evaluation.membership`
(Yeom et al. 2018, §3.2; Watson et al. 2022, §3), against the final model and against the raw
update Δ_k the site would send in one more round (computed by its own train path on twin runtimes
whose ledgers are scratch: the audit is a measurement, not a release). Non-members are the site's
test rows; under a scaffold split the AUC is an upper bound (``nonmember_shift``). The full
account: ``docs/privacy-audit.md``.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ParamSpec

import numpy as np

from fedpharma.core.config import RunConfig
from fedpharma.core.dataset import SiteData
from fedpharma.core.errors import DataError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import Refusal, TrainResult, TrainTask
from fedpharma.core.protocol.control import split_control
from fedpharma.evaluation.membership import (
    AttackResult,
    MembershipAudit,
    Predictor,
    audit_membership,
    audit_update,
)
from fedpharma.report.summary import (
    AttackScores,
    AuditTarget,
    NotAudited,
    PrivacyAudit,
    SiteAudit,
)
from fedpharma.server.federation import Federation
from fedpharma.site.runtime import SiteRuntime

RuntimeFactory = Callable[[RunConfig, Path], Mapping[str, SiteRuntime]]
"""Builds the simulation's site runtimes for a recipe, with their state under a folder."""

_P = ParamSpec("_P")


def audit_privacy(
    config: RunConfig,
    sites: Mapping[str, SiteData],
    predictors: Mapping[str, Predictor],
    federation: Federation,
    runtimes_for: RuntimeFactory,
    *,
    run_id: str,
    reference: Parameters,
    final: Parameters,
    rng: np.random.Generator,
) -> PrivacyAudit:
    """Both attacks on the final model and on each site's raw update, the summary's
    ``privacy_audit`` section.

    ``predictors[site]`` applies a model at ``site``; ``runtimes_for`` builds the twin runtimes
    (see the module docstring). An audit that cannot run (a refused task, a diverged model) is
    :class:`NotAudited` with the reason rather than an error: the run has finished by then.
    """
    final_model = {
        name: _attempt(
            audit_membership, predictors[name], final, reference, data.train, data.test, rng=rng
        )
        for name, data in sites.items()
    }
    # After the final-model audit: a site's trainer may hold state (a private head) that
    # the extra round moves on.
    updates = next_round_updates(config, federation, runtimes_for, run_id=run_id, start=final)
    audited = {}
    for name, data in sites.items():
        update = updates[name]
        site_update = (
            _attempt(audit_update, predictors[name], final, update, data.train, data.test, rng=rng)
            if isinstance(update, Parameters)
            else NotAudited(update)
        )
        audited[name] = SiteAudit(
            nonmember_shift=bool(not np.isin(data.test.groups, data.train.groups).any()),
            final_model=final_model[name],
            site_update=site_update,
        )
    return PrivacyAudit(secure_aggregation=config.secure.mode, sites=audited)


def next_round_updates(
    config: RunConfig,
    federation: Federation,
    runtimes_for: RuntimeFactory,
    *,
    run_id: str,
    start: Parameters,
) -> dict[str, Parameters | str]:
    """Each site's raw update in round ``config.rounds + 1`` from ``start``, or why there is none.

    The task is the federation's own (epochs, seed, μ, DP settings) without the secure-aggregation
    settings; twin runtimes with scratch ledgers answer it (see the module docstring).
    """
    rnd = config.rounds + 1
    recipe = dataclasses.replace(
        config, site_policy=dataclasses.replace(config.site_policy, require_secure=False)
    )
    updates: dict[str, Parameters | str] = {}
    with tempfile.TemporaryDirectory(prefix="fedpharma-audit-") as scratch:
        for name, runtime in runtimes_for(recipe, Path(scratch)).items():
            settings = federation.train_settings(rnd, name)
            # SCAFFOLD: the task carries the server's variate; the twin's own starts at zero.
            sent = federation.strategy.train_parameters(rnd, start)
            reply = runtime.handle(TrainTask(run_id, rnd, sent, settings))
            if isinstance(reply, TrainResult):
                scaffold = settings.local.scaffold
                updates[name] = split_control(reply.update)[0] if scaffold else reply.update
            elif isinstance(reply, Refusal):
                updates[name] = f"the site refused the audit round ({reply.kind}): {reply.reason}"
            else:
                updates[name] = f"the site answered the audit round with a {type(reply).__name__}"
    return updates


def _attempt(
    audit: Callable[_P, MembershipAudit], *args: _P.args, **kwargs: _P.kwargs
) -> AuditTarget | NotAudited:
    """The audit's scores, or why it could not run (e.g. a diverged model's NaN predictions)."""
    try:
        result = audit(*args, **kwargs)
    except DataError as exc:
        return NotAudited(str(exc))
    return AuditTarget(_attack(result.loss_threshold), _attack(result.calibrated))


def _attack(result: AttackResult) -> AttackScores:
    return AttackScores(result.auc, result.advantage, result.n_members, result.n_nonmembers)
