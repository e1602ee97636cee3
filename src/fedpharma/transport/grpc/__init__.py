"""The deployment transport: coordinator and sites as separate processes over gRPC + mutual TLS.

Service ``fedpharma.v1.Coordinator`` (see ``fedpharma_v1.proto``): sites dial out, ``Join``,
long-poll ``PullTask``, answer with ``PushResult``, send ``Heartbeat`` and ``Leave``. Payloads are
:mod:`fedpharma.core.protocol.codec` bytes streamed in ~1 MiB chunks behind a header carrying the
protocol version, run, round, task id, size and sha256.

- coordinator: :class:`GrpcCoordinatorServer` (``server``: binds and serves the RPC handlers of
  ``servicer``) and its :class:`GrpcChannel` (``channel``: the
  :class:`~fedpharma.core.protocol.Channel`
  the round loop uses), meeting in the ``registry`` of connected sites and outstanding tasks;
  ``methods`` is the service's method table for both ends;
- site: :func:`run_site` (the dial-out loop around a site runtime) and :class:`SiteConnection`;
- identity: :class:`ServerTls` / :class:`SiteTls` load PEM folders made by
  :func:`fedpharma.transport.pki.provision`.

Importing this package imports grpc; ``fedpharma`` and ``fedpharma.transport`` never do.
"""

from fedpharma.transport.grpc.channel import GrpcChannel
from fedpharma.transport.grpc.client import (
    JoinInfo,
    PulledTask,
    RunFinished,
    SiteConnection,
    SiteSettings,
    SiteSummary,
    map_rpc_error,
    run_site,
)
from fedpharma.transport.grpc.server import AuditRecorder, GrpcCoordinatorServer
from fedpharma.transport.grpc.settings import CoordinatorSettings
from fedpharma.transport.grpc.tls import INSECURE_WARNING, ServerTls, SiteTls
from fedpharma.transport.grpc.wire import (
    CertificateRefused,
    PayloadRejected,
    PayloadTooLarge,
    PayloadTruncated,
    ResultRejected,
    VersionMismatch,
    WireLimits,
)

__all__ = [
    "INSECURE_WARNING",
    "AuditRecorder",
    "CertificateRefused",
    "CoordinatorSettings",
    "GrpcChannel",
    "GrpcCoordinatorServer",
    "JoinInfo",
    "PayloadRejected",
    "PayloadTooLarge",
    "PayloadTruncated",
    "PulledTask",
    "ResultRejected",
    "RunFinished",
    "ServerTls",
    "SiteConnection",
    "SiteSettings",
    "SiteSummary",
    "SiteTls",
    "VersionMismatch",
    "WireLimits",
    "map_rpc_error",
    "run_site",
]
