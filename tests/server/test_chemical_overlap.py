"""A deployed run's chemical-space overlap: the coordinator gets each site's two set sizes and
how many sites hold each hashed bucket (exactly what the sites' own sets imply), asks nothing
without [secure], names a site without the key, and rejects (and audits) what cannot be true."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import pytest

from fedpharma.core.protocol import ChemicalOverlapResult
from fedpharma.data.overlap import (
    DEPLOYED_BUCKETS,
    multiplicity_histogram,
    overlap_counts,
    site_sets,
)
from fedpharma.secure.ckks import create_secret_context
from fedpharma.server.audit import AuditLog
from fedpharma.server.chemical_overlap import SKIPPED_NOT_SECURE
from fedpharma.server.run_observers import AuditRejections
from fedpharma.site.runtime import SiteRuntime
from tests.attacks.overlap_consortium import KEY, SCAFFOLDS, build_sites, observe, recipe

HOLDINGS = {
    "site-a": SCAFFOLDS[:5],
    "site-b": SCAFFOLDS[3:8],
    "site-c": SCAFFOLDS[4:6] + SCAFFOLDS[9:],
    "site-d": SCAFFOLDS[4:7],
}


def _oracle(sites, names):
    sets = {name: site_sets(sites[name].data, KEY, DEPLOYED_BUCKETS) for name in names}
    scaffolds = sum(s.astype(np.int64) for s, _ in sets.values())
    bits = sum(b.astype(np.int64) for _, b in sets.values())
    return sets, scaffolds, bits


@pytest.mark.parametrize("mode", ["secagg", "ckks"])
def test_the_coordinator_gets_each_sites_set_sizes_and_how_many_sites_hold_each_bucket(mode):
    ckks = create_secret_context() if mode == "ckks" else None
    sites = build_sites(HOLDINGS, ckks=ckks)
    got = observe(sites, mode=mode, ckks=ckks).overlap
    sets, scaffolds, bits = _oracle(sites, HOLDINGS)
    assert got.missing is None and got.contributors == tuple(HOLDINGS)
    assert got.buckets == DEPLOYED_BUCKETS
    for name, (scaffold_set, bit_set) in sets.items():
        assert (got.sites[name].scaffolds, got.sites[name].bits) == (
            scaffold_set.sum(),
            bit_set.sum(),
        )
    assert got.scaffolds_held_by == multiplicity_histogram(scaffolds, 4)
    assert got.bits_held_by == multiplicity_histogram(bits, 4)
    # one scaffold at all four sites, and as many occupied buckets as distinct scaffolds held
    assert got.scaffolds_held_by[3] == 1
    assert sum(got.scaffolds_held_by) == len(set().union(*HOLDINGS.values()))
    # …and consistent with what a simulation reports per site from the same sets
    shared = overlap_counts(
        {n: s for n, (s, _) in sets.items()}, {n: b for n, (_, b) in sets.items()}
    )
    assert {n: c.scaffolds for n, c in shared.items()} == {
        n: s.scaffolds for n, s in got.sites.items()
    }


def test_without_secure_aggregation_nothing_is_asked_and_the_report_says_it_needs_it():
    sites = build_sites(HOLDINGS)
    seen = observe(sites, config=recipe("none"))
    assert seen.overlap.missing == SKIPPED_NOT_SECURE and "needs [secure]" in SKIPPED_NOT_SECURE
    assert not seen.tasks and not seen.received


def test_a_site_without_the_key_declines_and_the_others_are_summed():
    sites = build_sites(HOLDINGS, without_key=["site-d"])
    got = observe(sites).overlap
    assert "no chemical-overlap key" in got.declined["site-d"]
    assert got.contributors == ("site-a", "site-b", "site-c") and got.missing is None
    _, scaffolds, _ = _oracle(sites, got.contributors)
    assert got.scaffolds_held_by == multiplicity_histogram(scaffolds, 3)


def test_with_fewer_than_three_key_holders_nothing_is_summed_and_the_report_says_why():
    sites = build_sites(HOLDINGS, without_key=["site-c", "site-d"])
    got = observe(sites).overlap
    assert got.missing is not None and "a secure sum needs 3" in got.missing
    assert set(got.sites) == {"site-a", "site-b"} and not got.scaffolds_held_by


class Lying(SiteRuntime):
    """Sends set sizes its sets do not have."""

    change: Mapping[str, int] = MappingProxyType({})

    def handle(self, task):
        reply = super().handle(task)
        if isinstance(reply, ChemicalOverlapResult):
            return dataclasses.replace(reply, **self.change)
        return reply


def _liar(sites, name, **change):
    honest = sites[name]
    liar = Lying(name, honest.data, honest.trainer, secure=honest.secure, overlap=honest.overlap)
    liar.change = change
    sites[name] = liar
    return sites


def test_set_sizes_larger_than_the_sets_asked_for_are_rejected_audited_and_left_out(tmp_path):
    sites = _liar(build_sites(HOLDINGS), "site-b", scaffold_buckets=DEPLOYED_BUCKETS + 1)
    audit = AuditLog(tmp_path / "audit.jsonl")
    got = observe(sites, on_rejected=AuditRejections(audit)).overlap
    audit.close()
    assert got.declined["site-b"].startswith("rejected:") and "site-b" not in got.sites
    assert got.contributors == ("site-a", "site-c", "site-d") and got.missing is None
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    (rejected,) = [e for e in entries if e["kind"] == "result_rejected"]
    assert rejected["site"] == "site-b" and "chemical overlap" in rejected["reason"]


def test_a_sum_that_disagrees_with_the_sizes_sent_is_rejected_audited_and_explained(tmp_path):
    """A plausible lie (one bucket fewer) cannot be told from the sizes alone; the secure sum
    gives it away, though not whose it is."""
    honest = observe(build_sites(HOLDINGS)).overlap
    sites = _liar(
        build_sites(HOLDINGS), "site-c", scaffold_buckets=honest.sites["site-c"].scaffolds - 1
    )
    audit = AuditLog(tmp_path / "audit.jsonl")
    got = observe(sites, on_rejected=AuditRejections(audit)).overlap
    audit.close()
    assert got.missing is not None and got.missing.startswith("rejected:")
    assert "scaffold buckets add up to" in got.missing and not got.scaffolds_held_by
    assert set(got.sites) == set(HOLDINGS)  # the sizes as sent are still shown
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    (rejected,) = [e for e in entries if e["kind"] == "result_rejected"]
    assert "the secure sum of site-a, site-b, site-c, site-d is rejected" in rejected["reason"]


def test_a_site_adds_its_sets_to_one_secure_sum_per_run():
    """Two sums over site sets differing in one site would give that site's sets away."""
    sites = build_sites(HOLDINGS)
    assert observe(sites).overlap.missing is None
    again = observe(sites).overlap
    assert again.missing is not None and "already added its hashed sets" in again.missing


def test_a_site_asked_for_dp_in_a_run_sends_no_overlap_counts_in_it():
    """The coordinator does not ask under DP; an active one that asks anyway is refused."""
    from fedpharma.core.params import Parameters
    from fedpharma.core.protocol import (
        ChemicalOverlapTask,
        LocalTraining,
        RecordDP,
        Refusal,
        TrainSettings,
        TrainTask,
    )

    site = build_sites(HOLDINGS)["site-a"]
    dp = RecordDP(max_grad_norm=1.0, delta=1e-5, planned_rounds=3, noise_multiplier=1.0)
    model = Parameters(("w",), (np.zeros(1, dtype=np.float32),))
    train = TrainTask("run", 1, model, TrainSettings(LocalTraining(1, 0), record_dp=dp))
    assert isinstance(site.handle(train), Refusal)  # no policy: it accounts for nothing
    reply = site.handle(ChemicalOverlapTask("run", 2, DEPLOYED_BUCKETS, 64))
    assert isinstance(reply, Refusal) and "differential privacy" in reply.reason
    other = site.handle(ChemicalOverlapTask("other", 2, DEPLOYED_BUCKETS, 64))
    assert isinstance(other, ChemicalOverlapResult)
