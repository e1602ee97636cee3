"""The hostile-site harness: a real coordinator over loopback mutual TLS, two honest sites
running the real site loop, and a hostile site holding a valid certificate of the same
consortium that speaks the real wire framing, but says what it likes.

Everything is bounded: loopback only, short deadlines, and attacks of a few hundred calls.
"""

from __future__ import annotations

import contextlib
import json
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedpharma.core.errors import FedPharmaError
from fedpharma.core.params import MAGIC as PARAMS_MAGIC
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    PROTOCOL_VERSION,
    EvaluateResult,
    EvaluateTask,
    Failure,
    Reply,
    TrainResult,
    TrainTask,
)
from fedpharma.core.protocol.codec import MAGIC as MESSAGE_MAGIC
from fedpharma.core.protocol.codec import decode_message, encode_message, encode_message_parts
from fedpharma.server.audit import AuditEntry, AuditLog, read_entries, verify
from fedpharma.transport.grpc import (
    CoordinatorSettings,
    GrpcCoordinatorServer,
    ServerTls,
    SiteConnection,
    SiteSettings,
    SiteTls,
    run_site,
)
from fedpharma.transport.grpc.admission import AdmissionSettings
from fedpharma.transport.grpc.client import PulledTask
from fedpharma.transport.grpc.wire import OutgoingPayload, payload_header

HONEST = ("site-a", "site-b")
HOSTILE = "site-m"
RUN = "run-1"
FAST_SITE = SiteSettings(pull_wait=0.5, backoff_initial=0.05, backoff_max=0.2, give_up_after=5.0)
OPEN_DOOR = AdmissionSettings(
    max_calls_per_site=10**6,
    max_pulls_per_site=10**6 - 1,
    rate_per_site=1e9,
    burst_per_site=10**9,
    quarantine_after=10**9,
    audit_burst=10**9,
    max_task_sends=10**9,
)
"""Admission control switched off, for the weakened twins."""
OFFENCES = ("refused", "result_rejected", "denied", "quarantined")


def model(n: int = 1000, seed: int = 0) -> Parameters:
    rng = np.random.default_rng(seed)
    return Parameters.from_dict({"w": rng.normal(size=n), "b": np.ones(3)})


class Honest:
    """An honest site runtime: its update is the model plus a fixed offset, in the model's
    dtypes."""

    def __init__(self, name: str) -> None:
        self.name = name

    def handle_encoded(self, data: memoryview) -> tuple[bytes | memoryview, ...]:
        task = decode_message(data)
        if isinstance(task, EvaluateTask):
            return encode_message_parts(EvaluateResult(task.run_id, task.round, self.name, 7))
        assert isinstance(task, TrainTask)
        return encode_message_parts(answer(task, self.name))


def answer(
    task: TrainTask, site: str, offset: float = 1.0, dtype: str | None = None
) -> TrainResult:
    """An update for ``task`` (``dtype`` forces every array's dtype)."""
    arrays = tuple((a + offset).astype(dtype or a.dtype) for a in task.parameters.arrays)
    update = Parameters(task.parameters.names, arrays)
    return TrainResult(task.run_id, task.round, site, update, 10, {"loss": 1.0})


def crafted_result(task: TrainTask, site: str, shape: list[int], data_bytes: int) -> bytes:
    """A well-framed TrainResult whose update claims ``shape``, followed by ``data_bytes``."""
    header = json.dumps(
        {
            "type": "TrainResult",
            "version": PROTOCOL_VERSION,
            "run_id": task.run_id,
            "round": task.round,
            "site": site,
            "n_examples": 10,
            "metrics": {},
        }
    ).encode()
    entries = json.dumps([{"name": "w", "dtype": "<f4", "shape": shape}]).encode()
    update = PARAMS_MAGIC + struct.pack("<I", len(entries)) + entries + b"\0" * data_bytes
    return MESSAGE_MAGIC + struct.pack("<I", len(header)) + header + update


class Hostile:
    """The hostile site: a :class:`SiteConnection` with a valid certificate, plus raw pushes."""

    def __init__(self, address: str, folder: Path) -> None:
        self.connection = SiteConnection(address, SiteTls.from_folder(folder), HOSTILE)

    def join(self) -> None:
        self.connection.join()

    def task(self, wait: float = 0.5, tries: int = 20) -> PulledTask:
        """Pull until the coordinator hands out a task."""
        for _ in range(tries):
            pulled = self.connection.pull(wait)
            if isinstance(pulled, PulledTask):
                return pulled
        raise AssertionError("the hostile site was never given a task")

    def push(self, pulled: PulledTask, payload: bytes, **header_changes: object) -> None:
        """Push ``payload`` as the answer to ``pulled`` (header fields may be forged)."""
        outgoing = OutgoingPayload.of((payload,))
        header = payload_header(
            outgoing,
            run_id=pulled.header.run_id,
            round=pulled.header.round,
            task_id=pulled.header.task_id,
            site=HOSTILE,
        )
        for name, value in header_changes.items():
            setattr(header, name, value)
        self.connection.push_raw(header, outgoing.chunks(64 * 1024))

    def attempt(self, call: Callable[[], object]) -> object:
        """``call()``'s result, or the typed error it raised."""
        try:
            return call()
        except FedPharmaError as exc:
            return exc

    def close(self) -> None:
        with contextlib.suppress(FedPharmaError):
            self.connection.leave("done")
        self.connection.close()


class SiteThread:
    """An honest site's ``run_site`` loop in a thread."""

    def __init__(self, address: str, folder: Path, name: str) -> None:
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(address, folder, name), daemon=True)
        self._thread.start()

    def _run(self, address: str, folder: Path, name: str) -> None:
        try:
            run_site(
                address,
                SiteTls.from_folder(folder),
                Honest(name),
                settings=FAST_SITE,
                stop=self.stop_event,
            )
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "an honest site did not stop"
        if self.error is not None:
            raise self.error


@dataclass
class Arena:
    """A running coordinator with two honest sites and a joined hostile one."""

    server: GrpcCoordinatorServer
    hostile: Hostile
    audit_path: Path
    consortium: Path
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4))

    def start_round(
        self,
        rnd: int,
        *,
        hostile: bool = False,
        timeout: float = 5.0,
        params: Parameters | None = None,
    ) -> Future[dict[str, Reply | Failure]]:
        """Send a train task to the honest sites (and the hostile one) in the background."""
        sites = (*HONEST, HOSTILE) if hostile else HONEST
        task = TrainTask(RUN, rnd, params or model())
        return self.pool.submit(self.server.channel.exchange, dict.fromkeys(sites, task), timeout)

    def round(self, rnd: int, **kwargs: object) -> dict[str, Reply | Failure]:
        return self.start_round(rnd, **kwargs).result()  # type: ignore[arg-type]

    def entries(self, site: str = HOSTILE) -> list[AuditEntry]:
        return [e for e in read_entries(self.audit_path) if e.site == site]

    def offences(self) -> list[AuditEntry]:
        """Audit entries that name the hostile site as refused, rejected or quarantined."""
        return [e for e in self.entries() if e.kind in OFFENCES]


@contextlib.contextmanager
def arena(
    consortium: Path,
    tmp_path: Path,
    *,
    admission: AdmissionSettings | None = None,
    **overrides: object,
) -> Iterator[Arena]:
    """Start the coordinator, the honest sites and the hostile one; tear all down after."""
    values: dict[str, object] = {
        "run_id": RUN,
        "heartbeat_seconds": 0.2,
        "liveness_timeout": 3.0,
        "max_pull_wait": 0.5,
        "max_workers": 16,
        "admission": admission or AdmissionSettings(),
    }
    values.update(overrides)
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog(audit_path)
    server = GrpcCoordinatorServer(
        CoordinatorSettings(**values),  # type: ignore[arg-type]
        ServerTls.from_folder(consortium / "coordinator"),
        audit=audit,
    )
    server.start()
    honest = [SiteThread(server.address, consortium / "sites" / s, s) for s in HONEST]
    hostile = Hostile(server.address, consortium / "sites" / HOSTILE)
    try:
        hostile.join()
        assert len(server.channel.wait_for_sites(3, timeout=10)) == 3
        yield Arena(server, hostile, audit_path, consortium)
    finally:
        hostile.close()
        server.finish(wait=3)
        for site in honest:
            site.stop()
        server.stop(grace=0.5)
        audit.close()
    assert verify(audit_path).ok


def honest_kept_their_rounds(*rounds: Mapping[str, Reply | Failure]) -> None:
    for replies in rounds:
        for site in HONEST:
            assert isinstance(replies[site], TrainResult), (site, replies[site])


def encoded(message: TrainResult) -> bytes:
    return encode_message(message)


def elapsed(since: float) -> float:
    return time.monotonic() - since
