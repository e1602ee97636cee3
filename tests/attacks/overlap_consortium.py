"""A consortium of real sites holding molecules' scaffolds, for the chemical-overlap tests.

Each site is a :class:`~fedpharma.site.runtime.SiteRuntime` with its real secure participation
and (unless told otherwise) the consortium's overlap key; the coordinator runs the real
:func:`~fedpharma.server.chemical_overlap.collect_chemical_overlap` over an in-process channel,
so every task and reply crosses the wire codec. :func:`observe` returns what that coordinator
holds afterwards: every reply it received, the secure sums it computed, and the summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedpharma.core.config import RunConfig, SecureConfig, config_from_dict
from fedpharma.core.dataset import Dataset, SiteData, SparseMatrix
from fedpharma.core.protocol import Reply, Task
from fedpharma.core.protocol.messages import Failure
from fedpharma.data.chunk_features import key64
from fedpharma.data.overlap import DEPLOYED_BUCKETS, hashed_set
from fedpharma.report.summary import ConsortiumOverlap
from fedpharma.secure.ckks import SecretContext
from fedpharma.secure.identity import ephemeral_consortium
from fedpharma.server import chemical_overlap
from fedpharma.server.round import Rejected
from fedpharma.server.secure_statistics import SecureStatistics, SecureTotal
from fedpharma.site.overlap import OverlapParticipation
from fedpharma.site.runtime import SiteRuntime
from fedpharma.site.secure import SecureParticipation
from fedpharma.transport.inprocess import InProcessChannel

RUN = "run-overlap"
KEY = bytes(range(32))
N_BITS = 64
SCAFFOLDS = (
    "c1ccccc1",
    "c1ccncc1",
    "C1CCNCC1",
    "c1ccc2ccccc2c1",
    "c1ccc2[nH]ccc2c1",
    "C1CCOC1",
    "c1cnc2ncnc2c1",
    "O=C1CCCN1",
    "c1ccc(-c2ccccc2)cc1",
    "C1CC2CCC1C2",
)
"""Public scaffold SMILES: anyone can hash them, given the key."""


def item(scaffold: str) -> str:
    """What a site hashes for a scaffold: its canonical SMILES' 64-bit key, as text."""
    return str(key64(scaffold))


def bucket(scaffold: str, key: bytes, buckets: int = DEPLOYED_BUCKETS) -> int:
    """The bucket ``scaffold`` falls in under ``key`` (b"": BLAKE2b without a key)."""
    return int(np.flatnonzero(hashed_set([item(scaffold)], key, buckets))[0])


def molecules(scaffolds: Sequence[str], bits: Sequence[int]) -> SiteData:
    """One molecule per scaffold (and an acyclic one), each setting a few of ``bits``."""
    keys = [key64(s) for s in scaffolds] + [0]
    n = len(keys)
    columns = [sorted({bits[(i + j) % len(bits)] for j in range(3)}) for i in range(n)]
    indptr = np.cumsum([0] + [len(c) for c in columns]).astype(np.int64)
    features = SparseMatrix(
        indptr,
        np.concatenate(columns).astype(np.int32),
        np.ones(int(indptr[-1]), dtype=np.uint16),
        N_BITS,
    )
    data = Dataset(
        features,
        np.zeros((n, 1), dtype=np.float32),
        "regression",
        ("y",),
        np.arange(n),
        scaffold_keys=np.asarray(keys, dtype=np.int64),
    )
    cut = max(1, n // 2)
    return SiteData(data.subset(np.arange(cut)), data.subset(np.arange(cut, n)))


def build_sites(
    holdings: Mapping[str, Sequence[str]],
    *,
    without_key: Sequence[str] = (),
    ckks: SecretContext | None = None,
) -> dict[str, SiteRuntime]:
    """Real sites holding ``holdings[site]``'s scaffolds, each with the overlap key but those
    ``without_key``."""
    consortium, identities = ephemeral_consortium(sorted(holdings))
    return {
        name: SiteRuntime(
            name,
            molecules(scaffolds, range(3 * i, 3 * i + 12)),
            trainer=None,  # type: ignore[arg-type]
            secure=SecureParticipation(identities[name], consortium, ckks_key=ckks),
            overlap=None if name in without_key else OverlapParticipation(KEY),
        )
        for i, (name, scaffolds) in enumerate(sorted(holdings.items()))
    }


def recipe(mode: str = "secagg") -> RunConfig:
    raw = {
        "dataset": {"path": "x.csv", "label_columns": ["y"], "task": "regression"},
        "secure": {"mode": mode},
    }
    return config_from_dict(raw)


class Recording:
    """The coordinator's channel, keeping every reply it receives (what a hostile coordinator
    holds)."""

    def __init__(self, channel: InProcessChannel) -> None:
        self.channel = channel
        self.received: list[Reply] = []
        self.tasks: list[Task] = []

    def available_sites(self) -> tuple[str, ...]:
        return self.channel.available_sites()

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        self.tasks += list(tasks.values())
        replies = self.channel.exchange(tasks, timeout)
        self.received += [r for r in replies.values() if not isinstance(r, Failure)]
        return replies


@dataclass(frozen=True)
class Observed:
    """What the coordinator holds after the overlap step."""

    received: tuple[Reply, ...]
    tasks: tuple[Task, ...]
    sums: tuple[np.ndarray, ...]
    overlap: ConsortiumOverlap


def observe(
    sites: Mapping[str, SiteRuntime],
    *,
    mode: str = "secagg",
    ckks: SecretContext | None = None,
    on_rejected: Rejected | None = None,
    config: RunConfig | None = None,
) -> Observed:
    """Run the real overlap step against ``sites``; keep what the coordinator holds."""
    channel = Recording(InProcessChannel(sites))
    sums: list[np.ndarray] = []
    real = chemical_overlap.run_secure_sum

    def keeping(*args: object, **kwargs: object) -> SecureTotal:
        total = real(*args, **kwargs)  # type: ignore[arg-type]
        if total.total is not None:
            sums.append(total.total)
        return total

    secure = SecureStatistics(
        SecureConfig(mode=mode), 3, None if ckks is None else ckks.public_context()
    )
    chemical_overlap.run_secure_sum = keeping  # type: ignore[assignment]
    try:
        config = config or recipe(mode)
        overlap = chemical_overlap.collect_chemical_overlap(
            config,
            channel,
            RUN,
            3,
            N_BITS,
            secure if config.secure.enabled else None,
            on_rejected=on_rejected,
        )
    finally:
        chemical_overlap.run_secure_sum = real  # type: ignore[assignment]
    return Observed(tuple(channel.received), tuple(channel.tasks), tuple(sums), overlap)
