"""The RPC handlers of ``fedpharma.v1.Coordinator``: identify the caller, then do the call's job.

Every call is attributed to the site named in the caller's TLS client certificate, then admitted
by :mod:`~fedpharma.transport.grpc.admission` (calls in flight, one waiting pull, request rate,
quarantine). A message in another site's name, a revoked certificate, a result for no
outstanding task (replayed, stale, unknown), and a malformed, truncated or oversized payload
(beyond what the task can legitimately return, see :mod:`~fedpharma.transport.grpc.bounds`)
are refused with a typed error, counted as the site's offence and audited, and never stop the
coordinator serving the other sites; a push that fails for any reason leaves its task either
answered (with the failure) or open again. A dismissed site's next pull ends its run with the
reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import grpc

from fedpharma.core.errors import FedPharmaError, ProtocolError
from fedpharma.core.protocol import PROTOCOL_VERSION, Failure, Refusal, Reply, Task
from fedpharma.core.protocol.codec import decode_message
from fedpharma.transport.grpc import fedpharma_v1_pb2 as pb
from fedpharma.transport.grpc.admission import THROTTLED, Admission, Refused, Ticket
from fedpharma.transport.grpc.bounds import check_update
from fedpharma.transport.grpc.registry import Outstanding, SiteRegistry
from fedpharma.transport.grpc.tls import PeerCertificates, RevocationList
from fedpharma.transport.grpc.wire import (
    PayloadAssembler,
    PayloadRejected,
    PayloadTooLarge,
    PayloadTruncated,
    ResultRejected,
    VersionMismatch,
    check_version,
    chunk_data,
    chunk_kind,
    data_frame,
)
from fedpharma.transport.pki import NAME_PATTERN

log = logging.getLogger(__name__)


class CoordinatorServicer:
    """The RPC handlers. Each one first establishes who is calling, then does its job."""

    def __init__(
        self,
        registry: SiteRegistry,
        revocations: RevocationList,
        *,
        insecure: bool,
        note: Callable[..., None],
        admission: Admission,
    ) -> None:
        self._registry = registry
        self._admission = admission
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
            self._admission.offence(site, "denied", reason)
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, reason)
        if claimed != site:
            reason = (
                f"the certificate belongs to site {site!r}; a message in the name of "
                f"{claimed!r} is refused"
            )
            self._admission.offence(site, "denied", reason)
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, reason)
        return site

    @contextmanager
    def _admitted(self, context: Any, site: str, *, pull: bool = False) -> Iterator[Ticket]:
        """Run the ``with`` block as an admitted call of ``site``, or abort the call."""
        try:
            with self._admission.call(site, pull=pull) as ticket:
                yield ticket
        except Refused as exc:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            if exc.quarantined:
                code = grpc.StatusCode.PERMISSION_DENIED
            _abort(context, code, str(exc))

    def _require_joined(self, site: str, context: Any) -> None:
        if not self._registry.touch(site):
            _abort(context, grpc.StatusCode.NOT_FOUND, f"site {site!r} has not joined; join first")

    # ----- RPCs -------------------------------------------------------------------------------

    def Join(self, request: Any, context: Any) -> Any:  # gRPC method names are CamelCase
        site = self._identify(context, request.site)
        with self._admitted(context, site):
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
        with self._admitted(context, site, pull=True) as ticket:
            self._require_joined(site, context)
            wait = min(max(request.wait_seconds, 0.0), self._settings.max_pull_wait)
            context.add_callback(self._registry.wake)  # a hung-up pull stops waiting at once
            task = self._registry.next_task(site, wait, context.is_active)
            ticket.end_pull()
            if task is None:
                yield pb.TaskChunk(no_task=pb.NoTask())
                return
            if isinstance(task, str):
                yield pb.TaskChunk(finished=pb.Finished(reason=task))
                return
            most = self._settings.admission.max_task_sends
            if task.sends > most:
                reason = f"{THROTTLED}: round {task.round}'s task was already sent {most} times"
                self._admission.offence(site, "refused", reason, task.round)
                _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
            yield pb.TaskChunk(header=task.header)
            for pieces in task.payload.chunks(self._settings.limits.chunk_bytes):
                yield data_frame(pb.TaskChunk, pieces)
            if task.sends == 1:
                self._note("task_sent", site, task.round, "")

    def PushResult(self, request_iterator: Iterator[Any], context: Any) -> Any:
        first = next(request_iterator, None)
        if first is None or isinstance(first, memoryview) or chunk_kind(first) != "header":
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "a result must start with a header")
        header = first.header
        site = self._identify(context, header.site)
        with self._admitted(context, site):
            self._require_joined(site, context)
            return self._receive(site, header, request_iterator, context)

    def _receive(
        self, site: str, header: pb.PayloadHeader, messages: Iterator[Any], context: Any
    ) -> Any:
        try:
            task = self._registry.claim(site, header)
        except ResultRejected as exc:
            self._admission.offence(site, "result_rejected", str(exc), header.round)
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        code, error = grpc.StatusCode.INVALID_ARGUMENT, None
        try:
            payload = self._assemble(site, header, task, messages)
            reply = _decode_reply(payload, site, task)
        except grpc.RpcError:  # the site went away mid-stream: it may push the result again
            self._registry.release(site, task)
            return pb.PushReply(accepted=False)
        except PayloadTruncated as exc:
            # A cut connection and a message gRPC dropped for its size look alike here; the task
            # stays open so the site may send its result again before the deadline.
            self._registry.release(site, task)
            error = str(exc)
        except ProtocolError as exc:
            if not context.is_active():
                self._registry.release(site, task)
                return pb.PushReply(accepted=False)
            self._registry.resolve(site, task, Failure(site, f"rejected: {exc}"))
            error = str(exc)
            if isinstance(exc, PayloadTooLarge):
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
        except Exception as exc:  # a decoder bug must not lock the task or stop the server
            log.exception("reading a result of %s failed", site)
            self._registry.release(site, task)
            code = grpc.StatusCode.INTERNAL
            error = f"the coordinator could not read this result ({type(exc).__name__})"
        if error is not None:
            self._admission.offence(site, "result_rejected", error, task.round)
            _abort(context, code, error)
        self._registry.resolve(site, task, reply, received_bytes=len(payload))
        if isinstance(reply, Refusal):
            self._note("refusal", site, task.round, f"{reply.kind}: {reply.reason}"[:500])
        else:
            self._note("result_accepted", site, task.round, "")
        return pb.PushReply(accepted=True)

    def _assemble(
        self, site: str, header: pb.PayloadHeader, task: Outstanding, messages: Iterator[Any]
    ) -> memoryview:
        what = f"result from {site!r}"
        limits = self._settings.limits
        assembler = PayloadAssembler(header, limits, what, max_bytes=task.bound.max_bytes)
        for message in messages:
            if chunk_kind(message) != "data":
                raise PayloadRejected(f"{what} carries a second header")
            assembler.add(chunk_data(message))
        return assembler.finish()

    def Heartbeat(self, request: Any, context: Any) -> Any:
        site = self._identify(context, request.site)
        with self._admitted(context, site):
            self._require_joined(site, context)
        return pb.HeartbeatReply(finished=self._registry.finished is not None)

    def Leave(self, request: Any, context: Any) -> Any:
        site = self._identify(context, request.site)
        with self._admitted(context, site):
            self._registry.leave(site, request.reason)
        return pb.LeaveReply()


def _decode_reply(payload: memoryview, site: str, task: Outstanding) -> Reply:
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
    check_update(reply, task.bound, site)
    return reply


def _abort(context: Any, code: Any, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("grpc context.abort returned")  # abort always raises
