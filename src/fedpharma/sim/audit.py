"""The privacy audit of a simulation: measured membership leakage, beside the formal ε.

After training, each site's records are attacked twice with the two membership-inference
attacks of :mod:`fedpharma.evaluation.membership` — the loss threshold (Yeom et al. 2018, §3.2)
and its difficulty-calibrated variant (Watson et al. 2022, §3):

- **final model**: the federated model every partner receives. Members are the site's training
  rows, non-members its held-out test rows; the calibration reference is the model the
  federation started from (after the label-statistics start, which saw only per-task sums),
  trained on neither.
- **site update**: what the site would send in one more round from the final model — its raw
  update Δ_k, which an honest-but-curious coordinator holds without secure aggregation (with
  SecAgg or CKKS it only ever sees the sum). The update comes from the site's own train path
  (:meth:`SiteRuntime.handle` on the federation's plaintext train task), so under record-level DP
  it is DP-SGD's, under site-level DP it is clipped, exactly as the site computes it (with
  distributed noise the site refuses to send its update outside secure aggregation, and the
  audit reports that instead). That extra round runs on twin
  runtimes whose ledgers live in a scratch folder: the audit is a measurement, not a release,
  so the sites' real ledgers are not charged, and a ``require_secure`` policy does not stop
  the audit from computing the update that secure aggregation would have masked.

Non-members are the site's test rows. Where the site's split keeps groups apart (scaffold
split of molecules) they are also out of distribution, so the attack measures that shift on
top of memorisation and its AUC is an **upper bound** on the leakage (``nonmember_shift``);
where every row shares one group the split is random and the AUC is unbiased. The training
data is left as it is rather than holding out an in-distribution audit subset, so switching
the audit on never changes the model it audits. Both sides are balanced by subsampling the
larger one (:func:`~fedpharma.evaluation.membership.audit_membership`).
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
            reply = runtime.handle(
                TrainTask(run_id, rnd, start, federation.train_settings(rnd, name))
            )
            if isinstance(reply, TrainResult):
                updates[name] = reply.update
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
