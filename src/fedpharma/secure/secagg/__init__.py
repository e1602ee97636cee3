"""Pairwise-mask secure aggregation with dropout recovery (Bonawitz et al. 2017, CCS).

"Practical Secure Aggregation for Privacy-Preserving Machine Learning", §4, Fig. 4: each site
masks its quantized update with a self-mask and pairwise masks that cancel in the sum; Shamir
shares of the masks' seeds let t survivors unmask the sum when sites drop out; advertisements
are endorsed by the consortium PKI and survivors sign one survivor set (the ConsistencyCheck
round) before revealing shares. The coordinator learns Σ_u x_u over the sites that sent a
masked input, and nothing else about any x_u.

- :mod:`~fedpharma.secure.secagg.messages`: the wire messages of the five phases;
- :mod:`~fedpharma.secure.secagg.round`: what both sides agree on, and the checks they share;
- :mod:`~fedpharma.secure.secagg.masks`: key agreement, derivation, and the masks themselves;
- :mod:`~fedpharma.secure.secagg.site` / :mod:`~fedpharma.secure.secagg.server`: the two sides.

The protocol, its cryptography, cost and threat model: ``docs/secure-aggregation.md``.
"""

from fedpharma.secure.secagg.messages import (
    ConsistencyProof,
    ConsistencySignature,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    ShareBundle,
    ShareDelivery,
    SurvivorList,
    UnmaskingShares,
)
from fedpharma.secure.secagg.round import RoundSetup, minimum_threshold
from fedpharma.secure.secagg.server import SecAggServer, SecureSum
from fedpharma.secure.secagg.site import SecAggSite

__all__ = [
    "ConsistencyProof",
    "ConsistencySignature",
    "KeyAdvertisement",
    "KeyRoster",
    "MaskedInput",
    "RoundSetup",
    "SecAggServer",
    "SecAggSite",
    "SecureSum",
    "ShareBundle",
    "ShareDelivery",
    "SurvivorList",
    "UnmaskingShares",
    "minimum_threshold",
]
