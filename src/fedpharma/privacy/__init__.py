"""Differential privacy: events as data, accountants, calibration, clipping, noise, site ledgers.

Record-level DP-SGD itself trains in :mod:`fedpharma.models.dpsgd` (torch lives in ``models``);
it reports its noise multiplier, sampling rate and steps as plain numbers, which a site runtime
turns into :func:`dp_sgd_event` and charges to its :class:`PrivacyLedger`. Importing this package
imports neither torch nor dp-accounting (the accountants load it on first use).
"""

from __future__ import annotations

from fedpharma.privacy.accountant import (
    DP_ACCOUNTING_ORDERS,
    TF_PRIVACY_ORDERS,
    Accountant,
    EpsilonReport,
    PldAccountant,
    RdpAccountant,
    make_accountant,
)
from fedpharma.privacy.calibrate import (
    NoiseCalibration,
    calibrate_noise_multiplier,
    noise_for_dp_sgd,
    noise_for_site_rounds,
)
from fedpharma.privacy.clipping import (
    AdaptiveClipping,
    ClippedUpdate,
    adapt_clip_norm,
    clip_to_norm,
    noised_unclipped_fraction,
    unclipped_bit,
    update_noise_multiplier_with_adaptive_clipping,
)
from fedpharma.privacy.events import (
    RELATIONS,
    ComposedEvent,
    GaussianEvent,
    PoissonSampledEvent,
    PrivacyEvent,
    Relation,
    SelfComposedEvent,
    compose,
    dp_sgd_event,
    event_from_dict,
    record_level_bound,
)
from fedpharma.privacy.ledger import Budget, LedgerEntry, PrivacyLedger
from fedpharma.privacy.noise import (
    central_noise_std,
    distributed_noise_std,
    gaussian_noise,
    noised_share_bound,
    production_rng,
    surviving_noise_multiplier,
)

__all__ = [
    "DP_ACCOUNTING_ORDERS",
    "RELATIONS",
    "TF_PRIVACY_ORDERS",
    "Accountant",
    "AdaptiveClipping",
    "Budget",
    "ClippedUpdate",
    "ComposedEvent",
    "EpsilonReport",
    "GaussianEvent",
    "LedgerEntry",
    "NoiseCalibration",
    "PldAccountant",
    "PoissonSampledEvent",
    "PrivacyEvent",
    "PrivacyLedger",
    "RdpAccountant",
    "Relation",
    "SelfComposedEvent",
    "adapt_clip_norm",
    "calibrate_noise_multiplier",
    "central_noise_std",
    "clip_to_norm",
    "compose",
    "distributed_noise_std",
    "dp_sgd_event",
    "event_from_dict",
    "gaussian_noise",
    "make_accountant",
    "noise_for_dp_sgd",
    "noise_for_site_rounds",
    "noised_share_bound",
    "noised_unclipped_fraction",
    "production_rng",
    "record_level_bound",
    "surviving_noise_multiplier",
    "unclipped_bit",
    "update_noise_multiplier_with_adaptive_clipping",
]
