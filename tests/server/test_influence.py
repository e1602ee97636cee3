"""Agreed weights: a site's example count is declared once, bounded, and never grows."""

import numpy as np

from fedpharma.core.params import Parameters
from fedpharma.core.protocol import TrainResult
from fedpharma.server.influence import AgreedWeights

UPDATE = Parameters.from_dict({"w": np.ones(2)})


def results(**counts):
    return {site: TrainResult("run", 1, site, UPDATE, n) for site, n in counts.items()}


def test_the_first_claim_is_the_declaration_and_later_claims_may_only_shrink():
    weights = AgreedWeights(1000)
    first, rejected = weights.weigh(1, results(a=100, b=300))
    assert [(u.site, u.weight) for u in first] == [("a", 100.0), ("b", 300.0)] and not rejected
    later, rejected = weights.weigh(2, results(a=90, b=301))
    assert [(u.site, u.weight) for u in later] == [("a", 90.0)]
    assert "site 'b' claims 301 training examples in round 2, more than the 300" in rejected["b"]
    assert weights.declared == {"a": 100, "b": 300}  # the smaller claim does not lower it


def test_a_declaration_above_the_recipe_bound_is_rejected_naming_the_site_and_the_key():
    weights = AgreedWeights(1000)
    accepted, rejected = weights.weigh(1, results(a=100, m=10**12))
    assert [u.site for u in accepted] == ["a"]
    assert rejected["m"].startswith("rejected: site 'm' declares 1000000000000 training examples")
    assert "[robust] max_site_examples = 1000" in rejected["m"]
    assert "m" not in weights.declared  # it may still declare an honest count later
