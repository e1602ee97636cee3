"""The coordinator's :class:`~fedpharma.core.protocol.Channel` over the sites connected by gRPC.

``exchange`` queues each addressed site's task in the :class:`SiteRegistry`, sites fetch it with
a long-polling ``PullTask`` and answer with ``PushResult``; ``exchange`` returns once every site
answered, went silent, or the deadline passed, with the same ``{site: Reply | Failure}`` shape
as the in-process channel.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from fedpharma.core.errors import FedPharmaError
from fedpharma.core.protocol import Failure, Reply, Task
from fedpharma.core.protocol.codec import encode_message_parts
from fedpharma.transport.grpc.registry import SiteRegistry
from fedpharma.transport.grpc.wire import OutgoingPayload


class GrpcChannel:
    """The :class:`~fedpharma.core.protocol.Channel` over the sites connected to the server."""

    def __init__(self, registry: SiteRegistry) -> None:
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
