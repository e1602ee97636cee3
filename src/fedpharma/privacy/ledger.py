"""A site's own privacy ledger: what its data has spent, kept on its own disk, enforced by it.

The data owner sets a budget (ε, δ) per neighbouring relation in the site's policy. Every task
that touches the site's data is first *checked* — the events already charged, composed with this
task's event, must stay within the budget — and then *charged*, appending its event. A refusal
raises :class:`~fedpharma.core.errors.PrivacyBudgetExceeded` and changes nothing.

Cumulative ε is never a running sum of per-task ε (that would overstate it badly, and would
depend on how tasks were split): it is the accountant's ε of the composition of *every* event
charged under the relation, across rounds and runs (Abadi et al. 2016, §3.2, on why composing the
mechanisms beats summing ε). The events live in an SQLite file, so the budget survives restarts,
and each charge runs in one write transaction (``BEGIN IMMEDIATE``), so two tasks racing for the
last of the budget cannot both pass. Each entry also records the cumulative ε *as computed when
it was charged*, with the accountant and conversion used, for ``fedpharma privacy SITE_DIR``.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from fedpharma.core.errors import ConfigError, PolicyRefused, PrivacyBudgetExceeded
from fedpharma.privacy.accountant import (
    CONVERSION_LABELS,
    Accountant,
    AccountantName,
    Conversion,
    EpsilonReport,
    RdpAccountant,
)
from fedpharma.privacy.events import (
    RELATION_LABELS,
    RELATIONS,
    PrivacyEvent,
    Relation,
    compose,
    event_from_dict,
)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    relation TEXT NOT NULL CHECK (relation IN ('record', 'site')),
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    event TEXT NOT NULL,
    cumulative_epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    accountant TEXT NOT NULL,
    conversion TEXT NOT NULL,
    charged_at TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Budget:
    """The most a data owner allows its data to leak under one relation: (ε, δ)-DP in total."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            problems.append(f"budget epsilon must be a finite number > 0, got {self.epsilon!r}")
        if not (math.isfinite(self.delta) and 0 < self.delta < 1):
            problems.append(f"budget delta must lie in (0, 1), got {self.delta!r}")
        if problems:
            raise ConfigError(problems, source="privacy budget")


@dataclass(frozen=True)
class LedgerEntry:
    """One charge: which run and round, what was released, and the cumulative ε after it."""

    sequence: int
    run_id: str
    round: int
    event: PrivacyEvent
    cumulative: EpsilonReport
    charged_at: str  # UTC, ISO 8601


class PrivacyLedger:
    """Charges and enforces a site's privacy budgets; state is the SQLite file at ``path``.

    ``budgets`` come from the site's policy file on every start (they are the owner's current
    decision, not history, so they are not stored); ``accountant`` composes the events.
    """

    def __init__(
        self,
        path: str | Path,
        budgets: Mapping[Relation, Budget],
        accountant: Accountant | None = None,
    ) -> None:
        unknown = sorted(set(budgets) - set(RELATIONS))
        if unknown:
            raise ConfigError(
                [f"unknown neighbouring relation(s) {unknown}; expected {list(RELATIONS)}"],
                source="privacy budget",
            )
        self.path = Path(path)
        self.budgets = dict(budgets)
        self.accountant = accountant or RdpAccountant()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as connection:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ConfigError(
                    [
                        f"{self.path} is a privacy ledger of schema {version}; this fedpharma "
                        f"reads schema {SCHEMA_VERSION}"
                    ],
                    source="privacy ledger",
                )
            connection.execute(_SCHEMA)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def spent(self, relation: Relation) -> EpsilonReport:
        """The cumulative ε spent under ``relation``, at its budget's δ."""
        budget = self._budget(relation)
        with self._connection() as connection:
            events = self._charged_events(connection, relation)
        return self._cumulative(events, budget, relation)

    def check(self, event: PrivacyEvent, relation: Relation, run_id: str) -> EpsilonReport:
        """The cumulative ε if ``event`` were charged; raises :class:`PrivacyBudgetExceeded`
        (or :class:`PolicyRefused` when the owner set no budget for ``relation``) if it would
        exceed the budget. Changes nothing either way."""
        budget = self._budget(relation)
        with self._connection() as connection:
            events = self._charged_events(connection, relation)
        return self._within_budget(events, event, budget, relation, run_id)

    def charge(
        self, event: PrivacyEvent, relation: Relation, run_id: str, round: int
    ) -> LedgerEntry:
        """Check ``event`` and append it, atomically; raises like :meth:`check`.

        Charge *before* the result leaves the site (ideally before training, with the planned
        event): a release that was not charged is a leak the ledger cannot see.
        """
        budget = self._budget(relation)
        with self._connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                events = self._charged_events(connection, relation)
                cumulative = self._within_budget(events, event, budget, relation, run_id)
                charged_at = datetime.now(UTC).isoformat()
                cursor = connection.execute(
                    "INSERT INTO charges (relation, run_id, round, event, cumulative_epsilon,"
                    " delta, accountant, conversion, charged_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        relation,
                        run_id,
                        round,
                        json.dumps(event.to_dict(), separators=(",", ":")),
                        cumulative.epsilon,
                        cumulative.delta,
                        cumulative.accountant,
                        cumulative.conversion,
                        charged_at,
                    ),
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        sequence = cast(int, cursor.lastrowid)
        return LedgerEntry(sequence, run_id, round, event, cumulative, charged_at)

    def entries(self, relation: Relation | None = None) -> tuple[LedgerEntry, ...]:
        """Every charge (of ``relation``, or all), oldest first."""
        query = (
            "SELECT sequence, relation, run_id, round, event, cumulative_epsilon, delta,"
            " accountant, conversion, charged_at FROM charges"
        )
        with self._connection() as connection:
            if relation is None:
                rows = connection.execute(query + " ORDER BY sequence").fetchall()
            else:
                rows = connection.execute(
                    query + " WHERE relation = ? ORDER BY sequence", (relation,)
                ).fetchall()
        return tuple(
            LedgerEntry(
                sequence=sequence,
                run_id=run_id,
                round=round_,
                event=event_from_dict(json.loads(event)),
                cumulative=EpsilonReport(
                    epsilon,
                    delta,
                    cast(AccountantName, accountant),
                    cast(Conversion, conversion),
                    cast(Relation, row_relation),
                ),
                charged_at=charged_at,
            )
            for (
                sequence,
                row_relation,
                run_id,
                round_,
                event,
                epsilon,
                delta,
                accountant,
                conversion,
                charged_at,
            ) in rows
        )

    def _budget(self, relation: Relation) -> Budget:
        if relation not in RELATIONS:
            raise ConfigError(
                [f"unknown neighbouring relation {relation!r}; expected one of {list(RELATIONS)}"],
                source="privacy ledger",
            )
        if relation not in self.budgets:
            raise PolicyRefused(
                f"this site's policy sets no {RELATION_LABELS[relation]} privacy budget, so it "
                f"accepts no {RELATION_LABELS[relation]} DP task; the data owner can add one "
                "(epsilon and delta) to the site's policy file"
            )
        return self.budgets[relation]

    def _cumulative(
        self, events: list[PrivacyEvent], budget: Budget, relation: Relation
    ) -> EpsilonReport:
        if not events:
            return EpsilonReport(
                0.0, budget.delta, self.accountant.name, self.accountant.conversion, relation
            )
        return self.accountant.report(compose(events), budget.delta, relation)

    def _within_budget(
        self,
        charged: list[PrivacyEvent],
        event: PrivacyEvent,
        budget: Budget,
        relation: Relation,
        run_id: str,
    ) -> EpsilonReport:
        after = self._cumulative([*charged, event], budget, relation)
        if after.epsilon <= budget.epsilon:
            return after
        before = self._cumulative(charged, budget, relation)
        alone = self.accountant.epsilon(event, budget.delta)
        raise PrivacyBudgetExceeded(
            f"{RELATION_LABELS[relation]} privacy budget exceeded: run {run_id!r} asks for a task "
            f"that would bring this site's ε to {after.epsilon:.3f} at δ = {budget.delta:.1e}, "
            f"over its budget ε = {budget.epsilon:.3f} (already spent ε = {before.epsilon:.3f} "
            f"over {len(charged)} charge(s); this task alone costs ε = {alone:.3f}; "
            f"{self.accountant.name.upper()} accountant, "
            f"{CONVERSION_LABELS[self.accountant.conversion]}). To proceed, the coordinator can "
            "plan more noise (a larger noise multiplier), fewer rounds or steps, or a smaller "
            "sampling rate; or the data owner can raise the budget in the site's policy file."
        )

    @staticmethod
    def _charged_events(connection: sqlite3.Connection, relation: Relation) -> list[PrivacyEvent]:
        rows = connection.execute(
            "SELECT event FROM charges WHERE relation = ? ORDER BY sequence", (relation,)
        )
        return [event_from_dict(json.loads(text)) for (text,) in rows]

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A fresh autocommit connection per operation: no handle outlives a call, so several
        processes (site runtime, ``fedpharma privacy``) can share the file safely."""
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        try:
            connection.execute("PRAGMA synchronous = FULL")
            yield connection
        finally:
            connection.close()
