"""The report's words on the headline comparisons, following their bootstrap intervals, its
small-sample caveats, and the sites' chemical-space overlap as tables of counts.

A model is called better or worse than another only when the 95 % paired bootstrap interval of
the difference excludes zero (:class:`~fedpharma.report.summary.Interval`); inside the noise the
report says so and prints the interval (Efron & Tibshirani 1993, ch. 13). A summary without
intervals (an older one, or a deployed run, which holds no predictions) gets the plain
comparison of the scores. Small test sets and small audits get a caveat: on n₊ members and n₋
non-members an attack that learns nothing still scatters its AUC with standard deviation
√((n₊ + n₋ + 1) / (12 n₊ n₋)) around 0.5 (Hanley & McNeil 1982).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedpharma.report.formatting import format_count, format_score
from fedpharma.report.summary import Interval, PrivacyAudit, RunSummary

SMALL_TEST = 30
"""A site's test set below this many rows gets a caveat beside its scores."""

AUDIT_NOISE = 0.05
"""An audit whose chance-level AUC scatter (2 standard deviations) exceeds this gets a caveat."""


def interval_verdict(summary: RunSummary) -> str | None:
    """Federated vs local-only (and vs centralized) in words that follow the intervals; None
    when the summary has no interval for federated − local-only."""
    found = summary.intervals.get("federated-local")
    scores = summary.pooled.headline()
    federated, local = scores["federated"], scores["local"]
    if found is None or federated is None or local is None:
        return None
    sign = 1.0 if summary.metric.higher_is_better else -1.0
    sentences = [_against(federated - local, found, sign, "training on each site alone")]
    centralized = scores["centralized"]
    versus = summary.intervals.get("federated-centralized")
    if centralized is not None and versus is not None:
        what = "the centralized model (one model on every site's training rows pooled)"
        sentences.append(_against(federated - centralized, versus, sign, what))
    return " ".join(sentences)


def _against(difference: float, interval: Interval, sign: float, what: str) -> str:
    low, high = sorted((sign * interval.low, sign * interval.high))
    shown = (
        f"(difference {_signed(difference)}, 95 % bootstrap interval "
        f"{_signed(interval.low)} to {_signed(interval.high)} over "
        f"{interval.resamples} resamples of the test rows)"
    )
    if low > 0:
        return f"The federated model beats {what} {shown}."
    if high < 0:
        return f"The federated model does worse than {what} {shown}."
    return f"The federated model and {what} score within the noise of these test sets {shown}."


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "−") + format_score(abs(value))


def small_test_caveat(n_test: int | None) -> str | None:
    """The caveat for a site's scores on ``n_test`` rows, if it needs one."""
    if n_test is None or n_test >= SMALL_TEST:
        return None
    return f"only {n_test} test rows: its scores move a lot with which rows were drawn"


def audit_caveats(audit: PrivacyAudit) -> list[str]:
    """One note naming the sites whose audit is too small for its AUCs to be read closely."""
    small = []
    for name, site in audit.sites.items():
        for target in (site.final_model, site.site_update):
            scores = getattr(target, "loss_threshold", None)
            if scores is None:
                continue
            spread = 2 * chance_auc_std(scores.n_members, scores.n_nonmembers)
            if spread > AUDIT_NOISE:
                small.append(f"{name} (±{spread:.2f})")
                break
    if not small:
        return []
    return [
        "Few records attacked at "
        + ", ".join(small)
        + ": an attack that learns nothing still lands that far from 0.5 about one time in "
        "twenty (twice the standard deviation of a chance AUC on these many members and "
        "non-members); read an AUC inside that band as no measured leakage."
    ]


def chance_auc_std(members: int, nonmembers: int) -> float:
    """Standard deviation of the AUC of an attack that learns nothing (Hanley & McNeil 1982)."""
    if members <= 0 or nonmembers <= 0:
        return math.inf
    return math.sqrt((members + nonmembers + 1) / (12 * members * nonmembers))


def overlap_rows(summary: RunSummary) -> list[tuple[str, str, str]]:
    """Per site: its scaffolds and fingerprint bits, each with the share another site holds."""
    return [
        (site, _shared(o.scaffolds, o.scaffolds_shared), _shared(o.bits, o.bits_shared))
        for site, o in summary.chemical_overlap.items()
    ]


@dataclass(frozen=True)
class ConsortiumOverlapTable:
    """A deployed run's overlap as the report shows it: per site its set sizes; per k, the
    buckets and bits exactly k sites hold; notes on who took part and what is missing."""

    sites: list[tuple[str, str, str]]
    held_by: list[tuple[int, str, str]]
    notes: list[str]


def consortium_overlap_table(summary: RunSummary) -> ConsortiumOverlapTable | None:
    """The table of :attr:`RunSummary.consortium_overlap`, or ``None`` without one."""
    overlap = summary.consortium_overlap
    if overlap is None:
        return None
    sites = [
        (site, format_count(s.scaffolds), format_count(s.bits))
        for site, s in sorted(overlap.sites.items())
    ]
    held_by = [
        (k, format_count(buckets), format_count(bits))
        for k, (buckets, bits) in enumerate(
            zip(overlap.scaffolds_held_by, overlap.bits_held_by, strict=True), start=1
        )
    ]
    notes = []
    if overlap.missing is not None:
        notes.append(f"No consortium counts: {overlap.missing}.")
    if overlap.contributors:
        notes.append(
            f"Summed securely over {', '.join(overlap.contributors)}, in "
            f"{overlap.buckets:,} scaffold buckets: the coordinator saw how many sites hold "
            "each bucket, never one site's set."
        )
    notes += [f"{site} took no part ({why})." for site, why in sorted(overlap.declined.items())]
    return ConsortiumOverlapTable(sites, held_by, notes)


def _shared(total: int, shared: int) -> str:
    return f"{total:,} ({shared / total:.0%} shared)" if total else "0"
