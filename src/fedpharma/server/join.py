"""Admission at join: only sites that prepared their data by the run's recipe take part.

About 430 lines, one job: the comparison of a site's preprocessing with the run's recipe, and the
channel gate that applies it before any task (MELLODDY's check; Heyndrickx et al. 2023,
J. Chem. Inf. Model. 64(7), 2331–2344, 2024; see ``docs/preprocessing-check.md``).

The coordinator sends each new site a :class:`~fedpharma.core.protocol.DescribeTask`; the site's
:class:`~fedpharma.data.preprocessing.SiteDescription` is checked (:class:`JoinCheck`) against
the expectation computed once from the run recipe's ``[features]`` and, if the partners permute
fingerprint bits, the key's public id. A site that differs is refused with a message naming
every differing setting (:class:`PreprocessingMismatch`). :class:`JoinGate` does this as a
:class:`~fedpharma.core.protocol.Channel` wrapper, so the round loop, the label statistics and
secure
aggregation see admitted sites only, in simulation and deployment alike.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fedpharma.core.config import FeaturesConfig, RunConfig
from fedpharma.core.errors import ConfigError, ProtocolError
from fedpharma.core.protocol import (
    Channel,
    DescribeTask,
    DescriptionReply,
    Failure,
    Refusal,
    Reply,
    Task,
)
from fedpharma.core.protocol.messages import validate_reply
from fedpharma.data.datasets import featurizes_molecules
from fedpharma.data.permutation import quote
from fedpharma.data.preprocessing import Scalar, SiteDescription, reference_smiles
from fedpharma.server.audit import AuditLog
from fedpharma.server.store import RunStore

WAIT_STEP = 1.0
"""Longest pause, in seconds, between two looks for newly connected sites while waiting."""

REFUSED_KIND = "refused:preprocessing"
"""The run store's incident kind of a site refused at join."""


# ----- the comparison ---------------------------------------------------------------------


@dataclass(frozen=True)
class SettingDifference:
    """One setting on which a site's recipe differs from the consortium's.

    ``expected`` / ``found`` are ``None`` where the setting is missing on that side (a site on
    another fedpharma release).
    """

    name: str
    expected: Scalar | None
    found: Scalar | None

    def describe(self, site: str) -> str:
        """One sentence naming the setting, both values, and what the site should do."""
        who = f"site {quote(site)}"
        if self.found is None:
            return (
                f"{who} sends no {quote(self.name)} setting (the consortium's recipe says "
                f"{quote(self.expected)}); run the consortium's fedpharma release"
            )
        if self.expected is None:
            return (
                f"{who} sends a setting {quote(self.name)} = {quote(self.found)} that the "
                "consortium's recipe does not have; run the consortium's fedpharma release"
            )
        label = _LABELS.get(self.name, f"setting {quote(self.name)}")
        return (
            f"{who} uses {label} {quote(self.found)}, the consortium's recipe says "
            f"{quote(self.expected)}; {self._fix()}"
        )

    def _fix(self) -> str:
        name, expected = self.name, self.expected
        if name == "permutation_key_id":  # a [features] setting, but the key is what differs
            return f"load the consortium's permutation key (key id {quote(expected)})"
        if name in _FEATURES_FIELDS:
            return f"set [features] {name} = {quote(expected)}"
        if name == "rdkit_version":
            return f"install RDKit {expected} (the coordinator's build)"
        if name == "fingerprint_permutation":
            if expected is True:
                return "load the consortium's fingerprint permutation key"
            return "remove the fingerprint permutation key: this consortium does not permute bits"
        return "run the consortium's fedpharma release (this setting is fixed in code)"


_FEATURES_FIELDS = frozenset(f.name for f in dataclasses.fields(FeaturesConfig))

_LABELS = {
    "recipe_version": "recipe format version (recipe_version)",
    "fingerprint": "fingerprint kind (fingerprint)",
    "radius": "fingerprint radius (radius)",
    "n_bits": "fingerprint size (n_bits)",
    "counts": "count fingerprints (counts)",
    "descriptors": "RDKit descriptors (descriptors)",
    "standardization": "standardization steps (standardization)",
    "standardization_version": "standardization version (standardization_version)",
    "descriptor_reference_size": "descriptor reference set size (descriptor_reference_size)",
    "descriptor_clip": "descriptor clip (descriptor_clip)",
    "rdkit_version": "RDKit version (rdkit_version)",
    "fingerprint_permutation": "fingerprint permutation (fingerprint_permutation)",
    "permutation_scheme": "permutation scheme (permutation_scheme)",
    "permutation_key_id": "permutation key id (permutation_key_id)",
}


class PreprocessingMismatch(ConfigError):
    """A site's preprocessing differs from the consortium's recipe; the site is refused at join.

    ``problems`` holds one sentence per differing setting (or per digest mismatch), each naming
    the setting and the fix; ``differences`` holds the settings themselves.
    """

    def __init__(
        self, site: str, problems: Sequence[str], differences: Sequence[SettingDifference] = ()
    ) -> None:
        self.site = site
        self.differences = tuple(differences)
        super().__init__(problems, source=f"preprocessing of site {quote(site)}")


def recipe_differences(
    expected: Mapping[str, Scalar], found: Mapping[str, Scalar]
) -> list[SettingDifference]:
    """Every setting whose value (and JSON type: ``1``, ``1.0`` and ``true`` all differ) is not
    the same in both recipes, expected recipe order first, then settings only the site has."""
    differences = [
        SettingDifference(name, value, found.get(name))
        for name, value in expected.items()
        if not _same(value, found.get(name))
    ]
    differences += [
        SettingDifference(name, None, value)
        for name, value in found.items()
        if name not in expected
    ]
    return differences


def check_join(site: str, expected: SiteDescription, found: SiteDescription) -> None:
    """Refuse (raise :class:`PreprocessingMismatch`) unless ``found`` matches ``expected``.

    Order of checks: every differing setting is reported at once; if all settings agree, the
    reference set size, then the unpermuted reference digest (settings agree but features differ:
    a different RDKit build or altered code), then the permuted digest when the expectation
    knows it, else only its presence.
    """
    differences = recipe_differences(expected.recipe, found.recipe)
    if differences:
        raise PreprocessingMismatch(
            site, [d.describe(site) for d in differences], differences=differences
        )
    who = f"site {quote(site)}"
    if found.reference_molecules != expected.reference_molecules:
        raise PreprocessingMismatch(
            site,
            [
                f"{who} computed its reference digest over {found.reference_molecules} public "
                f"molecules, the coordinator over {expected.reference_molecules}; run the "
                "consortium's fedpharma release"
            ],
        )
    if found.reference_digest != expected.reference_digest:
        rdkit = quote(found.recipe.get("rdkit_version"))
        ours = quote(expected.recipe.get("rdkit_version"))
        raise PreprocessingMismatch(
            site,
            [
                f"{who} reports the same preprocessing settings, but its features of the "
                f"{expected.reference_molecules} public reference molecules differ (digest "
                f"{found.reference_digest[:12]}…, expected {expected.reference_digest[:12]}…): "
                f"its RDKit build (version {rdkit}) or its featurization code differs from the "
                f"coordinator's (RDKit {ours}); install the same RDKit build and an unmodified "
                "fedpharma release"
            ],
        )
    permuted = expected.recipe.get("fingerprint_permutation") is True
    if permuted and found.permuted_reference_digest is None:
        raise PreprocessingMismatch(
            site,
            [f"{who} declares a fingerprint permutation but sends no permuted reference digest"],
        )
    if not permuted and found.permuted_reference_digest is not None:
        raise PreprocessingMismatch(
            site, [f"{who} sends a permuted reference digest but the consortium does not permute"]
        )
    if (
        expected.permuted_reference_digest is not None
        and found.permuted_reference_digest != expected.permuted_reference_digest
    ):
        raise PreprocessingMismatch(
            site,
            [
                f"{who} has the consortium's permutation key id, but its permuted reference "
                f"features differ (digest {str(found.permuted_reference_digest)[:12]}…, expected "
                f"{expected.permuted_reference_digest[:12]}…): its permutation code differs; run "
                "the consortium's fedpharma release"
            ],
        )


class JoinCheck:
    """The coordinator's join check: :func:`check_join` against one expectation.

    With a permutation and no known permuted digest, the first admitted site's permuted digest
    becomes the consortium's (trust on first use): later sites with the same key id but another
    permuted digest are refused. Pass ``permuted_reference_digest`` (computed by a key holder) to
    :meth:`~fedpharma.data.preprocessing.SiteDescription.expected` to avoid trusting the first
    site.
    """

    def __init__(self, expected: SiteDescription) -> None:
        self.expected = expected

    def check(self, site: str, found: SiteDescription) -> None:
        """Admit ``site`` or raise :class:`PreprocessingMismatch` (see :func:`check_join`)."""
        check_join(site, self.expected, found)
        if (
            self.expected.permuted_reference_digest is None
            and found.permuted_reference_digest is not None
        ):
            self.expected = dataclasses.replace(
                self.expected, permuted_reference_digest=found.permuted_reference_digest
            )


def _same(a: Scalar | None, b: Scalar | None) -> bool:
    return type(a) is type(b) and a == b


# ----- the gate ---------------------------------------------------------------------------


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
    from fedpharma.models.plugin import plugin_inputs  # torch: only when used

    features = recipe.features
    return JoinCheck(
        SiteDescription.expected(
            features,
            permutation_key_id=features.permutation_key_id,
            model_inputs=plugin_inputs(recipe.model.plugin, reference_smiles),
        )
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
        """Admitted on the connection the site holds now (a rejoin is checked again)."""
        verdict = self._verdicts.get(site)
        return verdict is not None and verdict[1] and verdict[0] == self._connection_of(site)

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
    a :class:`~fedpharma.core.errors.ProtocolError`."""
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
