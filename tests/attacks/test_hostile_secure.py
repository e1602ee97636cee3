"""A hostile site answers a phase of secure aggregation with a message that does not parse, or
with a message of another round. The collector drops it and the round goes on with the others;
the rejection must reach the audit log (``result_rejected``) as a plaintext one does, naming the
site. Weakened twin: the collector's drops not told to the round loop's hook — the log says
nothing about the rejected message.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedpharma.core.config import SecureConfig
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import SecureReply
from fedpharma.models.base import FitOutput
from fedpharma.secure import create_secret_context
from fedpharma.secure.identity import ephemeral_consortium
from fedpharma.server import secure as secure_module
from fedpharma.server.audit import AuditLog, read_entries
from fedpharma.server.federation import Federation, FederationSettings
from fedpharma.server.round import sort_replies
from fedpharma.server.run_observers import AuditRejections
from fedpharma.server.secure import CKKSCollector, SecAggCollector
from fedpharma.site.runtime import SiteRuntime
from fedpharma.site.secure import SecureParticipation
from fedpharma.strategy import FedAvg
from fedpharma.transport.inprocess import InProcessChannel

W0 = Parameters.from_dict({"w": np.linspace(-0.5, 0.5, 24).reshape(4, 6), "b": np.zeros(4)})
SITES = ("site-a", "site-b", "site-c", "site-d", "site-e")
HOSTILE = "site-c"
CONSORTIUM, IDENTITIES = ephemeral_consortium(SITES)
KEY = create_secret_context()
# The phase whose reply the hostile site corrupts: secagg's masked input, CKKS's upload.
PHASES = {"secagg": "masked_input", "ckks": "encrypted_update"}


class StepTrainer:
    """Moves the weights by a small site-specific step."""

    def __init__(self, index: int) -> None:
        self.index = index

    def fit(self, params, data, *, epochs, seed, proximal_mu=0.0):
        moved = tuple((a + 0.01 * (self.index + 1)).astype(a.dtype) for a in params.arrays)
        return FitOutput(Parameters(params.names, moved), len(data), 0.5, 0.0)

    def predict(self, params, data):
        return np.zeros((len(data), 1), dtype=np.float32)


def _data(n: int) -> Dataset:
    rng = np.random.default_rng(n)
    return Dataset(
        features=rng.normal(size=(n, 4)).astype(np.float32),
        labels=rng.normal(size=(n, 1)).astype(np.float32),
        task="regression",
        task_names=("y",),
        groups=np.arange(n),
    )


class HostileChannel(InProcessChannel):
    """Delivers every reply, except that ``HOSTILE``'s reply in ``phase`` is ``how``: cut to a
    few bytes (it does not parse) or claimed for another round."""

    def __init__(self, phase: str, how: str) -> None:
        sites = {
            name: SiteRuntime(
                name,
                SiteData(_data(20 + 5 * i), _data(5)),
                StepTrainer(i),
                secure=SecureParticipation(IDENTITIES[name], CONSORTIUM, ckks_key=KEY),
            )
            for i, name in enumerate(SITES)
        }
        super().__init__(sites)
        self.phase, self.how = phase, how

    def exchange(self, tasks, timeout=None):
        replies = super().exchange(tasks, timeout)
        reply = replies.get(HOSTILE)
        if isinstance(reply, SecureReply) and reply.phase == self.phase:
            if self.how == "garbled":
                replies[HOSTILE] = dataclasses.replace(reply, payload=reply.payload[:10])
            else:
                replies[HOSTILE] = dataclasses.replace(reply, round=reply.round + 7)
        return replies


def run_secure_round(tmp_path, mode: str, how: str):
    audit = AuditLog(tmp_path / "audit.jsonl", durable=False)
    collector = (
        CKKSCollector(SecureConfig(mode="ckks"), KEY.public_context())
        if mode == "ckks"
        else SecAggCollector(SecureConfig(mode="secagg", max_examples=1000))
    )
    federation = Federation(
        FedAvg(),
        FederationSettings(min_sites=3),
        collector=collector,
        on_rejected=AuditRejections(audit),
    )
    result = federation.run(HostileChannel(PHASES[mode], how), W0, 1, run_id="run-s")
    audit.close()
    return result, read_entries(tmp_path / "audit.jsonl")


@pytest.mark.parametrize("how", ["garbled", "another_round"])
@pytest.mark.parametrize("mode", ["secagg", "ckks"])
def test_a_rejected_secure_message_is_audited_naming_the_site(tmp_path, mode, how):
    result, entries = run_secure_round(tmp_path, mode, how)
    rejected = [e for e in entries if e.kind == "result_rejected"]
    assert [(e.site, e.round) for e in rejected] == [(HOSTILE, 1)]
    assert rejected[0].reason.startswith("round loop: ")
    assert not np.allclose(result.flatten(), W0.flatten())  # the others' round went on


# CKKS's upload answers the train task itself, which the round loop validates (and audits) before
# the collector sees it: only its unparsable payload is the collector's to reject.
@pytest.mark.parametrize(
    ("mode", "how"), [("secagg", "garbled"), ("secagg", "another_round"), ("ckks", "garbled")]
)
def test_weakened_twin_drops_kept_from_the_hook_leave_the_log_silent(
    tmp_path, monkeypatch, mode, how
):
    def keep_only(self, site, reason):
        self.reasons[site] = reason

    def unhooked(tasks, replies, on_rejected=None):
        return sort_replies(tasks, replies)

    monkeypatch.setattr(secure_module._Drops, "reject", keep_only)
    monkeypatch.setattr(secure_module, "sort_replies", unhooked)
    _, entries = run_secure_round(tmp_path, mode, how)
    assert not [e for e in entries if e.kind == "result_rejected"]
