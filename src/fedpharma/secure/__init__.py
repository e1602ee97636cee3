"""Secure aggregation: the coordinator holds only masked or encrypted updates and their sum.

Two backends with one shape — a site turns its clipped update Δ_k and example count n_k into an
opaque contribution, the coordinator combines contributions without reading them, and the FedAvg
mean Σ n_k Δ_k / Σ n_k comes out at the end:

- :mod:`~fedpharma.secure.secagg` — pairwise-mask secure aggregation with Shamir dropout recovery
  (Bonawitz et al. 2017), over the fixed-point ring of :mod:`~fedpharma.secure.quantize`. No key
  holder at all; the coordinator learns the sum.
- :mod:`~fedpharma.secure.ckks` — CKKS homomorphic aggregation (Cheon et al. 2017) with TenSEAL
  (Benaissa et al. 2021). Sites share a provisioned secret key; the coordinator adds ciphertexts
  and only the sites can decrypt the sum.

Every message and key blob has an explicit, versioned binary encoding (``to_bytes`` /
``from_bytes`` in a :mod:`~fedpharma.secure.frames` frame, never pickle); tampered, truncated
or wrong-parameter input raises :class:`~fedpharma.core.errors.CryptoError`. TenSEAL is imported
only
when a CKKS context is used.
"""

from fedpharma.secure.ckks import (
    DecryptedMean,
    EncryptedUpdate,
    PublicContext,
    SecretContext,
    create_secret_context,
    load_public_context,
    load_secret_context,
    provision,
)
from fedpharma.secure.quantize import FixedPoint
from fedpharma.secure.secagg import (
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    RoundSetup,
    SecAggServer,
    SecAggSite,
    SecureSum,
    ShareBundle,
    ShareDelivery,
    SurvivorList,
    UnmaskingShares,
    minimum_threshold,
)

__all__ = [
    "DecryptedMean",
    "EncryptedUpdate",
    "FixedPoint",
    "KeyAdvertisement",
    "KeyRoster",
    "MaskedInput",
    "PublicContext",
    "RoundSetup",
    "SecAggServer",
    "SecAggSite",
    "SecretContext",
    "SecureSum",
    "ShareBundle",
    "ShareDelivery",
    "SurvivorList",
    "UnmaskingShares",
    "create_secret_context",
    "load_public_context",
    "load_secret_context",
    "minimum_threshold",
    "provision",
]
