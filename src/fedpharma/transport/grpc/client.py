"""The site's side of the gRPC transport: dial out, join, pull tasks, push results, repeat.

A site never listens on a port (hospital firewalls allow outbound connections only). The loop in
:func:`run_site` joins the coordinator, long-polls for tasks, hands each task's bytes to the site
runtime (``handler.handle_encoded``), pushes the answer, sends heartbeats while it works, reconnects
with exponential backoff when the connection drops, and returns when the coordinator says the run
is finished or the caller sets the stop event. Status lines go to ``on_status``; they name rounds
and sizes, never payloads, molecules or record ids.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from fedpharma.core.errors import CryptoError, FedPharmaError, ProtocolError, TransportError
from fedpharma.core.protocol import PROTOCOL_VERSION
from fedpharma.core.protocol.codec import EncodedMessage, message_type
from fedpharma.transport.grpc import fedpharma_v1_pb2 as pb
from fedpharma.transport.grpc.admission import THROTTLED
from fedpharma.transport.grpc.methods import CoordinatorStub
from fedpharma.transport.grpc.tls import INSECURE_WARNING, SiteTls
from fedpharma.transport.grpc.wire import (
    CertificateRefused,
    OutgoingPayload,
    PayloadAssembler,
    PayloadRejected,
    PayloadTooLarge,
    ResultRejected,
    VersionMismatch,
    WireLimits,
    check_version,
    chunk_data,
    chunk_kind,
    data_frame,
    payload_header,
)
from fedpharma.transport.inprocess import MessageHandler

log = logging.getLogger(__name__)

StatusCallback = Callable[[str], None]
MIN_HEARTBEAT_SECONDS = 0.1  # whatever the coordinator asks, never spin


Witness = Callable[[str, int, int, str], None]
"""Keeps the audit head that came with a task: ``witness(run_id, round, seq, hash)``."""


def _ignore(_: str) -> None:
    return None


@dataclass(frozen=True)
class JoinInfo:
    """What the coordinator tells a site when it joins."""

    run_id: str
    heartbeat_seconds: float
    max_payload_bytes: int
    chunk_bytes: int


@dataclass(frozen=True)
class PulledTask:
    """A task fetched from the coordinator: its encoded bytes and the header naming it."""

    header: pb.PayloadHeader
    payload: memoryview

    @property
    def round(self) -> int:
        return int(self.header.round)


@dataclass(frozen=True)
class RunFinished:
    reason: str


@dataclass(frozen=True)
class SiteSettings:
    """How a site talks to the coordinator."""

    pull_wait: float = 5.0  # long-poll: how long each PullTask may wait for a task
    rpc_timeout: float = 30.0  # deadline of the small calls (join, heartbeat, leave)
    transfer_timeout: float = 600.0  # deadline of one task download or result upload
    backoff_initial: float = 0.5  # first reconnect delay; doubles up to backoff_max
    backoff_max: float = 30.0
    give_up_after: float | None = None  # stop retrying after this many seconds without a join
    limits: WireLimits = field(default_factory=WireLimits)


@dataclass(frozen=True)
class SiteSummary:
    """How a site's run ended."""

    results_sent: int
    ended_because: str


class SiteConnection:
    """One gRPC connection to the coordinator; every failure is mapped to a fedpharma error."""

    def __init__(
        self,
        address: str,
        tls: SiteTls | None,
        site: str,
        *,
        settings: SiteSettings = SiteSettings(),
    ) -> None:
        self.address = address
        self.site = site
        self._tls = tls
        self._settings = settings
        options = settings.limits.grpc_options()
        if tls is None:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            self._channel = grpc.secure_channel(address, tls.credentials(), options=options)
        self._stub = CoordinatorStub(self._channel)
        self._chunk_bytes = settings.limits.chunk_bytes

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SiteConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def join(self) -> JoinInfo:
        request = pb.JoinRequest(protocol_version=PROTOCOL_VERSION, site=self.site)
        reply = self._call("join", self._stub.Join, request)
        check_version(reply.protocol_version, "the coordinator")
        self._chunk_bytes = min(self._settings.limits.chunk_bytes, reply.chunk_bytes)
        return JoinInfo(
            reply.run_id, reply.heartbeat_seconds, reply.max_payload_bytes, reply.chunk_bytes
        )

    def pull(self, wait: float) -> PulledTask | RunFinished | None:
        """The next task, the end of the run, or None when no task came within ``wait`` s."""
        request = pb.PullRequest(site=self.site, wait_seconds=wait)
        timeout = wait + self._settings.transfer_timeout
        try:
            stream = self._stub.PullTask(request, timeout=timeout)
            first = next(stream, None)
            if first is None:
                raise ProtocolError("the coordinator's task stream is empty")
            kind = chunk_kind(first)
            if kind == "no_task":
                return None
            if kind == "finished":
                return RunFinished(first.finished.reason)
            if kind != "header":
                raise ProtocolError("the coordinator's task stream does not start with a header")
            assembler = PayloadAssembler(first.header, self._settings.limits, "task")
            for message in stream:
                if chunk_kind(message) != "data":
                    raise PayloadRejected("the coordinator's task stream carries a second header")
                assembler.add(chunk_data(message))
            return PulledTask(first.header, assembler.finish())
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, "pull task", self.address) from exc

    def push(self, task: PulledTask, payload: EncodedMessage) -> int:
        """Stream ``payload`` as the answer to ``task`` and return its size in bytes; raises
        ResultRejected when refused."""
        outgoing = OutgoingPayload.of(payload)
        header = payload_header(
            outgoing,
            run_id=task.header.run_id,
            round=task.header.round,
            task_id=task.header.task_id,
            site=self.site,
        )
        self.push_raw(header, outgoing.chunks(self._chunk_bytes))
        return outgoing.size

    def push_raw(
        self, header: pb.PayloadHeader, chunks: Iterable[Sequence[bytes | memoryview]]
    ) -> None:
        """Stream a header and data chunks, each given as its pieces (``push`` builds them;
        tests forge them)."""

        def messages() -> Iterator[pb.ResultChunk | bytes]:
            yield pb.ResultChunk(header=header)
            for pieces in chunks:
                yield data_frame(pb.ResultChunk, pieces)

        self._call(
            "push result",
            self._stub.PushResult,
            messages(),
            timeout=self._settings.transfer_timeout,
        )

    def heartbeat(self) -> bool:
        """Send a sign of life; True when the coordinator says the run is finished."""
        reply = self._call("heartbeat", self._stub.Heartbeat, pb.HeartbeatRequest(site=self.site))
        return bool(reply.finished)

    def leave(self, reason: str) -> None:
        self._call("leave", self._stub.Leave, pb.LeaveRequest(site=self.site, reason=reason))

    def _call(self, what: str, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout or self._settings.rpc_timeout)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, what, self.address) from exc


class _NotJoined(TransportError):
    """The coordinator does not know this site (it restarted): join again."""


def map_rpc_error(exc: grpc.RpcError, what: str, address: str) -> FedPharmaError:
    """The fedpharma error for a failed call, with a message that says what to do about it."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    lowered = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE and "handshake" in lowered:
        if "expired" in lowered:
            return CertificateRefused(
                f"{what}: the coordinator's certificate has expired ({details}); "
                "the coordinator's operator must renew it"
            )
        return CertificateRefused(
            f"{what}: TLS handshake with {address} failed: the coordinator's certificate is not "
            "signed by the CA in this site's ca.pem (unknown CA), or the address is not one the "
            f"certificate names ({details})"
        )
    if code == grpc.StatusCode.UNAVAILABLE and "socket closed" in lowered:
        return TransportError(
            f"{what}: {address} closed the connection during the TLS handshake. It most likely "
            "refused this site's certificate: expired, issued by an unknown CA (another "
            "consortium's), or not a client certificate; or the coordinator is restarting"
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and THROTTLED in details:
        return TransportError(f"{what}: {details}")
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return CertificateRefused(f"{what}: the coordinator refused this site: {details}")
    if code == grpc.StatusCode.NOT_FOUND:
        return _NotJoined(f"{what}: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        if "protocol version" in lowered:
            return VersionMismatch(f"{what}: {details}")
        return ResultRejected(f"{what}: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return ResultRejected(f"{what}: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "concurrent" in lowered:
        return TransportError(f"{what}: the coordinator is busy (all workers in use): {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return PayloadTooLarge(f"{what}: message too large: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TransportError(f"{what}: {address} did not answer in time")
    if code == grpc.StatusCode.UNAVAILABLE:
        return TransportError(f"{what}: coordinator at {address} is unreachable ({details})")
    return TransportError(f"{what} failed ({code}): {details}")


def run_site(
    address: str,
    tls: SiteTls | None,
    handler: MessageHandler,
    *,
    site_name: str | None = None,
    insecure: bool = False,
    settings: SiteSettings = SiteSettings(),
    stop: threading.Event | None = None,
    on_status: StatusCallback = _ignore,
    witness: Witness | None = None,
) -> SiteSummary:
    """Serve the coordinator at ``address`` until the run finishes or ``stop`` is set.

    With ``tls`` the site's name is its certificate's common name (``site_name``, if given, must
    agree); certificates are checked locally first so an expired or foreign certificate fails
    with a clear :class:`CertificateRefused`. ``insecure=True`` (no ``tls``) requires
    ``site_name`` and logs a loud warning. Raises :class:`CertificateRefused` and
    :class:`VersionMismatch` at once (retrying cannot help) and :class:`TransportError` once
    ``settings.give_up_after`` seconds pass without a successful join. ``witness`` is told the
    coordinator's audit head that came with each task (``fedpharma.site.witness``).
    """
    stop = stop or threading.Event()
    name = _site_identity(tls, site_name, insecure, on_status)
    backoff, failing_since, sent = settings.backoff_initial, None, 0
    while not stop.is_set():
        try:
            with SiteConnection(address, tls, name, settings=settings) as connection:
                info = connection.join()
                on_status(f"joined run {info.run_id} at {address} as {name}")
                backoff, failing_since = settings.backoff_initial, None
                ended, answered = _serve(
                    connection, info, handler, settings, stop, on_status, witness
                )
                sent += answered
                # Leaving is a courtesy; the coordinator notices silence anyway.
                with contextlib.suppress(TransportError):
                    connection.leave(ended)
                on_status(f"left the run: {ended}")
                return SiteSummary(sent, ended)
        except (CertificateRefused, VersionMismatch):
            raise
        except TransportError as exc:
            now = time.monotonic()
            failing_since = failing_since or now
            if settings.give_up_after is not None and now - failing_since > settings.give_up_after:
                raise
            on_status(f"connection problem: {exc}; retrying in {backoff:.1f} s")
            stop.wait(backoff)
            backoff = min(backoff * 2, settings.backoff_max)
    return SiteSummary(sent, "stopped")


def _site_identity(
    tls: SiteTls | None, site_name: str | None, insecure: bool, on_status: StatusCallback
) -> str:
    if tls is None:
        if not insecure or not site_name:
            raise TransportError("give the site's TLS folder, or insecure=True and a site name")
        log.warning(INSECURE_WARNING)
        on_status(INSECURE_WARNING)
        return site_name
    if insecure:
        raise TransportError("insecure=True contradicts the TLS folder given")
    try:
        certified = tls.check().common_name
    except CryptoError as exc:
        raise CertificateRefused(f"this site's certificate cannot be used: {exc}") from exc
    if site_name is not None and site_name != certified:
        raise CertificateRefused(
            f"site name {site_name!r} differs from the certificate's name {certified!r}"
        )
    return certified


def _serve(
    connection: SiteConnection,
    info: JoinInfo,
    handler: MessageHandler,
    settings: SiteSettings,
    stop: threading.Event,
    on_status: StatusCallback,
    witness: Witness | None = None,
) -> tuple[str, int]:
    """Pull, handle and push until the run finishes or ``stop``; (why it ended, results sent)."""
    beating = threading.Event()
    heartbeats = threading.Thread(
        target=_send_heartbeats,
        args=(connection, info.heartbeat_seconds, beating),
        name="fedpharma-heartbeat",
        daemon=True,
    )
    heartbeats.start()
    sent, waiting = 0, False
    try:
        while not stop.is_set():
            pulled = connection.pull(settings.pull_wait)
            if isinstance(pulled, RunFinished):
                return f"run finished ({pulled.reason})", sent
            if pulled is None:
                if not waiting:
                    on_status("waiting for a task")
                waiting = True
                continue
            waiting = False
            if witness is not None:
                header = pulled.header
                witness(header.run_id, pulled.round, header.audit_seq, header.audit_hash)
            size = len(pulled.payload) / 1e6
            where = f"round {pulled.round}" if pulled.round > 0 else "before round 1"
            kind = TASK_WORDS.get(message_type(pulled.payload) or "", "task")
            on_status(f"{where}: task received ({kind}, {size:.1f} MB), working")
            try:
                answer = handler.handle_encoded(pulled.payload)
            except FedPharmaError as exc:
                on_status(f"{where}: the task failed here ({type(exc).__name__})")
                continue
            try:
                size = connection.push(pulled, answer) / 1e6
            except (ResultRejected, PayloadRejected) as exc:
                on_status(f"{where}: the coordinator rejected the result: {exc}")
                continue
            sent += 1
            on_status(f"{where}: result sent ({kind}, {size:.1f} MB)")
        return "site stopped", sent
    finally:
        beating.set()
        heartbeats.join()


# What a task asks, for progress lines (tasks before round 1 say so, not "round 0").
TASK_WORDS = {
    "TrainTask": "train",
    "EvaluateTask": "evaluate",
    "DescribeTask": "preprocessing check",
    "LabelStatisticsTask": "label statistics",
    "FeatureStatisticsTask": "feature statistics",
    "DataCheckTask": "data checks",
    "PreprocessingTask": "fitted preprocessing",
    "SecureTask": "secure aggregation",
    "TaskSummaryTask": "per-task summary",
    "ChemicalOverlapTask": "chemical-space overlap",
}


def _send_heartbeats(connection: SiteConnection, interval: float, done: threading.Event) -> None:
    """Tell the coordinator this site is alive while it trains; errors surface in the main loop."""
    while not done.wait(max(interval, MIN_HEARTBEAT_SECONDS)):
        try:
            connection.heartbeat()
        except TransportError:
            continue
