"""A site's part in secure aggregation, mirroring :mod:`fedpharma.server.secure`.

Under secure aggregation not even Δ_k leaves the site in the clear. With
:class:`~fedpharma.protocol.settings.SecAggSettings` (Bonawitz et al. 2017, Fig. 4) the site
quantizes n_k and its weighted update (:meth:`~fedpharma.secure.FixedPoint.encode_weighted`),
answers its train task with a key advertisement, and sends the contribution only under pairwise
and self masks in the ``masked_input`` phase. With
:class:`~fedpharma.protocol.settings.CKKSSettings` it answers with n_k·Δ_k encrypted under the
consortium's CKKS key (Cheon et al. 2017), and later decrypts the coordinator's encrypted *sum*
of at least t updates — never a single one — into the mean.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedpharma.errors import PolicyRefused, ProtocolError
from fedpharma.params import Parameters
from fedpharma.protocol import SecureReply, SecureTask, TrainTask
from fedpharma.protocol.messages import SECURE_FIRST_PHASE
from fedpharma.protocol.settings import CKKSSettings, SecAggSettings, SecureSettings
from fedpharma.secure.ckks import EncryptedUpdate, SecretContext
from fedpharma.secure.quantize import FixedPoint, RingVector
from fedpharma.secure.secagg import (
    KeyRoster,
    RoundSetup,
    SecAggSite,
    ShareDelivery,
    SurvivorList,
)


@dataclass(frozen=True)
class _SecAggRound:
    """A secagg round in progress: this round's secrets and quantized contribution."""

    site: SecAggSite
    contribution: RingVector


@dataclass(frozen=True)
class _CKKSRound:
    """A CKKS round this site contributed to: the fewest updates it will decrypt a sum of."""

    threshold: int


class SecureParticipation:
    """One site's secure-aggregation rounds. ``ckks_key`` is the consortium's CKKS secret key
    (provisioned with the PKI), needed for CKKS tasks. The state of the current round is kept in
    memory only and dropped after its last phase; a newer round drops an abandoned one."""

    def __init__(self, site: str, ckks_key: SecretContext | None = None) -> None:
        self.site = site
        self.ckks_key = ckks_key
        self._rounds: dict[tuple[str, int], _SecAggRound | _CKKSRound] = {}

    def check(self, settings: SecureSettings) -> None:
        """Refuse, before any record is read, what this site cannot take part in."""
        if isinstance(settings, SecAggSettings):
            FixedPoint.from_settings(settings)
            return
        self._key(settings)

    def contribute(
        self, task: TrainTask, settings: SecureSettings, update: Parameters, weight: int
    ) -> SecureReply:
        """The train task's answer: a key advertisement (secagg) or the encrypted weighted
        update (CKKS); the update itself stays here."""
        flat = update.flatten()
        key = (task.run_id, task.round)
        if isinstance(settings, CKKSSettings):
            payload = self._key(settings).encrypt_update(flat, weight).to_bytes()
            self._rounds = {key: _CKKSRound(settings.threshold)}
            phase = SECURE_FIRST_PHASE[settings.kind]
            return SecureReply(task.run_id, task.round, self.site, phase, payload)
        contribution = FixedPoint.from_settings(settings).encode_weighted(flat, weight)
        setup = RoundSetup(
            task.run_id, task.round, settings.threshold, contribution.size, settings.ring_bits
        )
        secagg = SecAggSite(setup, self.site)
        self._rounds = {key: _SecAggRound(secagg, contribution)}
        payload = secagg.advertise_keys().to_bytes()
        phase = SECURE_FIRST_PHASE[settings.kind]
        return SecureReply(task.run_id, task.round, self.site, phase, payload)

    def answer(self, task: SecureTask) -> SecureReply:
        """A later phase of a round this site contributed to: secagg's share_keys,
        masked_input and unmask (Bonawitz et al. 2017, Fig. 4), or CKKS decrypt."""
        key = (task.run_id, task.round)
        state = self._rounds.get(key)
        if state is None:
            raise ProtocolError(
                f"no secure-aggregation round {task.round} of run {task.run_id!r} is open here"
            )
        if isinstance(state, _CKKSRound) and task.phase == "decrypt" and self.ckks_key is not None:
            encrypted_sum = EncryptedUpdate.from_bytes(task.payload)
            decrypted = self.ckks_key.decrypt_weighted_mean(
                encrypted_sum, min_contributors=state.threshold
            )
            payload = decrypted.to_bytes()
            del self._rounds[key]
        elif isinstance(state, _SecAggRound) and task.phase == "share_keys":
            payload = state.site.share_keys(KeyRoster.from_bytes(task.payload)).to_bytes()
        elif isinstance(state, _SecAggRound) and task.phase == "masked_input":
            delivery = ShareDelivery.from_bytes(task.payload)
            payload = state.site.masked_input(delivery, state.contribution).to_bytes()
        elif isinstance(state, _SecAggRound) and task.phase == "unmask":
            payload = state.site.unmask(SurvivorList.from_bytes(task.payload)).to_bytes()
            del self._rounds[key]
        else:
            raise ProtocolError(
                f"a site does not answer a secure task of phase {task.phase!r} in this round"
            )
        return SecureReply(task.run_id, task.round, self.site, task.phase, payload)

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
