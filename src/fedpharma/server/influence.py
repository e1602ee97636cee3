"""Bounded influence: each site's weight in the mean is what the federation agreed, not a claim.

A plaintext FedAvg mean weighs Δ_k by n_k, so a site that claims n_k = 10¹² outweighs every
other site whatever its update (the hostile-site audit of issue 13). Here a site's example count
is declared once, with its first update of the run, and recorded; it must not exceed the
recipe's ``[robust] max_site_examples``, and no later reply may claim more than it declared.
Such a reply is rejected with a reason naming the site; an accepted update weighs
``min(claim, declared)``. Under secure aggregation the weights travel inside the masked sum,
bounded by ``[secure] max_examples`` in each site's quantizer instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from fedpharma.core.protocol import TrainResult
from fedpharma.strategy import SiteUpdate


class AgreedWeights:
    """The example count each site declared, bounded by ``max_site_examples``."""

    def __init__(self, max_site_examples: int) -> None:
        self.max_site_examples = max_site_examples
        self._declared: dict[str, int] = {}

    @property
    def declared(self) -> dict[str, int]:
        """Site → the example count it declared (its largest weight for the run)."""
        return dict(self._declared)

    def weigh(
        self, rnd: int, results: Mapping[str, TrainResult]
    ) -> tuple[list[SiteUpdate], dict[str, str]]:
        """The accepted updates with their agreed weights, in site order, and the rejected
        sites with the reason (the round records it as the site's failure)."""
        updates: list[SiteUpdate] = []
        rejected: dict[str, str] = {}
        for site in sorted(results):
            claim = results[site].n_examples
            declared = self._declared.get(site)
            if declared is None and claim > self.max_site_examples:
                rejected[site] = (
                    f"rejected: site {site!r} declares {claim} training examples, more than the "
                    f"recipe's [robust] max_site_examples = {self.max_site_examples}; if the "
                    "site really holds that many rows, the consortium must raise the bound"
                )
                continue
            if declared is not None and claim > declared:
                rejected[site] = (
                    f"rejected: site {site!r} claims {claim} training examples in round {rnd}, "
                    f"more than the {declared} it declared for this run; a site's weight cannot "
                    "grow during a run"
                )
                continue
            if declared is None:
                self._declared[site] = claim
            updates.append(SiteUpdate(site, results[site].update, float(claim)))
        return updates, rejected
