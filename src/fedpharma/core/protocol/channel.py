"""The one interface through which a coordinator reaches its sites (in-process or gRPC).

Like httpx's transports: the coordinator is written once against :class:`Channel`; each transport
maps its own failures to :class:`~fedpharma.core.protocol.messages.Failure` replies or
:class:`~fedpharma.core.errors.TransportError`, never to foreign exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from fedpharma.core.protocol.messages import Failure, Reply, Task


class Channel(Protocol):
    def available_sites(self) -> tuple[str, ...]:
        """Sites currently connected and able to take tasks, sorted by name."""
        ...

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        """Deliver each site its task and return every site's reply (or a Failure) by site.

        Returns once every addressed site has answered or ``timeout`` seconds have passed; a site
        that has not answered by then gets a :class:`Failure`.
        """
        ...
