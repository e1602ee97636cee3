"""The method table of ``fedpharma.v1.Coordinator`` for both ends: the site's stub and the
server's handler registration, with how each message is serialized.

protoc's generated stub and servicer would pass every ~1 MiB data chunk through protobuf message
objects, which copy it four times on the way out and twice on the way in. The two streaming
methods therefore frame their data chunks directly in protobuf's wire format (``data_frame`` and
``parse_chunk`` in :mod:`~fedpharma.transport.grpc.wire`); every other message goes through the
generated classes. On the wire this is exactly the service in ``fedpharma_v1.proto``, so a
client generated from the proto works with this server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import grpc

from fedpharma.transport.grpc import fedpharma_v1_pb2 as pb
from fedpharma.transport.grpc.wire import parse_chunk

SERVICE = "fedpharma.v1.Coordinator"


def serialize(message: Any) -> bytes:
    """A generated message's encoding; a data frame is already encoded."""
    return message if isinstance(message, bytes) else bytes(message.SerializeToString())


def _parse_task_chunk(raw: bytes) -> pb.TaskChunk | memoryview:
    return parse_chunk(raw, pb.TaskChunk)


def _parse_result_chunk(raw: bytes) -> pb.ResultChunk | memoryview:
    return parse_chunk(raw, pb.ResultChunk)


def _path(method: str) -> str:
    return f"/{SERVICE}/{method}"


class CoordinatorStub:
    """The site's callables, one per method."""

    def __init__(self, channel: grpc.Channel) -> None:
        def call(kind: str, method: str, parse: Callable[[bytes], Any]) -> Any:
            return getattr(channel, kind)(
                _path(method),
                request_serializer=serialize,
                response_deserializer=parse,
                _registered_method=True,
            )

        self.Join = call("unary_unary", "Join", pb.JoinReply.FromString)
        self.PullTask = call("unary_stream", "PullTask", _parse_task_chunk)
        self.PushResult = call("stream_unary", "PushResult", pb.PushReply.FromString)
        self.Heartbeat = call("unary_unary", "Heartbeat", pb.HeartbeatReply.FromString)
        self.Leave = call("unary_unary", "Leave", pb.LeaveReply.FromString)


class CoordinatorService(Protocol):
    """What the server implements: one handler per method (gRPC names them in CamelCase)."""

    def Join(self, request: Any, context: Any) -> Any: ...
    def PullTask(self, request: Any, context: Any) -> Any: ...
    def PushResult(self, request_iterator: Any, context: Any) -> Any: ...
    def Heartbeat(self, request: Any, context: Any) -> Any: ...
    def Leave(self, request: Any, context: Any) -> Any: ...


def add_to_server(service: CoordinatorService, server: grpc.Server) -> None:
    """Register ``service``'s handlers on ``server``."""
    unary, pull, push = (
        grpc.unary_unary_rpc_method_handler,
        grpc.unary_stream_rpc_method_handler,
        grpc.stream_unary_rpc_method_handler,
    )
    handlers = {
        "Join": unary(service.Join, pb.JoinRequest.FromString, serialize),
        "PullTask": pull(service.PullTask, pb.PullRequest.FromString, serialize),
        "PushResult": push(service.PushResult, _parse_result_chunk, serialize),
        "Heartbeat": unary(service.Heartbeat, pb.HeartbeatRequest.FromString, serialize),
        "Leave": unary(service.Leave, pb.LeaveRequest.FromString, serialize),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
