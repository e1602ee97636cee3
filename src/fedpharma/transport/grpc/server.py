"""The coordinator's side of the gRPC transport: the service sites dial into, and its Channel.

:class:`GrpcCoordinatorServer` runs the ``fedpharma.v1.Coordinator`` service on a thread pool;
:class:`GrpcChannel` is the :class:`~fedpharma.protocol.Channel` the strategy's round loop uses.
``exchange`` queues each addressed site's task, sites fetch it with a long-polling ``PullTask``
and answer with ``PushResult``; ``exchange`` returns once every site answered, went silent, or the
deadline passed, with the same ``{site: Reply | Failure}`` shape as the in-process channel.

Every call is attributed to the site named in the caller's TLS client certificate; a message in
another site's name, a revoked certificate, a result for no outstanding task (replayed, stale,
unknown), and a malformed, truncated or oversized payload are refused with a typed error, written
to the audit log, and never stop the coordinator serving the other sites. A site the coordinator
dismisses (:meth:`GrpcChannel.dismiss`, e.g. refused at join) is no longer listed, and its next
pull ends its run with the reason.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import grpc

from fedpharma.errors import ConfigError, FedPharmaError, ProtocolError, TransportError
from fedpharma.protocol import PROTOCOL_VERSION, Failure, Refusal, Reply, Task
from fedpharma.protocol.codec import decode_message, encode_message_parts
from fedpharma.transport.grpc import fedpharma_v1_pb2 as pb
from fedpharma.transport.grpc.service import add_to_server
from fedpharma.transport.grpc.tls import (
    INSECURE_WARNING,
    PeerCertificates,
    RevocationList,
    ServerTls,
)
from fedpharma.transport.grpc.wire import (
    OutgoingPayload,
    PayloadAssembler,
    PayloadRejected,
    PayloadTooLarge,
    PayloadTruncated,
    ResultRejected,
    VersionMismatch,
    WireLimits,
    check_version,
    chunk_data,
    chunk_kind,
    data_frame,
    payload_header,
)
from fedpharma.transport.pki import NAME_PATTERN

log = logging.getLogger(__name__)


class AuditRecorder(Protocol):
    """Where the channel records what happened (``fedpharma.server.audit.AuditLog`` fits)."""

    def record(
        self, kind: str, *, site: str = "", round: int | None = None, reason: str = ""
    ) -> object: ...


@dataclass(frozen=True)
class CoordinatorSettings:
    """How the coordinator serves; every field has a safe default except the run id."""

    run_id: str
    address: str = "127.0.0.1:0"  # host:port to bind; port 0 picks a free port
    limits: WireLimits = field(default_factory=WireLimits)
    liveness_timeout: float = 30.0  # a site silent this long is no longer available
    heartbeat_seconds: float = 5.0  # how often sites are asked to send a heartbeat
    max_pull_wait: float = 5.0  # longest a PullTask long-poll is held open
    # Thread pool size. Each site may hold a long-poll, a heartbeat and a push at once, so allow
    # about 2 per site plus a few; beyond it calls are refused as busy and sites retry.
    max_workers: int = 32

    def __post_init__(self) -> None:
        problems = []
        if self.heartbeat_seconds <= 0 or self.liveness_timeout <= self.heartbeat_seconds:
            problems.append("liveness_timeout must exceed heartbeat_seconds, both positive")
        if self.max_pull_wait <= 0:
            problems.append("max_pull_wait must be positive")
        if self.max_workers < 2:
            problems.append("max_workers must be at least 2")
        if problems:
            raise ConfigError(problems, source="coordinator settings")


StatusCallback = Callable[[str], None]


def _ignore(_: str) -> None:
    return None


@dataclass
class _Outstanding:
    """A task queued for one site and the bookkeeping of its answer."""

    task_id: str
    run_id: str
    round: int
    payload: OutgoingPayload
    header: pb.PayloadHeader
    receiving: bool = False  # a push for it is streaming in right now


@dataclass
class _SiteState:
    last_seen: float
    left: bool = False


class _SiteRegistry:
    """Thread-safe state shared by the service handlers and the channel."""

    def __init__(self, settings: CoordinatorSettings, note: Callable[..., None]) -> None:
        self.settings = settings
        self._note = note
        self._cond = threading.Condition()
        self._sites: dict[str, _SiteState] = {}
        self._outstanding: dict[str, _Outstanding] = {}
        self._answers: dict[str, Reply | Failure] = {}
        self._dismissed: dict[str, str] = {}  # site → why it takes no part (until it rejoins)
        self._joins: dict[str, int] = {}  # site → how often it joined: its connection's number
        self.finished: str | None = None
        self.bytes_received = 0
        self._closing = False

    # ----- membership -----------------------------------------------------------------------

    def join(self, site: str) -> None:
        with self._cond:
            rejoined = site in self._sites
            self._sites[site] = _SiteState(time.monotonic())
            self._joins[site] = self._joins.get(site, 0) + 1
            self._dismissed.pop(site, None)
            self._cond.notify_all()
        self._note("join", site, None, "rejoined" if rejoined else "")

    def leave(self, site: str, reason: str) -> None:
        self.expel(site)
        self._note("leave", site, None, reason[:200])

    def expel(self, site: str) -> None:
        """Mark ``site`` gone (left, or its certificate was revoked) until it joins again."""
        with self._cond:
            state = self._sites.get(site)
            if state is not None:
                state.left = True
            self._cond.notify_all()

    def dismiss(self, site: str, reason: str) -> None:
        """Stop listing ``site`` and end its run with ``reason`` at its next pull; a new join
        (e.g. after its operator fixed its configuration) lifts this."""
        with self._cond:
            self._dismissed[site] = reason
            self._cond.notify_all()

    def connection(self, site: str) -> int:
        """How often ``site`` has joined (0: never); a rejoin is a new connection."""
        with self._cond:
            return self._joins.get(site, 0)

    def touch(self, site: str) -> bool:
        """Record a sign of life; False when the site has not joined (or has left)."""
        with self._cond:
            state = self._sites.get(site)
            if state is None or state.left:
                return False
            state.last_seen = time.monotonic()
            return True

    def available(self) -> tuple[str, ...]:
        with self._cond:
            return tuple(sorted(s for s in self._sites if self._alive(s)))

    def wait_for(self, count: int, timeout: float | None) -> tuple[str, ...]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                alive = tuple(sorted(s for s in self._sites if self._alive(s)))
                remaining = None if deadline is None else deadline - time.monotonic()
                if len(alive) >= count or (remaining is not None and remaining <= 0):
                    return alive
                self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))

    def _alive(self, site: str) -> bool:
        state = self._sites.get(site)
        return (
            state is not None
            and not state.left
            and site not in self._dismissed
            and time.monotonic() - state.last_seen <= self.settings.liveness_timeout
        )

    def finish(self, reason: str) -> None:
        with self._cond:
            self.finished = reason
            self._cond.notify_all()

    def close(self) -> None:
        """Release every waiting long-poll (the server is stopping)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def wait_until_all_left(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(self._alive(s) for s in self._sites):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(min(remaining, 0.5))

    # ----- tasks ------------------------------------------------------------------------------

    def next_task(self, site: str, wait: float) -> _Outstanding | str | None:
        """The site's unanswered task, the finish reason, or None after ``wait`` seconds."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                task = self._outstanding.get(site)
                if task is not None and not task.receiving:
                    return task
                if self.finished is not None:
                    return self.finished
                if site in self._dismissed:
                    return self._dismissed[site]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closing:
                    return None
                self._cond.wait(remaining)

    def claim(self, site: str, header: pb.PayloadHeader) -> _Outstanding:
        """Reserve the outstanding task a pushed result names; refuse anything else."""
        with self._cond:
            task = self._outstanding.get(site)
            if task is None or header.task_id != task.task_id:
                raise ResultRejected(
                    f"result for round {header.round} matches no outstanding task of site "
                    f"{site!r} (replayed, stale or unknown)"
                )
            if (header.run_id, header.round) != (task.run_id, task.round):
                raise ResultRejected(
                    f"result header names run {header.run_id!r} round {header.round}, the task "
                    f"was run {task.run_id!r} round {task.round} (stale or replayed)"
                )
            if task.receiving:
                raise ResultRejected(f"a result for this task of {site!r} is already arriving")
            task.receiving = True
            return task

    def release(self, site: str, task: _Outstanding) -> None:
        """The push of ``task`` broke off (peer vanished): let the site send it again."""
        with self._cond:
            if self._outstanding.get(site) is task:
                task.receiving = False
            self._cond.notify_all()

    def resolve(
        self, site: str, task: _Outstanding, answer: Reply | Failure, received_bytes: int = 0
    ) -> None:
        with self._cond:
            self.bytes_received += received_bytes
            if self._outstanding.get(site) is task:
                del self._outstanding[site]
                self._answers[site] = answer
            self._cond.notify_all()

    def run_exchange(
        self, payloads: Mapping[str, tuple[Task, OutgoingPayload]], timeout: float | None
    ) -> dict[str, Reply | Failure]:
        """Queue one task per site, wait for the answers, and fail whoever did not answer."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._answers = {}
            for site, (task, payload) in payloads.items():
                task_id = secrets.token_hex(16)
                header = payload_header(
                    payload, run_id=task.run_id, round=task.round, task_id=task_id, site=site
                )
                self._outstanding[site] = _Outstanding(
                    task_id, task.run_id, task.round, payload, header
                )
            self._cond.notify_all()
            while self._outstanding:
                for site in [s for s in self._outstanding if not self._alive(s)]:
                    why = "site left" if self._sites[site].left else "site went silent"
                    self._drop(site, f"{why} before answering")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    for site in list(self._outstanding):
                        self._drop(site, f"no answer within the {timeout:g} s deadline")
                    break
                if self._outstanding:
                    self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))
            answers, self._answers = self._answers, {}
        return answers

    def _drop(self, site: str, reason: str) -> None:
        task = self._outstanding.pop(site)
        self._answers[site] = Failure(site, reason)
        self._note("result_missing", site, task.round, reason)


class GrpcChannel:
    """The :class:`~fedpharma.protocol.Channel` over the sites connected to the server."""

    def __init__(self, registry: _SiteRegistry) -> None:
        self._registry = registry
        self._exchange_lock = threading.Lock()
        self.bytes_sent = 0

    @property
    def bytes_received(self) -> int:
        """Payload bytes of every accepted result so far."""
        return self._registry.bytes_received

    def available_sites(self) -> tuple[str, ...]:
        """Sites that joined and gave a sign of life within the liveness timeout."""
        return self._registry.available()

    def wait_for_sites(self, count: int, timeout: float | None = None) -> tuple[str, ...]:
        """Block until ``count`` sites are available or ``timeout`` passes; return them."""
        return self._registry.wait_for(count, timeout)

    def dismiss(self, site: str, reason: str) -> None:
        """Stop listing ``site``; its next pull ends its run with ``reason`` (e.g. refused at
        join), so the site's operator learns why. A new join of the site lifts this."""
        self._registry.dismiss(site, reason)

    def connection(self, site: str) -> int:
        """The number of ``site``'s current connection: it grows with every join, so a site
        that left and rejoined between two looks is told apart (and checked again at join)."""
        return self._registry.connection(site)

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        limit = self._registry.settings.limits.max_payload_bytes
        replies: dict[str, Reply | Failure] = {}
        queued: dict[str, tuple[Task, OutgoingPayload]] = {}
        # Sites are usually sent the same model under the same header: digest it once. A key
        # names the header bytes and the array views (cached on the Parameters, so one object
        # per model); every task, and so every view, stays alive while the key is in use.
        encoded: dict[tuple[bytes | int, ...], OutgoingPayload] = {}
        available = set(self.available_sites())
        for site, task in tasks.items():
            if site not in available:
                replies[site] = Failure(site, "site is not connected")
                continue
            try:
                parts = encode_message_parts(task)
                key = tuple(part if isinstance(part, bytes) else id(part) for part in parts)
                payload = encoded.get(key) or encoded.setdefault(key, OutgoingPayload.of(parts))
            except FedPharmaError as exc:
                replies[site] = Failure(site, f"{type(exc).__name__}: {exc}")
                continue
            if payload.size > limit:
                replies[site] = Failure(
                    site, f"task of {payload.size} bytes exceeds the {limit}-byte payload limit"
                )
                continue
            queued[site] = (task, payload)
            self.bytes_sent += payload.size
        with self._exchange_lock:
            replies |= self._registry.run_exchange(queued, timeout)
        return {site: replies[site] for site in tasks}


class _CoordinatorService:
    """The RPC handlers. Each one first establishes who is calling, then does its job."""

    def __init__(
        self,
        registry: _SiteRegistry,
        revocations: RevocationList,
        *,
        insecure: bool,
        note: Callable[..., None],
    ) -> None:
        self._registry = registry
        self._revocations = revocations
        self._certificates = PeerCertificates()
        self._insecure = insecure
        self._note = note
        self._settings = registry.settings

    # ----- identity ---------------------------------------------------------------------------

    def _identify(self, context: Any, claimed: str) -> str:
        """The caller's site name, from its certificate; abort on revoked or impersonation."""
        if self._insecure:
            if not NAME_PATTERN.match(claimed):
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "invalid site name")
            return claimed
        try:
            info = self._certificates.of(context)
        except FedPharmaError as exc:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
        if info is None:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
        site = info.common_name
        if self._revocations.is_revoked(info.serial):
            reason = f"certificate of site {site!r} (serial {info.serial:x}) is revoked"
            self._registry.expel(site)
            self._note("denied", site, None, reason)
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, reason)
        if claimed != site:
            reason = (
                f"the certificate belongs to site {site!r}; a message in the name of "
                f"{claimed!r} is refused"
            )
            self._note("denied", site, None, reason)
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, reason)
        return site

    def _require_joined(self, site: str, context: Any) -> None:
        if not self._registry.touch(site):
            _abort(context, grpc.StatusCode.NOT_FOUND, f"site {site!r} has not joined; join first")

    # ----- RPCs -------------------------------------------------------------------------------

    def Join(self, request: Any, context: Any) -> Any:  # gRPC method names are CamelCase
        site = self._identify(context, request.site)
        try:
            check_version(request.protocol_version, f"site {site!r}")
        except VersionMismatch as exc:
            self._note("denied", site, None, str(exc))
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        self._registry.join(site)
        limits = self._settings.limits
        return pb.JoinReply(
            protocol_version=PROTOCOL_VERSION,
            run_id=self._settings.run_id,
            heartbeat_seconds=self._settings.heartbeat_seconds,
            max_payload_bytes=limits.max_payload_bytes,
            chunk_bytes=limits.chunk_bytes,
        )

    def PullTask(self, request: Any, context: Any) -> Iterator[Any]:
        site = self._identify(context, request.site)
        self._require_joined(site, context)
        wait = min(max(request.wait_seconds, 0.0), self._settings.max_pull_wait)
        task = self._registry.next_task(site, wait)
        if task is None:
            yield pb.TaskChunk(no_task=pb.NoTask())
            return
        if isinstance(task, str):
            yield pb.TaskChunk(finished=pb.Finished(reason=task))
            return
        yield pb.TaskChunk(header=task.header)
        for pieces in task.payload.chunks(self._settings.limits.chunk_bytes):
            yield data_frame(pb.TaskChunk, pieces)
        self._note("task_sent", site, task.round, "")

    def PushResult(self, request_iterator: Iterator[Any], context: Any) -> Any:
        first = next(request_iterator, None)
        if first is None or isinstance(first, memoryview) or chunk_kind(first) != "header":
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "a result must start with a header")
        header = first.header
        site = self._identify(context, header.site)
        self._require_joined(site, context)
        try:
            task = self._registry.claim(site, header)
        except ResultRejected as exc:
            self._note("result_rejected", site, header.round, str(exc))
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        try:
            assembler = PayloadAssembler(header, self._settings.limits, f"result from {site!r}")
            for message in request_iterator:
                if chunk_kind(message) != "data":
                    raise PayloadRejected(f"result from {site!r} carries a second header")
                assembler.add(chunk_data(message))
            payload = assembler.finish()
            reply = _decode_reply(payload, site, task)
        except grpc.RpcError:  # the site went away mid-stream: it may push the result again
            self._registry.release(site, task)
            return pb.PushReply(accepted=False)
        except PayloadTruncated as exc:
            # A cut connection and a message gRPC dropped for its size look alike here; the task
            # stays open so the site may send its result again before the deadline.
            self._registry.release(site, task)
            self._note("result_rejected", site, task.round, str(exc))
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ProtocolError as exc:
            if not context.is_active():
                self._registry.release(site, task)
                return pb.PushReply(accepted=False)
            self._registry.resolve(site, task, Failure(site, f"rejected: {exc}"))
            self._note("result_rejected", site, task.round, str(exc))
            code = grpc.StatusCode.INVALID_ARGUMENT
            if isinstance(exc, PayloadTooLarge):
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
            _abort(context, code, str(exc))
        self._registry.resolve(site, task, reply, received_bytes=len(payload))
        if isinstance(reply, Refusal):
            self._note("refusal", site, task.round, f"{reply.kind}: {reply.reason}"[:500])
        else:
            self._note("result_accepted", site, task.round, "")
        return pb.PushReply(accepted=True)

    def Heartbeat(self, request: Any, context: Any) -> Any:
        site = self._identify(context, request.site)
        self._require_joined(site, context)
        return pb.HeartbeatReply(finished=self._registry.finished is not None)

    def Leave(self, request: Any, context: Any) -> Any:
        site = self._identify(context, request.site)
        self._registry.leave(site, request.reason)
        return pb.LeaveReply()


def _decode_reply(payload: memoryview, site: str, task: _Outstanding) -> Reply:
    """Decode a pushed result and check it answers ``task`` in the caller's own name."""
    reply = decode_message(payload)
    if isinstance(reply, Task):
        raise ProtocolError(f"site {site!r} answered with a {type(reply).__name__}")
    if reply.site != site:
        raise ProtocolError(
            f"result is written in the name of {reply.site!r} but the certificate is {site!r}"
        )
    if not isinstance(reply, Refusal) and (reply.run_id, reply.round) != (task.run_id, task.round):
        raise ProtocolError(
            f"result payload is for run {reply.run_id!r} round {reply.round}, "
            f"the task was run {task.run_id!r} round {task.round}"
        )
    return reply


def _abort(context: Any, code: Any, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("grpc context.abort returned")  # abort always raises


class GrpcCoordinatorServer:
    """Runs the coordinator service; use as a context manager or call ``start`` / ``stop``.

    With ``tls`` the server requires a client certificate from the consortium's CA; without it,
    ``insecure=True`` must be passed explicitly and a loud warning is logged.
    """

    def __init__(
        self,
        settings: CoordinatorSettings,
        tls: ServerTls | None,
        *,
        insecure: bool = False,
        audit: AuditRecorder | None = None,
        on_status: StatusCallback = _ignore,
    ) -> None:
        if tls is None and not insecure:
            raise ConfigError(["give TLS files, or pass insecure=True for a local test"], "server")
        if tls is not None and insecure:
            raise ConfigError(["insecure=True contradicts the TLS files given"], "server")
        self.settings = settings
        self._tls = tls
        self._audit = audit
        self._on_status = on_status
        self._lock = threading.Lock()
        self._registry = _SiteRegistry(settings, self._record)
        self.channel = GrpcChannel(self._registry)
        self._service = _CoordinatorService(
            self._registry,
            RevocationList(tls.revoked if tls else None),
            insecure=insecure,
            note=self._record,
        )
        self._server: Any = None
        self.port: int | None = None

    def _record(self, kind: str, site: str, round: int | None, reason: str) -> None:
        with self._lock:
            if self._audit is not None:
                self._audit.record(kind, site=site, round=round, reason=reason)
        where = f" round {round}" if round is not None else ""
        self._on_status(f"{kind}: {site or '-'}{where}{' — ' + reason if reason else ''}")

    @property
    def address(self) -> str:
        """``host:port`` the server listens on (after ``start``)."""
        if self.port is None:
            raise TransportError("the coordinator server is not started")
        host = self.settings.address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def start(self) -> int:
        """Bind and serve; return the bound port (the chosen one when the address says 0)."""
        options = self.settings.limits.grpc_options()
        server = grpc.server(
            futures.ThreadPoolExecutor(self.settings.max_workers, "fedpharma-rpc"),
            options=options,
            maximum_concurrent_rpcs=self.settings.max_workers,
        )
        add_to_server(self._service, server)
        try:
            if self._tls is None:
                log.warning(INSECURE_WARNING)
                self._on_status(INSECURE_WARNING)
                port = server.add_insecure_port(self.settings.address)
            else:
                port = server.add_secure_port(self.settings.address, self._tls.credentials())
        except RuntimeError as exc:
            raise TransportError(f"cannot listen on {self.settings.address}: {exc}") from exc
        server.start()
        self._server, self.port = server, int(port)
        self._on_status(f"coordinator listening on {self.address} (run {self.settings.run_id})")
        return self.port

    def finish(self, reason: str = "run finished", wait: float = 0.0) -> None:
        """Tell every site the run is over; wait up to ``wait`` s for them to leave."""
        self._registry.finish(reason)
        if wait > 0:
            self._registry.wait_until_all_left(wait)

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving; in-flight calls get ``grace`` seconds.

        Sites are *not* told the run is over (call :meth:`finish` first for that): they keep
        retrying with backoff, so a coordinator restarted with ``--resume`` finds them again.
        """
        if self._server is None:
            return
        self._registry.close()
        self._server.stop(grace).wait()
        self._server = None

    def __enter__(self) -> GrpcCoordinatorServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
