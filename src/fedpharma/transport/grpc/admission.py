"""Admission control: what one site identity may ask of the coordinator, and what happens to a
site that keeps asking for more.

Every call is attributed to a site by its certificate, then admitted by :class:`Admission`, or
refused: the site's calls in flight are capped (``max_calls_per_site``), it may hold one waiting
pull, and its calls are rate-limited by a token bucket (``rate_per_site`` per second, bursts of
``burst_per_site``). Each refusal and each rejected result is an offence; a site with
``quarantine_after`` offences is quarantined for the rest of the run (every call refused, one
audit entry). Refusals are audited at most ``audit_burst`` times per site and
``audit_window`` seconds, and the rest counted and written as one summary, so a flood cannot
turn into a flood of fsync'ed audit entries.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fedpharma.core.errors import ConfigError, TransportError

THROTTLED = "throttled by the coordinator's admission control"
"""Opens the details of every admission refusal; the site's client maps it to a retry."""
QUARANTINED = "quarantined for this run"
"""Opens the details of the refusal of a quarantined site's calls."""

Note = Callable[[str, str, "int | None", str], None]


@dataclass(frozen=True)
class AdmissionSettings:
    """Per-identity limits; the defaults leave an honest site (one pull, one heartbeat and one
    push at a time, a heartbeat every few seconds) far below every limit."""

    max_calls_per_site: int = 4  # calls of one site in flight at once
    max_pulls_per_site: int = 1  # long-poll pulls of one site waiting at once
    rate_per_site: float = 20.0  # calls per second one site may sustain ...
    burst_per_site: int = 40  # ... and in a burst
    quarantine_after: int = 100  # offences (refused calls, rejected results) before quarantine
    audit_burst: int = 5  # refusals audited one by one per site and window; the rest summarised
    audit_window: float = 10.0  # seconds
    max_task_sends: int = 8  # times one task is streamed to its site (downloads that broke off)

    def __post_init__(self) -> None:
        problems = []
        if self.max_calls_per_site < 2:
            problems.append("max_calls_per_site must be at least 2 (a pull and a heartbeat)")
        if not 1 <= self.max_pulls_per_site < self.max_calls_per_site:
            problems.append("max_pulls_per_site must lie between 1 and max_calls_per_site - 1")
        if self.rate_per_site <= 0 or self.burst_per_site < 1:
            problems.append("rate_per_site must be positive and burst_per_site at least 1")
        if self.quarantine_after < 1 or self.audit_burst < 1 or self.max_task_sends < 1:
            problems.append("quarantine_after, audit_burst and max_task_sends must be positive")
        if self.audit_window <= 0:
            problems.append("audit_window must be positive")
        if problems:
            raise ConfigError(problems, source="admission settings")


class Ticket:
    """An admitted call; a pull ends its wait with :meth:`end_pull` before it streams."""

    def __init__(self, admission: Admission, site: str, pull: bool) -> None:
        self._admission, self._site, self._pull = admission, site, pull

    def end_pull(self) -> None:
        """The pull no longer waits (it answers now): another pull of the site may wait."""
        if self._pull:
            self._pull = False
            self._admission._end_pull(self._site)


class Refused(TransportError):
    """A call is not admitted; ``quarantined`` tells the handler which status to answer."""

    def __init__(self, message: str, *, quarantined: bool = False) -> None:
        super().__init__(message)
        self.quarantined = quarantined


@dataclass
class _Site:
    tokens: float
    refilled: float
    calls: int = 0
    pulls: int = 0
    offences: int = 0
    window_start: float = 0.0
    audited: int = 0  # refusals written one by one in this window
    suppressed: Counter[str] = field(default_factory=Counter)  # and those only counted


class Admission:
    """Thread-safe per-site gate; ``note(kind, site, round, reason)`` writes the audit."""

    def __init__(
        self,
        settings: AdmissionSettings,
        note: Note,
        on_quarantine: Callable[[str, str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._note = note
        self._on_quarantine = on_quarantine
        self._clock = clock
        self._lock = threading.Lock()
        self._sites: dict[str, _Site] = {}
        self._quarantined: dict[str, str] = {}

    def _site(self, site: str, now: float) -> _Site:
        state = self._sites.get(site)
        if state is None:
            state = _Site(float(self.settings.burst_per_site), now, window_start=now)
            self._sites[site] = state
        return state

    @contextmanager
    def call(self, site: str, *, pull: bool = False) -> Iterator[Ticket]:
        """Admit one call of ``site`` for the ``with`` block; raise :class:`Refused` if not."""
        self._enter(site, pull)
        ticket = Ticket(self, site, pull)
        try:
            yield ticket
        finally:
            ticket.end_pull()
            with self._lock:
                self._sites[site].calls -= 1

    def _end_pull(self, site: str) -> None:
        with self._lock:
            self._sites[site].pulls -= 1

    def _enter(self, site: str, pull: bool) -> None:
        limits = self.settings
        with self._lock:
            if site in self._quarantined:
                raise Refused(f"{QUARANTINED}: {self._quarantined[site]}", quarantined=True)
            now = self._clock()
            state = self._site(site, now)
            state.tokens = min(
                float(limits.burst_per_site),
                state.tokens + (now - state.refilled) * limits.rate_per_site,
            )
            state.refilled = now
            why = None
            if state.calls >= limits.max_calls_per_site:
                why = f"{limits.max_calls_per_site} calls of this site are already in flight"
            elif pull and state.pulls >= limits.max_pulls_per_site:
                why = "a pull of this site is already waiting; pull one task at a time"
            elif state.tokens < 1:
                why = f"more than {limits.rate_per_site:g} calls per second"
            else:
                state.tokens -= 1
                state.calls += 1
                state.pulls += pull
                return
        self.offence(site, "refused", why)
        raise Refused(f"{THROTTLED}: {why}; slow down")

    def offence(self, site: str, kind: str, reason: str, round: int | None = None) -> None:
        """Count an offence of ``site`` and audit it (or count it into the next summary);
        quarantine the site once it has ``quarantine_after`` offences."""
        limits = self.settings
        summary, quarantine = None, None
        with self._lock:
            now = self._clock()
            state = self._site(site, now)
            state.offences += 1
            if now - state.window_start >= limits.audit_window:
                summary = self._summary(site, state, now)
                state.window_start, state.audited = now, 0
            write = state.audited < limits.audit_burst
            if write:
                state.audited += 1
            else:
                state.suppressed[kind] += 1
            if state.offences >= limits.quarantine_after and site not in self._quarantined:
                quarantine = (
                    f"{state.offences} refused calls or rejected results (the limit is "
                    f"{limits.quarantine_after})"
                )
                self._quarantined[site] = quarantine
                summary = summary or self._summary(site, state, now)
        if summary is not None:
            self._note("refused", site, None, summary)
        if write:
            self._note(kind, site, round, reason)
        if quarantine is not None:
            self._note("quarantined", site, None, quarantine)
            self._on_quarantine(site, quarantine)

    def _summary(self, site: str, state: _Site, now: float) -> str | None:
        if not state.suppressed:
            return None
        counts = ", ".join(f"{kind} {n}" for kind, n in sorted(state.suppressed.items()))
        state.suppressed.clear()
        return (
            f"beyond the first {self.settings.audit_burst} entries in "
            f"{now - state.window_start:.1f} s, counted and not audited one by one: {counts}"
        )

    def flush(self) -> None:
        """Write every pending summary (the server is stopping)."""
        with self._lock:
            now = self._clock()
            pending = [(site, self._summary(site, s, now)) for site, s in self._sites.items()]
        for site, summary in pending:
            if summary is not None:
                self._note("refused", site, None, summary)

    def quarantined(self) -> dict[str, str]:
        """Quarantined sites and why."""
        with self._lock:
            return dict(self._quarantined)

    def offences(self, site: str) -> int:
        with self._lock:
            state = self._sites.get(site)
            return 0 if state is None else state.offences
