"""Admission at join: only sites that prepared their data by the run's recipe take part.

A federated model is one model only if every partner turns a molecule into the same input
vector; a partner with another fingerprint radius trains the shared model on inputs that mean
something else, and no loss curve shows it. MELLODDY therefore had every partner hash its
preprocessing output on a public reference set before any training (Heyndrickx et al. 2023,
J. Chem. Inf. Model. 64(7), 2331–2344, 2024; MELLODDY-TUNER). Here, before a site receives any
task, the coordinator sends it a :class:`~fedpharma.protocol.DescribeTask`; the site answers with
its :class:`~fedpharma.data.recipe.SiteDescription` (recipe + digests of public reference
molecules), which is checked against the expectation the coordinator computed once from the run
recipe's ``[features]`` and, if the partners permute fingerprint bits, the key's public id (the
coordinator never holds the key). A site whose preprocessing differs is refused with a message
naming every differing setting; the others go on.

:class:`JoinGate` does this as a :class:`~fedpharma.protocol.Channel` wrapper, so the round loop,
the label statistics and secure aggregation see admitted sites only, in simulation (in-process
channel) and deployment (gRPC) alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fedpharma.config import RunConfig
from fedpharma.data.datasets import featurizes_molecules
from fedpharma.data.recipe import JoinCheck, PreprocessingMismatch, SiteDescription
from fedpharma.errors import ProtocolError
from fedpharma.protocol import (
    Channel,
    DescribeTask,
    DescriptionReply,
    Failure,
    Refusal,
    Reply,
    Task,
)
from fedpharma.protocol.messages import validate_reply
from fedpharma.server.audit import AuditLog
from fedpharma.server.store import RunStore

WAIT_STEP = 1.0
"""Longest pause, in seconds, between two looks for newly connected sites while waiting."""

REFUSED_KIND = "refused:preprocessing"
"""The run store's incident kind of a site refused at join."""


@dataclass(frozen=True)
class JoinOutcome:
    """The join check's verdict on one site: admitted (``reason`` names the recipe digest it
    matched) or refused (``reason`` says what differs and how to fix it)."""

    site: str
    admitted: bool
    reason: str


JoinObserver = Callable[[Sequence[JoinOutcome]], None]
"""Receives the verdicts on the sites described together (see :class:`JoinLog`)."""


def _ignore(_: Sequence[JoinOutcome]) -> None:
    return None


def expected_preprocessing(recipe: RunConfig) -> JoinCheck | None:
    """The coordinator's join check for ``recipe``, computed once (RDKit standardizes and
    featurizes the public reference set: a second or a few), or None when the data are not
    molecules and there is no preprocessing recipe to compare."""
    if not featurizes_molecules(recipe.dataset.name, recipe.dataset.kind):
        return None
    features = recipe.features
    return JoinCheck(
        SiteDescription.expected(features, permutation_key_id=features.permutation_key_id)
    )


class JoinGate:
    """A channel that lists only the sites whose preprocessing passed the join check.

    Each site is described the first time it is listed by the wrapped channel; its verdict is
    kept while it stays connected and forgotten when it leaves, so a site that comes back (with
    its configuration fixed, say) is checked again. ``connection_of``, if given, names a site's
    current connection (the gRPC channel counts joins), so a site that leaves and rejoins between
    two looks is checked again too. A site that does not answer the description gets no verdict
    and is asked again the next time it is listed. ``dismiss``, if given, tells a refused site
    why (the gRPC channel sends it the reason and stops listing it). Without a ``check`` (data
    that are not molecules) every connected site is listed.
    """

    def __init__(
        self,
        channel: Channel,
        run_id: str,
        check: JoinCheck | None,
        *,
        on_outcome: JoinObserver = _ignore,
        timeout: float | None = None,
        wait_for: Callable[[int, float | None], object] | None = None,
        dismiss: Callable[[str, str], None] | None = None,
        connection_of: Callable[[str], int] = lambda _site: 0,
    ) -> None:
        self._channel = channel
        self._run_id = run_id
        self._check = check
        self._on_outcome = on_outcome
        self._timeout = timeout
        self._wait_for = wait_for
        self._dismiss = dismiss
        self._connection_of = connection_of
        # site → (the connection it was checked on, admitted), kept while that connection lasts
        self._verdicts: dict[str, tuple[int, bool]] = {}

    def available_sites(self) -> tuple[str, ...]:
        """Connected sites that passed the join check; new ones are described first."""
        connected = self._channel.available_sites()
        if self._check is None:
            return connected
        connections = {site: self._connection_of(site) for site in connected}
        self._verdicts = {
            site: verdict
            for site, verdict in self._verdicts.items()
            if verdict[0] == connections.get(site)
        }
        new = {site: connections[site] for site in connected if site not in self._verdicts}
        if new:
            self._describe(self._check, new)
        return tuple(site for site in connected if self._admitted(site))

    def _admitted(self, site: str) -> bool:
        verdict = self._verdicts.get(site)
        return verdict is not None and verdict[1]

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        """The wrapped channel's exchange; a task for a site not admitted is not delivered."""
        barred: dict[str, Reply | Failure] = {
            site: Failure(site, "site was not admitted at join (preprocessing not checked)")
            for site in tasks
            if self._check is not None and not self._admitted(site)
        }
        allowed = {site: task for site, task in tasks.items() if site not in barred}
        return (self._channel.exchange(allowed, timeout) if allowed else {}) | barred

    def wait_for_sites(self, count: int, timeout: float | None = None) -> tuple[str, ...]:
        """Wait until ``count`` sites are admitted or ``timeout`` passes; return the admitted.

        Needs ``wait_for`` (the wrapped channel's wait for connected sites); without it, sites
        cannot come later and the admitted ones are returned at once.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            admitted = self.available_sites()
            remaining = None if deadline is None else deadline - time.monotonic()
            if len(admitted) >= count or self._wait_for is None:
                return admitted
            if remaining is not None and remaining <= 0:
                return admitted
            # Wake when one more site connects (to describe it), or after WAIT_STEP at most.
            step = WAIT_STEP if remaining is None else min(remaining, WAIT_STEP)
            self._wait_for(len(self._channel.available_sites()) + 1, step)

    def _describe(self, check: JoinCheck, sites: Mapping[str, int]) -> None:
        """Ask ``sites`` (site → its current connection) to describe their preprocessing."""
        tasks: dict[str, Task] = {site: DescribeTask(self._run_id, 0) for site in sites}
        replies = self._channel.exchange(tasks, self._timeout)
        outcomes = []
        for site in sites:
            reply = replies.get(site, Failure(site, "no reply"))
            if isinstance(reply, Failure):
                continue  # no verdict: described again when it is next listed
            try:
                description = _description(tasks[site], site, reply)
                check.check(site, description)
            except PreprocessingMismatch as exc:
                outcomes.append(JoinOutcome(site, False, "; ".join(exc.problems)))
            except ProtocolError as exc:
                reason = f"site {site!r} sent an unusable preprocessing description: {exc}"
                outcomes.append(JoinOutcome(site, False, reason))
            else:
                outcomes.append(JoinOutcome(site, True, f"recipe {description.recipe_digest}"))
        for outcome in outcomes:
            self._verdicts[outcome.site] = (sites[outcome.site], outcome.admitted)
            if not outcome.admitted and self._dismiss is not None:
                self._dismiss(outcome.site, f"refused at join: {outcome.reason}")
        if outcomes:
            self._on_outcome(outcomes)


def _description(task: Task, site: str, reply: Reply) -> SiteDescription:
    """The site's description from its reply; a refusal is a mismatch, anything else malformed
    a :class:`~fedpharma.errors.ProtocolError`."""
    if isinstance(reply, Refusal) and reply.site == site:
        raise PreprocessingMismatch(
            site,
            [
                f"site {site!r} did not describe its preprocessing ({reply.kind}: "
                f"{reply.reason[:200]!r}); run the consortium's fedpharma release on the "
                "consortium's kind of data"
            ],
        )
    if not isinstance(reply, DescriptionReply):
        raise ProtocolError(f"a DescribeTask was answered with a {type(reply).__name__}")
    validate_reply(task, site, reply)
    return SiteDescription.from_json(reply.description)


class JoinLog:
    """Records the join check's verdicts: refusals as run-store incidents (round 0, kind
    :data:`REFUSED_KIND`) and in the audit log (``denied``), admissions in the audit log
    (``admitted``), and one status line for the admitted sites and one per refused site."""

    def __init__(
        self, store: RunStore, say: Callable[[str], None], audit: AuditLog | None = None
    ) -> None:
        self._store, self._say, self._audit = store, say, audit

    def __call__(self, outcomes: Sequence[JoinOutcome]) -> None:
        admitted = [o for o in outcomes if o.admitted]
        if admitted:
            self._say(
                f"preprocessing checked: {', '.join(o.site for o in admitted)} admitted "
                "(the run's recipe and reference digest)"
            )
        for outcome in outcomes:
            if self._audit is not None:
                kind = "admitted" if outcome.admitted else "denied"
                self._audit.record(kind, site=outcome.site, reason=outcome.reason)
            if not outcome.admitted:
                self._say(f"site {outcome.site} refused at join: {outcome.reason}")
                self._store.record_incident(0, outcome.site, REFUSED_KIND, outcome.reason)
