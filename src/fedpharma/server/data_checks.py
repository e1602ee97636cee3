"""The coordinator's data checks at join: each site's pass/fail per rule, refused or warned.

Each site checks its own rows against the declared schema and answers a
:class:`~fedpharma.core.protocol.DataCheckTask` with the ``rule:column`` keys that passed and
failed (:mod:`fedpharma.data.checks`). The coordinator expects every rule it can derive from the
schema; a key neither passed nor failed counts as failed, a site that does not answer is refused
where any rule refuses. Messages name the rule and the column, never a value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedpharma.core.config import DataChecksConfig
from fedpharma.core.dataset import Dataset, Objective
from fedpharma.core.protocol import Channel, DataCheckReply, DataCheckTask, Task
from fedpharma.data.checks import check_data
from fedpharma.data.tabular import TabularSchema
from fedpharma.server.round import sort_replies


@dataclass(frozen=True)
class DataCheckOutcome:
    """Per site, the failed ``rule:column`` keys the policy refuses for, and those it warns of."""

    refused: dict[str, tuple[str, ...]] = field(default_factory=dict)
    warned: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [
            f"site {s} refused: data check failed for {_named(k)}" for s, k in self.refused.items()
        ]
        out += [
            f"site {s} warned: data check failed for {_named(k)}" for s, k in self.warned.items()
        ]
        return out


def expected_keys(schema: TabularSchema, task: Objective) -> tuple[str, ...]:
    """Every ``rule:column`` a site's summary must cover, from the schema alone."""
    width = len(schema.feature_names)
    probe = Dataset(
        features=np.zeros((0, width), dtype=np.float32),
        labels=np.zeros((0, len(schema.label_columns)), dtype=np.float32),
        task=task,
        task_names=schema.label_columns,
        groups=np.zeros(0, dtype=np.int64),
    )
    return tuple(o.key for o in check_data(schema, probe))


def gather_data_checks(
    channel: Channel,
    run_id: str,
    schema: TabularSchema,
    task: Objective,
    policy: DataChecksConfig,
    timeout: float | None = None,
) -> DataCheckOutcome:
    tasks: dict[str, Task] = {site: DataCheckTask(run_id, 0) for site in channel.available_sites()}
    results, _, _ = sort_replies(tasks, channel.exchange(tasks, timeout))
    expected = expected_keys(schema, task)
    outcome = DataCheckOutcome()
    for site in sorted(tasks):
        reply = results.get(site)
        passed = set(reply.passed) if isinstance(reply, DataCheckReply) else set()
        failed = [key for key in expected if key not in passed]
        refused = tuple(k for k in failed if _action(policy, k) == "refuse")
        warned = tuple(k for k in failed if _action(policy, k) == "warn")
        if refused:
            outcome.refused[site] = refused
        if warned:
            outcome.warned[site] = warned
    return outcome


def _action(policy: DataChecksConfig, key: str) -> str:
    return str(getattr(policy, key.split(":", 1)[0]))


def _named(keys: tuple[str, ...]) -> str:
    return ", ".join(f"rule {k.split(':', 1)[0]!r} on column {k.split(':', 1)[1]!r}" for k in keys)
