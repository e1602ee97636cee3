"""Each site's training seed in a round: reproducible (a resumed run trains as the first did),
its own per run, round and site, and spread over the whole 31-bit range.

Written against the survivors of `scripts/mutation.py round` (README, Development notes).
"""

from __future__ import annotations

from fedpharma.server.round import site_seed


def test_site_seeds_are_reproducible_31_bit_and_differ_by_run_round_and_site() -> None:
    seeds = {
        (run, rnd, f"site-{i}"): site_seed(run, rnd, f"site-{i}")
        for run in (0, 1)
        for rnd in (1, 2)
        for i in range(16)
    }
    assert seeds == {key: site_seed(*key) for key in seeds}  # a resumed run gets the same seeds
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= seed < 2**31 for seed in seeds.values())  # a torch/numpy-friendly int32
    assert max(seeds.values()) >= 2**30  # the whole 31-bit range is used, not a part of it
