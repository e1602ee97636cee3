"""The coordinator's side of secure aggregation in the round loop: two collectors, one shape.

A secure round's train task asks each site for an opaque contribution instead of its update; a
collector turns the contributions into the round's mean update through the same
:class:`~fedpharma.core.protocol.Channel` and reveals nothing else.

- :class:`SecAggCollector` — pairwise masks (Bonawitz et al. 2017, "Practical Secure Aggregation
  for Privacy-Preserving Machine Learning", CCS, §4, Fig. 4). The train task asks for a key
  advertisement; the collector drives the four remaining phases (share keys, masked input, the
  consistency check, unmask), passing each :class:`~fedpharma.secure.SecAggServer` method only
  the replies that arrived. A site that fails or refuses a phase drops out; the round completes
  while at least t ≥ ``min_sites`` sites remain in every phase and raises :class:`RoundFailed`
  below, before anything is unmasked. The coordinator holds public keys, sealed shares, masked
  vectors, signatures and the sum, from which it decodes Σ n_k Δ_k / Σ n_k.
- :class:`CKKSCollector` — homomorphic encryption (CKKS, Cheon et al. 2017, with TenSEAL; the
  approach of NVIDIA FLARE). The train task asks for the encrypted n_k·Δ_k, endorsed by the
  site; every contributor signs the round's one contributor set (phase ``sign_contributors``),
  and one of them adds the signed contributions itself and decrypts the sum (phase ``decrypt``)
  into the mean, refusing sums of fewer than t updates (``docs/ckks.md``).

Under site-level DP with distributed noise (``dp_planned_sites`` = K) sites weigh their clipped,
noised updates alike and the mean becomes the fixed-denominator Σ_k Δ_k / K of DP-FedAvg
(McMahan et al. 2018). Central noise is impossible here (the coordinator never sees an update),
which the run config refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedpharma.core.config import SecureConfig
from fedpharma.core.errors import CryptoError, ProtocolError, RoundFailed
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import Channel, Failure, Refusal, SecureReply, SecureTask, Task
from fedpharma.core.protocol.settings import CKKSSettings, SecAggSettings
from fedpharma.secure.ckks import DecryptedMean, PublicContext
from fedpharma.secure.contributors import (
    ContributorSet,
    DecryptRequest,
    Member,
    SetSignature,
    SignedContribution,
)
from fedpharma.secure.quantize import FixedPoint
from fedpharma.secure.secagg import (
    ConsistencySignature,
    KeyAdvertisement,
    MaskedInput,
    RoundSetup,
    SecAggServer,
    ShareBundle,
    UnmaskingShares,
    minimum_threshold,
)
from fedpharma.secure.secagg.round import MIN_SITES
from fedpharma.server.round import AttemptFailed, Rejected, sort_replies


@dataclass(frozen=True)
class SecureMean:
    """What a secure round reveals: the mean update, Σ n_k, and who is in the sum."""

    mean: Parameters
    n_examples: int
    contributors: tuple[str, ...]
    failures: dict[str, str] = field(default_factory=dict)


class SecAggCollector:
    """Collects a round's mean update by pairwise-mask secure aggregation."""

    def __init__(
        self, config: SecureConfig, *, min_sites: int = 1, dp_planned_sites: int | None = None
    ) -> None:
        self.config = config
        self.min_sites = min_sites
        self.dp_planned_sites = dp_planned_sites

    def threshold(self, n_sites: int) -> int:
        """t for a round of ``n_sites``: the configured one, at least ``min_sites`` and more
        than two thirds of the sites (the sites refuse less)."""
        return max(self.config.threshold or 0, self.min_sites, minimum_threshold(n_sites), 2)

    def codec(self, n_sites: int) -> FixedPoint:
        """The fixed-point codec of a round of ``n_sites``: the sites build the same one from
        the settings their train task carries."""
        return FixedPoint.from_settings(self.task_settings(0, n_sites))

    def task_settings(self, rnd: int, n_sites: int) -> SecAggSettings:
        """What every site of a round of ``n_sites`` must agree on."""
        return SecAggSettings(
            threshold=self.threshold(n_sites),
            ring_bits=self.config.ring_bits,
            clip=self.config.clip,
            max_sites=max(n_sites, 1),
            max_examples=self.config.max_examples,
        )

    def collect(
        self,
        channel: Channel,
        advertisements: Mapping[str, SecureReply],
        template: Parameters,
        *,
        n_sites: int,
        rnd: int,
        run_id: str,
        timeout: float | None = None,
        on_rejected: Rejected | None = None,
        codec: FixedPoint | None = None,
    ) -> SecureMean:
        """Run phases 1–4 with the sites whose advertisements arrived; return the mean update.
        ``on_rejected`` is told each message rejected in any phase, as in a plaintext round.
        ``codec``: the fixed-point encoding the sites were told, where it is not the updates'
        (a secure sum of statistics, :mod:`fedpharma.server.secure_statistics`)."""
        if n_sites < MIN_SITES:
            raise RoundFailed(
                f"round {rnd}: {n_sites} site(s) selected, secure aggregation needs at least "
                f"{MIN_SITES} (of two, each reads the other's update off the sum)"
            )
        length = template.flatten().size + 1
        setup = RoundSetup(run_id, rnd, self.threshold(n_sites), length, self.config.ring_bits)
        server = SecAggServer(setup)
        drops = _Drops(rnd, on_rejected)

        def phase(
            name: str, payloads: Mapping[str, bytes], parse: Callable[[bytes], Any]
        ) -> list[Any]:
            tasks: dict[str, Task] = {
                site: SecureTask(run_id, rnd, name, payload) for site, payload in payloads.items()
            }
            replies = channel.exchange(tasks, timeout)
            return _parsed(tasks, replies, parse, drops)

        try:
            ads = _parse_all(advertisements, KeyAdvertisement.from_bytes, drops)
            roster = server.roster(ads).to_bytes()
            bundles = phase("share_keys", {a.site: roster for a in ads}, ShareBundle.from_bytes)
            deliveries = server.route_shares(bundles)
            inputs = phase(
                "masked_input",
                {site: d.to_bytes() for site, d in deliveries.items()},
                MaskedInput.from_bytes,
            )
            survivors = server.collect_masked_inputs(inputs)
            signatures = phase(
                "consistency",
                {site: survivors.to_bytes() for site in survivors.survivors},
                ConsistencySignature.from_bytes,
            )
            proof = server.collect_signatures(signatures)
            responses = phase(
                "unmask",
                {signed.site: proof.to_bytes() for signed in proof.signatures},
                UnmaskingShares.from_bytes,
            )
            secure_sum = server.unmask(responses)
            fixed = self.codec(n_sites) if codec is None else codec
            mean, n_examples = fixed.decode_weighted_mean(secure_sum.total)
        except (CryptoError, ProtocolError) as exc:
            raise AttemptFailed(
                f"round {rnd}: secure aggregation failed: {exc}", drops.reasons
            ) from exc
        mean = _fixed_denominator(mean, n_examples, self.dp_planned_sites)
        return SecureMean(
            template.unflatten(mean), n_examples, secure_sum.contributors, drops.reasons
        )


class CKKSCollector:
    """Collects a round's mean update from CKKS contributions the coordinator cannot read.

    ``context`` is the coordinator's :class:`~fedpharma.secure.PublicContext` (parameters only,
    provisioned with the PKI). Contributions that do not parse, carry another key or another
    length are dropped with a reason. The rest form the round's one contributor set, which every
    member must sign; one member then adds the signed contributions itself and decrypts the
    mean (``docs/ckks.md``: no coordinator behaviour yields a plaintext of fewer than t updates).
    """

    def __init__(
        self,
        config: SecureConfig,
        context: PublicContext,
        *,
        min_sites: int = 1,
        dp_planned_sites: int | None = None,
    ) -> None:
        self.config = config
        self.context = context
        self.min_sites = min_sites
        self.dp_planned_sites = dp_planned_sites

    def threshold(self, n_sites: int) -> int:
        """t: the fewest updates a site will decrypt the sum of (the configured one, at least
        ``min_sites`` and 3)."""
        return max(self.config.threshold or 0, self.min_sites, MIN_SITES)

    def task_settings(self, rnd: int, n_sites: int) -> CKKSSettings:
        return CKKSSettings(threshold=self.threshold(n_sites), key_id=self.context.key_id.hex())

    def collect(
        self,
        channel: Channel,
        advertisements: Mapping[str, SecureReply],
        template: Parameters,
        *,
        n_sites: int,
        rnd: int,
        run_id: str,
        timeout: float | None = None,
        on_rejected: Rejected | None = None,
    ) -> SecureMean:
        """Agree on the contributor set with its members; have one member decrypt its sum.
        ``on_rejected`` is told each message rejected in any phase, as in a plaintext round."""
        drops = _Drops(rnd, on_rejected)
        failures = drops.reasons
        length = template.flatten().size + 2  # n_k·Δ_k, n_k, 1
        uploads: dict[str, SignedContribution] = {}
        for contribution in _parse_all(advertisements, SignedContribution.from_bytes, drops):
            site = contribution.site
            try:
                update = contribution.encrypted()
            except CryptoError as exc:
                drops.reject(site, f"rejected encrypted update: {exc}")
                continue
            if (contribution.run_id, contribution.round) != (run_id, rnd):
                drops.reject(site, "rejected encrypted update of another run or round")
            elif update.key_id != self.context.key_id or update.length != length:
                drops.reject(
                    site,
                    "rejected encrypted update: another CKKS key or model size "
                    f"({update.length} values, expected {length})",
                )
            else:
                uploads[site] = contribution
        threshold = self.threshold(n_sites)
        if len(uploads) < threshold:
            raise AttemptFailed(
                f"round {rnd}: {len(uploads)} encrypted update(s), at least {threshold} needed "
                "for a site to decrypt their sum",
                failures,
            )
        members = tuple(
            Member(site, uploads[site].digest, uploads[site].endorsement)
            for site in sorted(uploads)
        )
        contributors = ContributorSet(run_id, rnd, members)
        tasks: dict[str, Task] = {
            site: SecureTask(run_id, rnd, "sign_contributors", contributors.to_bytes())
            for site in uploads
        }
        signatures = _parsed(
            tasks, channel.exchange(tasks, timeout), SetSignature.from_bytes, drops
        )
        if {s.site for s in signatures} != set(uploads):
            reasons = "; ".join(f"{s}: {failures[s]}" for s in sorted(uploads) if s in failures)
            raise AttemptFailed(
                f"round {rnd}: every contributor must sign the contributor set before its sum is "
                f"decrypted ({reasons or 'a signature is missing'})",
                failures,
            )
        request = DecryptRequest(
            contributors,
            tuple(sorted(signatures, key=lambda s: s.site)),
            tuple(uploads[site].update for site in sorted(uploads)),
        ).to_bytes()
        for decryptor in sorted(uploads):
            tasks = {decryptor: SecureTask(run_id, rnd, "decrypt", request)}
            parsed = _parsed(
                tasks, channel.exchange(tasks, timeout), DecryptedMean.from_bytes, drops
            )
            if not parsed:
                continue  # this site is gone or refused: ask the next contributor
            decrypted: DecryptedMean = parsed[0]
            if decrypted.contributors != len(uploads) or decrypted.mean.size != length - 2:
                drops.reject(
                    decryptor,
                    f"decrypted a sum of {decrypted.contributors} update(s) of "
                    f"{decrypted.mean.size} values; {len(uploads)} of {length - 2} were sent",
                )
                continue
            mean = _fixed_denominator(
                decrypted.mean.astype(np.float64), decrypted.n_examples, self.dp_planned_sites
            )
            return SecureMean(
                template.unflatten(mean), decrypted.n_examples, tuple(sorted(uploads)), failures
            )
        reasons = "; ".join(f"{site}: {failures[site]}" for site in sorted(uploads))
        raise AttemptFailed(
            f"round {rnd}: no contributing site decrypted the sum ({reasons})", failures
        )


def _fixed_denominator(
    mean: npt.NDArray[np.float64], n_examples: int, dp_planned_sites: int | None
) -> npt.NDArray[np.float64]:
    """Under site-level DP every site weighed 1, so n_examples counts the contributors and the
    mean Σ Δ_k / n becomes Σ Δ_k / K (McMahan et al. 2018)."""
    if dp_planned_sites is None:
        return mean
    return mean * (n_examples / dp_planned_sites)


@dataclass(frozen=True)
class _Drops:
    """A secure round's dropped sites and why; a rejected message is also told to
    ``on_rejected`` (the coordinator audits it as ``result_rejected``, as in plaintext)."""

    rnd: int
    on_rejected: Rejected | None
    reasons: dict[str, str] = field(default_factory=dict)

    def reject(self, site: str, reason: str) -> None:
        self.reasons[site] = reason
        if self.on_rejected is not None:
            self.on_rejected(site, self.rnd, reason)


def _parse_all(
    replies: Mapping[str, SecureReply], parse: Callable[[bytes], Any], drops: _Drops
) -> list[Any]:
    parsed = []
    for site, reply in sorted(replies.items()):
        try:
            message = parse(reply.payload)
        except (CryptoError, ProtocolError) as exc:
            drops.reject(site, f"rejected {reply.phase} message: {exc}")
            continue
        if getattr(message, "site", site) != site:
            drops.reject(site, f"sent a {reply.phase} message in the name of {message.site!r}")
            continue
        parsed.append(message)
    return parsed


def _parsed(
    tasks: Mapping[str, Task],
    replies: Mapping[str, SecureReply | Refusal | Failure | Any],
    parse: Callable[[bytes], Any],
    drops: _Drops,
) -> list[Any]:
    """The parsed messages of the valid replies; every other site is recorded as dropped."""
    results, refusals, dropped = sort_replies(tasks, replies, drops.on_rejected)
    drops.reasons.update(dropped)
    drops.reasons.update({site: f"refused: {r.reason}" for site, r in refusals.items()})
    valid = {site: r for site, r in results.items() if isinstance(r, SecureReply)}
    return _parse_all(valid, parse, drops)
