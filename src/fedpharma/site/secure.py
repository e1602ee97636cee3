"""A site's part in secure aggregation, mirroring :mod:`fedpharma.server.secure`.

Under secure aggregation not even Δ_k leaves the site in the clear. With
:class:`~fedpharma.core.protocol.settings.SecAggSettings` (Bonawitz et al. 2017, Fig. 4) the site
quantizes n_k and its weighted update (:meth:`~fedpharma.secure.FixedPoint.encode_weighted`),
answers its train task with a key advertisement endorsed by its identity, sends the contribution
only under pairwise and self masks in the ``masked_input`` phase, signs one survivor list in the
``consistency`` phase and reveals shares only for it. With
:class:`~fedpharma.core.protocol.settings.CKKSSettings` it answers with n_k·Δ_k encrypted under the
consortium's CKKS key (Cheon et al. 2017), endorsed by its identity; it signs one contributor set
per round and decrypts only the sum of that set's signed contributions, which it adds itself
(docs/ckks.md) — never a single update, never twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fedpharma.core.errors import CryptoError, PolicyRefused, ProtocolError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    ChemicalOverlapTask,
    FeatureStatisticsTask,
    SecureReply,
    SecureTask,
    TrainTask,
)
from fedpharma.core.protocol.messages import SECURE_FIRST_PHASE
from fedpharma.core.protocol.settings import CKKSSettings, SecAggSettings, SecureSettings
from fedpharma.secure.ckks import SecretContext
from fedpharma.secure.contributors import (
    ContributorSet,
    DecryptRequest,
    SetSignature,
    SignedContribution,
    check_contributor_set,
    check_decrypt_request,
    contribution_statement,
    update_digest,
)
from fedpharma.secure.identity import Consortium, SiteIdentity
from fedpharma.secure.quantize import FixedPoint, RingVector
from fedpharma.secure.secagg import (
    ConsistencyProof,
    KeyRoster,
    RoundSetup,
    SecAggSite,
    ShareDelivery,
    SurvivorList,
)
from fedpharma.secure.secagg.round import MIN_SITES


def check_first_set(signed_before: bool) -> None:
    """Refuse to sign a second contributor set in one round: two decrypted sets that differ in
    one site would give the coordinator that site's update (docs/ckks.md)."""
    if signed_before:
        raise CryptoError(
            "this site already signed a contributor set this round; it signs only one"
        )


@dataclass(frozen=True)
class _SecAggRound:
    """A secagg round in progress: this round's secrets and quantized contribution."""

    site: SecAggSite
    contribution: RingVector


@dataclass(frozen=True)
class _CKKSRound:
    """A CKKS round this site contributed to: the fewest updates it will decrypt a sum of, the
    digest of its own contribution and the one contributor set it signed."""

    threshold: int
    digest: bytes
    signed: ContributorSet | None = None


class SecureParticipation:
    """One site's secure-aggregation rounds.

    ``identity`` (this site's certificate and key) endorses what the site says and
    ``consortium`` (the CA) checks what the other sites say: the provisioned PKI in a
    deployment, a throwaway one in a simulation. ``min_sites`` is the site's own floor for t,
    from its copy of the run recipe, never from the coordinator's task. ``ckks_key`` is the
    consortium's CKKS secret key (provisioned with the PKI), needed for CKKS tasks. The state
    of the current round is kept in memory only and dropped after its last phase; a newer round
    drops an abandoned one."""

    def __init__(
        self,
        identity: SiteIdentity,
        consortium: Consortium,
        *,
        min_sites: int = 1,
        ckks_key: SecretContext | None = None,
    ) -> None:
        self.site = identity.name
        self.identity = identity
        self.consortium = consortium
        self.min_sites = min_sites
        self.ckks_key = ckks_key
        self._rounds: dict[tuple[str, int], _SecAggRound | _CKKSRound] = {}
        self._signed_sets: set[tuple[str, int]] = set()

    def check(self, settings: SecureSettings) -> None:
        """Refuse, before any record is read, what this site cannot take part in."""
        if settings.threshold < max(self.min_sites, MIN_SITES):
            raise PolicyRefused(
                f"the task asks for a secure sum of at least {settings.threshold} sites, this "
                f"site requires {max(self.min_sites, MIN_SITES)} (its recipe's min_sites, and "
                "never fewer than 3); refusing to be in a smaller sum"
            )
        if isinstance(settings, SecAggSettings):
            FixedPoint.from_settings(settings)
            return
        self._key(settings)

    def contribute(
        self,
        task: TrainTask | FeatureStatisticsTask | ChemicalOverlapTask,
        settings: SecureSettings,
        update: Parameters,
        weight: int,
    ) -> SecureReply:
        """The train task's answer: a key advertisement (secagg) or the encrypted weighted
        update (CKKS); the update itself stays here. A feature-statistics task's input (its
        bounded sums) is summed the same way."""
        flat = update.flatten()
        key = (task.run_id, task.round)
        if isinstance(settings, CKKSSettings):
            if key in self._signed_sets:
                raise PolicyRefused(
                    f"this site already signed the contributors of round {task.round}; a round "
                    "is decrypted once (a repeat would let the coordinator take differences)"
                )
            encrypted = self._key(settings).encrypt_update(flat, weight).to_bytes()
            digest = update_digest(encrypted)
            statement = contribution_statement(task.run_id, task.round, self.site, digest)
            signed = SignedContribution(
                task.run_id, task.round, self.site, encrypted, self.identity.endorse(statement)
            )
            self._rounds = {key: _CKKSRound(settings.threshold, digest)}
            payload = signed.to_bytes()
            phase = SECURE_FIRST_PHASE[settings.kind]
            return SecureReply(task.run_id, task.round, self.site, phase, payload)
        contribution = FixedPoint.from_settings(settings).encode_weighted(flat, weight)
        setup = RoundSetup(
            task.run_id, task.round, settings.threshold, contribution.size, settings.ring_bits
        )
        secagg = SecAggSite(setup, self.identity, self.consortium)
        self._rounds = {key: _SecAggRound(secagg, contribution)}
        payload = secagg.advertise_keys().to_bytes()
        phase = SECURE_FIRST_PHASE[settings.kind]
        return SecureReply(task.run_id, task.round, self.site, phase, payload)

    def answer(self, task: SecureTask) -> SecureReply:
        """A later phase of a round this site contributed to: secagg's share_keys,
        masked_input, consistency and unmask (Bonawitz et al. 2017, §4), or CKKS decrypt."""
        key = (task.run_id, task.round)
        state = self._rounds.get(key)
        if state is None:
            raise ProtocolError(
                f"no secure-aggregation round {task.round} of run {task.run_id!r} is open here"
            )
        if isinstance(state, _CKKSRound) and task.phase == "sign_contributors":
            payload = self._sign_contributors(key, state, task.payload).to_bytes()
        elif isinstance(state, _CKKSRound) and task.phase == "decrypt":
            payload = self._decrypt(key, state, task.payload)
        elif isinstance(state, _SecAggRound) and task.phase == "share_keys":
            payload = state.site.share_keys(KeyRoster.from_bytes(task.payload)).to_bytes()
        elif isinstance(state, _SecAggRound) and task.phase == "masked_input":
            delivery = ShareDelivery.from_bytes(task.payload)
            payload = state.site.masked_input(delivery, state.contribution).to_bytes()
        elif isinstance(state, _SecAggRound) and task.phase == "consistency":
            payload = state.site.consistency(SurvivorList.from_bytes(task.payload)).to_bytes()
        elif isinstance(state, _SecAggRound) and task.phase == "unmask":
            payload = state.site.unmask(ConsistencyProof.from_bytes(task.payload)).to_bytes()
            del self._rounds[key]
        else:
            raise ProtocolError(
                f"a site does not answer a secure task of phase {task.phase!r} in this round"
            )
        return SecureReply(task.run_id, task.round, self.site, task.phase, payload)

    def _sign_contributors(
        self, key: tuple[str, int], state: _CKKSRound, payload: bytes
    ) -> SetSignature:
        """Endorse the round's one contributor set, after checking it (docs/ckks.md)."""
        check_first_set(key in self._signed_sets)
        contributors = ContributorSet.from_bytes(payload)
        threshold = max(state.threshold, self.min_sites, MIN_SITES)
        own = (self.site, state.digest)
        check_contributor_set(self.consortium, contributors, key[0], key[1], own, threshold)
        self._signed_sets.add(key)
        self._rounds[key] = dataclasses.replace(state, signed=contributors)
        return SetSignature(self.site, self.identity.endorse(contributors.statement()))

    def _decrypt(self, key: tuple[str, int], state: _CKKSRound, payload: bytes) -> bytes:
        """The mean of the signed set's contributions, added here; once per round."""
        if state.signed is None or self.ckks_key is None:
            raise ProtocolError("a site decrypts only the contributor set it signed")
        del self._rounds[key]  # at most one decryption per round, whatever happens next
        updates = check_decrypt_request(
            self.consortium, DecryptRequest.from_bytes(payload), state.signed
        )
        members = len(state.signed.members)
        decrypted = self.ckks_key.decrypt_weighted_mean(
            self.ckks_key.aggregate(updates), min_contributors=members
        )
        if decrypted.contributors != members:
            raise CryptoError(
                f"the sum counts {decrypted.contributors} contributors, the set has {members}: "
                "a contribution is not one site's single update"
            )
        return decrypted.to_bytes()

    def _key(self, settings: CKKSSettings) -> SecretContext:
        """This site's CKKS key, checked against the one the task names."""
        if self.ckks_key is None:
            raise PolicyRefused(
                "this site holds no CKKS key; give it the key file made by `fedpharma provision` "
                '(site.toml [secure] ckks_key) or use [secure] mode = "secagg"'
            )
        if settings.key_id != self.ckks_key.key_id.hex():
            raise PolicyRefused(
                f"the task asks for CKKS key {settings.key_id[:8]}…, this site holds "
                f"{self.ckks_key.key_id.hex()[:8]}…; provision every party from the same key"
            )
        return self.ckks_key
