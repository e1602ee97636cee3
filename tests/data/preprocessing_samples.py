"""Shared inputs of the preprocessing, permutation and join-check tests."""

from __future__ import annotations

from fedpharma.core.config import FeaturesConfig
from fedpharma.data.preprocessing import SiteDescription

N_REF = 64  # a small reference set keeps these tests fast; the default is larger
KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
BASE = FeaturesConfig(radius=2, n_bits=1024)


def wire(description: SiteDescription) -> SiteDescription:
    """As the coordinator receives it: through JSON."""
    return SiteDescription.from_json(description.to_json())
