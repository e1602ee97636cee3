"""The coordinator's gRPC server: runs the ``fedpharma.v1.Coordinator`` service on a thread pool.

:class:`GrpcCoordinatorServer` binds (mutual TLS, or an explicit and loudly logged insecure
mode), serves the RPC handlers of :mod:`~fedpharma.transport.grpc.servicer`, and hands the round
loop its :class:`~fedpharma.transport.grpc.channel.GrpcChannel` (``server.channel``). What
happens is recorded in the audit log and reported as status lines; every task carries the audit
log's head to its site (``docs/hostile-sites.md``, "An audit log the sites witness").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any, Protocol

import grpc

from fedpharma.core.errors import ConfigError, TransportError
from fedpharma.transport.grpc.admission import Admission
from fedpharma.transport.grpc.channel import GrpcChannel
from fedpharma.transport.grpc.methods import add_to_server
from fedpharma.transport.grpc.registry import HeadsSent, SiteRegistry
from fedpharma.transport.grpc.servicer import CoordinatorServicer
from fedpharma.transport.grpc.settings import CoordinatorSettings
from fedpharma.transport.grpc.tls import INSECURE_WARNING, RevocationList, ServerTls

log = logging.getLogger(__name__)


class AuditRecorder(Protocol):
    """Where the channel records what happened (``fedpharma.server.audit.AuditLog`` fits)."""

    def record(
        self, kind: str, *, site: str = "", round: int | None = None, reason: str = ""
    ) -> object: ...


StatusCallback = Callable[[str], None]


def _ignore(_: str) -> None:
    return None


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
        heads_sent: HeadsSent | None = None,
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
        self._registry = SiteRegistry(
            settings, self._record, audit_head=self._audit_head, heads_sent=heads_sent
        )
        self.channel = GrpcChannel(self._registry)
        self.admission = Admission(settings.admission, self._record, self._registry.quarantine)
        self._service = CoordinatorServicer(
            self._registry,
            RevocationList(tls.revoked if tls else None),
            insecure=insecure,
            note=self._record,
            admission=self.admission,
        )
        self._server: Any = None
        self.port: int | None = None

    def _record(self, kind: str, site: str, round: int | None, reason: str) -> None:
        with self._lock:
            if self._audit is not None:
                self._audit.record(kind, site=site, round=round, reason=reason)
        where = f" round {round}" if round is not None else ""
        self._on_status(f"{kind}: {site or '-'}{where}{' — ' + reason if reason else ''}")

    def _audit_head(self) -> tuple[int, str] | None:
        """The audit chain head each task carries to its site (``AuditLog.head``), if any."""
        head = getattr(self._audit, "head", None)
        return None if head is None else (int(head.seq), str(head.hash))

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
        self.admission.flush()

    def __enter__(self) -> GrpcCoordinatorServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
