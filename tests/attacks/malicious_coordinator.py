"""A malicious coordinator: real sites, the real codec, and a coordinator that deviates at will.

Every site is a :class:`~fedpharma.site.runtime.SiteRuntime` with its real secure participation;
every task and reply crosses :func:`encode_message` / ``handle_encoded`` / :func:`decode_message`
as over gRPC. The coordinator here holds what a real one holds (the sites' replies, the public
CKKS context) and, where an attack says so, what a colluding site hands over (its round state).
A site's refusal surfaces as :class:`Stopped`: the attack was stopped by that site.

Each attack returns the coordinator's estimate of the victim's update Δ_victim; the tests assert
that it fails (stopped, or not close to Δ_victim) and, against a deliberately weakened build
(one check monkeypatched away), that the same attack recovers Δ_victim to ~1e-6.
"""

from __future__ import annotations

import functools

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import Refusal, SecureReply, SecureTask, TrainSettings, TrainTask
from fedpharma.core.protocol.codec import decode_message, encode_message
from fedpharma.core.protocol.settings import CKKSSettings, SecAggSettings
from fedpharma.models.base import FitOutput
from fedpharma.secure import shamir
from fedpharma.secure.ckks import DecryptedMean, SecretContext, create_secret_context
from fedpharma.secure.contributors import (
    ContributorSet,
    DecryptRequest,
    Member,
    SetSignature,
    SignedContribution,
)
from fedpharma.secure.identity import ephemeral_consortium
from fedpharma.secure.quantize import FixedPoint
from fedpharma.secure.secagg import (
    ConsistencyProof,
    ConsistencySignature,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    RoundSetup,
    SecAggSite,
    ShareBundle,
    ShareDelivery,
    SurvivorList,
    UnmaskingShares,
)
from fedpharma.secure.secagg.masks import Mask, add_masks, pairwise_mask
from fedpharma.secure.secagg.messages import consistency_statement
from fedpharma.site.runtime import SiteRuntime
from fedpharma.site.secure import SecureParticipation

RUN = "run-attacked"
SITES = ("site-a", "site-b", "site-c", "site-d", "site-e")
VICTIM = "site-a"
COLLUDER = "site-e"
LENGTH = 64
W0 = Parameters.from_dict({"w": np.linspace(-0.5, 0.5, LENGTH)})
MAX_EXAMPLES = 1_000


class Stopped(Exception):
    """A site refused the coordinator's request: the attack is stopped there."""


def delta(site: str) -> np.ndarray:
    """Δ_site: the fixed update the site's trainer makes (the attack's target)."""
    return np.random.default_rng([11, int.from_bytes(site.encode(), "little") % 2**32]).uniform(
        -0.3, 0.3, LENGTH
    )


def examples(site: str) -> int:
    return 20 + 7 * SITES.index(site) if site in SITES else 20


class FixedStep:
    """A trainer that moves the model by Δ_site, whatever the seed."""

    def __init__(self, site: str) -> None:
        self.site = site

    def fit(self, params, data, *, epochs, seed, proximal_mu=0.0):
        moved = Parameters(params.names, (params.arrays[0] + delta(self.site),))
        return FitOutput(moved, len(data), 0.5, 0.0)

    def predict(self, params, data):
        return np.zeros((len(data), 1), dtype=np.float32)


def _data(n: int) -> Dataset:
    rng = np.random.default_rng(n)
    return Dataset(
        features=rng.normal(size=(n, 2)).astype(np.float32),
        labels=rng.normal(size=(n, 1)).astype(np.float32),
        task="regression",
        task_names=("y",),
        groups=np.arange(n),
    )


@functools.cache
def ckks_key() -> SecretContext:
    """The consortium's CKKS key (every site holds it; the coordinator only its parameters)."""
    return create_secret_context()


def build_sites(names=SITES, *, min_sites: int = 1, ckks: bool = False) -> dict[str, SiteRuntime]:
    """Real sites with a consortium PKI of their own (the coordinator holds no CA key)."""
    consortium, identities = ephemeral_consortium(names)
    return {
        name: SiteRuntime(
            name,
            SiteData(_data(examples(name)), _data(5)),
            FixedStep(name),
            secure=SecureParticipation(
                identities[name],
                consortium,
                min_sites=min_sites,
                ckks_key=ckks_key() if ckks else None,
            ),
        )
        for name in names
    }


class Coordinator:
    """Sends any task to any site through the codec; a refusal raises :class:`Stopped`."""

    def __init__(self, sites: dict[str, SiteRuntime]) -> None:
        self.sites = sites

    def send(self, site: str, task) -> bytes:
        reply = decode_message(b"".join(self.sites[site].handle_encoded(encode_message(task))))
        if isinstance(reply, Refusal):
            raise Stopped(f"{site}: {reply.reason}")
        assert isinstance(reply, SecureReply)
        return reply.payload

    def train(self, site: str, settings, rnd: int) -> bytes:
        return self.send(site, TrainTask(RUN, rnd, W0, TrainSettings(secure=settings)))

    def phase(self, site: str, rnd: int, phase: str, payload: bytes) -> bytes:
        return self.send(site, SecureTask(RUN, rnd, phase, payload))


# ----- SecAgg -------------------------------------------------------------------------------


def secagg_settings(threshold: int, n_sites: int) -> SecAggSettings:
    return SecAggSettings(
        threshold=threshold, ring_bits=64, clip=1.0, max_sites=n_sites, max_examples=MAX_EXAMPLES
    )


@functools.cache
def codec(n_sites: int) -> FixedPoint:
    return FixedPoint.from_settings(secagg_settings(n_sites, n_sites))


def colluder_state(sites: dict[str, SiteRuntime], rnd: int) -> SecAggSite:
    """What a colluding site hands the coordinator: its whole round state."""
    participation = sites[COLLUDER].secure
    assert participation is not None
    return participation._rounds[(RUN, rnd)].site  # type: ignore[union-attr]


class SecAggAttack:
    """One secagg round run by the malicious coordinator up to the masked inputs."""

    def __init__(self, sites, threshold: int, *, rnd: int = 1, roster_sites=None) -> None:
        self.sites, self.threshold, self.rnd = sites, threshold, rnd
        self.coordinator = Coordinator(sites)
        names = tuple(sorted(sites)) if roster_sites is None else roster_sites
        self.setup = RoundSetup(RUN, rnd, threshold, LENGTH + 1, 64)
        settings = secagg_settings(threshold, len(sites))
        self.ads = {
            s: KeyAdvertisement.from_bytes(self.coordinator.train(s, settings, rnd)) for s in names
        }

    def mask(self, roster: KeyRoster, members) -> dict[str, MaskedInput]:
        """Share keys and collect masked inputs from ``members`` (the real sites in ``roster``)."""
        payload = roster.to_bytes()
        bundles = [
            ShareBundle.from_bytes(self.coordinator.phase(s, self.rnd, "share_keys", payload))
            for s in members
        ]
        return {
            s: MaskedInput.from_bytes(
                self.coordinator.phase(
                    s, self.rnd, "masked_input", _delivery(bundles, s).to_bytes()
                )
            )
            for s in members
        }

    def roster(self, ads=None) -> KeyRoster:
        ordered = tuple(sorted((ads or self.ads).values(), key=lambda a: a.site))
        return KeyRoster(RUN, self.rnd, self.threshold, ordered)

    def unmask_view(self, view, members, extra_signers=()) -> dict[str, UnmaskingShares]:
        """Show ``members`` the survivor list ``view``; sign it also with ``extra_signers``
        (round signing keys the coordinator holds); collect their unmasking shares."""
        survivors = SurvivorList(RUN, self.rnd, tuple(sorted(view))).to_bytes()
        signatures = [
            ConsistencySignature.from_bytes(
                self.coordinator.phase(s, self.rnd, "consistency", survivors)
            )
            for s in members
        ]
        statement = consistency_statement(RUN, self.rnd, tuple(sorted(view)))
        for site, key in extra_signers:
            signatures.append(ConsistencySignature(RUN, self.rnd, site, key.sign(statement)))
        proof = ConsistencyProof(
            RUN, self.rnd, tuple(sorted(view)), tuple(sorted(signatures, key=lambda s: s.site))
        ).to_bytes()
        return {
            s: UnmaskingShares.from_bytes(self.coordinator.phase(s, self.rnd, "unmask", proof))
            for s in members
        }

    def recover(self, roster, masked_victim, self_mask_shares, mask_key_shares) -> np.ndarray:
        """Δ_victim from its masked input and t shares of each of b_victim and s_victim^SK."""
        t = self.threshold
        if len(self_mask_shares) < t or len(mask_key_shares) < t:
            raise Stopped(
                f"only {len(self_mask_shares)} self-mask and {len(mask_key_shares)} mask-key "
                f"shares of the victim were revealed, t = {t} of each are needed"
            )
        seed = combine(self_mask_shares[:t])
        mask_key = X25519PrivateKey.from_private_bytes(combine(mask_key_shares[:t]))
        masks = [Mask(seed, -1)]
        for peer in roster.sites:
            if peer != VICTIM:
                added = pairwise_mask(
                    self.setup,
                    mask_key,
                    VICTIM,
                    peer,
                    roster.advertisement_of(peer).mask_public_key,
                )
                masks.append(Mask(added.seed, -added.sign))
        vector = masked_victim.vector().copy()
        add_masks(vector, masks)
        mean, _ = codec(len(self.sites)).decode_weighted_mean(vector)
        return mean


def _delivery(bundles, recipient: str) -> ShareDelivery:
    shares = tuple(s for b in bundles for s in b.shares if s.recipient == recipient)
    return ShareDelivery(RUN, bundles[0].round, recipient, shares)


def combine(shares):
    return shamir.combine(shares, shamir.lagrange_at_zero([s.x for s in shares]))


def shares_of(responses, owner: str, kind: str):
    return [r.share for resp in responses.values() for r in getattr(resp, kind) if r.owner == owner]


# ----- CKKS ---------------------------------------------------------------------------------


def ckks_settings(threshold: int = 3) -> CKKSSettings:
    return CKKSSettings(threshold=threshold, key_id=ckks_key().key_id.hex())


class CKKSAttack:
    """One CKKS round: every site uploads its signed contribution to the coordinator."""

    def __init__(self, sites, *, rnd: int = 1) -> None:
        self.coordinator = Coordinator(sites)
        self.rnd = rnd
        self.context = ckks_key().public_context()  # all the coordinator holds of the key
        self.uploads = {
            s: SignedContribution.from_bytes(self.coordinator.train(s, ckks_settings(), rnd))
            for s in sorted(sites)
        }

    def contributor_set(self, members, uploads=None) -> ContributorSet:
        chosen = uploads or self.uploads
        return ContributorSet(
            RUN,
            self.rnd,
            tuple(Member(s, chosen[s].digest, chosen[s].endorsement) for s in sorted(members)),
        )

    def signatures(self, contributors: ContributorSet, signers) -> tuple[SetSignature, ...]:
        payload = contributors.to_bytes()
        return tuple(
            SetSignature.from_bytes(
                self.coordinator.phase(s, self.rnd, "sign_contributors", payload)
            )
            for s in sorted(signers)
        )

    def decrypt(self, decryptor, contributors, signatures, updates) -> DecryptedMean:
        request = DecryptRequest(contributors, signatures, tuple(updates)).to_bytes()
        return DecryptedMean.from_bytes(
            self.coordinator.phase(decryptor, self.rnd, "decrypt", request)
        )

    def honest_set(self, members):
        """A contributor set its members all signed, and their uploads in order."""
        contributors = self.contributor_set(members)
        signatures = self.signatures(contributors, members)
        return contributors, signatures, [self.uploads[s].update for s in sorted(members)]


def clipped(site: str) -> np.ndarray:
    return np.clip(delta(site), -1.0, 1.0)
