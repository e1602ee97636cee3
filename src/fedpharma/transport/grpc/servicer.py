"""The RPC handlers of ``fedpharma.v1.Coordinator``: identify the caller, then do the call's job.

Every call is attributed to the site named in the caller's TLS client certificate; a message in
another site's name, a revoked certificate, a result for no outstanding task (replayed, stale,
unknown), and a malformed, truncated or oversized payload are refused with a typed error, written
to the audit log, and never stop the coordinator serving the other sites. A dismissed site's
next pull ends its run with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc

from fedpharma.errors import FedPharmaError, ProtocolError
from fedpharma.protocol import PROTOCOL_VERSION, Failure, Refusal, Reply, Task
from fedpharma.protocol.codec import decode_message
from fedpharma.transport.grpc import fedpharma_v1_pb2 as pb
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


class CoordinatorServicer:
    """The RPC handlers. Each one first establishes who is calling, then does its job."""

    def __init__(
        self,
        registry: SiteRegistry,
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
    return reply


def _abort(context: Any, code: Any, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("grpc context.abort returned")  # abort always raises
