"""The in-process channel: sites live in this process, messages still cross the wire codec.

Every task and reply is encoded to bytes and decoded again, exactly as over gRPC, so a simulation
exercises the same validation as a deployment and no object is shared between coordinator and
site by reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from fedpharma.core.errors import FedPharmaError
from fedpharma.core.protocol.codec import EncodedMessage, decode_message, encode_message
from fedpharma.core.protocol.messages import Failure, Reply, Task


class MessageHandler(Protocol):
    """Anything that answers an encoded task with an encoded reply (a site runtime). The reply
    comes in pieces, so a transport can stream a model without copying it into one buffer."""

    def handle_encoded(self, data: bytes | memoryview) -> EncodedMessage: ...


class InProcessChannel:
    def __init__(self, sites: Mapping[str, MessageHandler]) -> None:
        self._sites = dict(sites)
        self.bytes_sent = 0
        self.bytes_received = 0

    def available_sites(self) -> tuple[str, ...]:
        return tuple(sorted(self._sites))

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        replies: dict[str, Reply | Failure] = {}
        for site, task in tasks.items():
            handler = self._sites.get(site)
            if handler is None:
                replies[site] = Failure(site, "site is not connected")
                continue
            request = encode_message(task)
            self.bytes_sent += len(request)
            try:
                answer = b"".join(handler.handle_encoded(request))
                self.bytes_received += len(answer)
                reply = decode_message(answer)
            except FedPharmaError as exc:
                replies[site] = Failure(site, f"{type(exc).__name__}: {exc}")
                continue
            if isinstance(reply, Task):
                replies[site] = Failure(site, f"site answered with a {type(reply).__name__}")
            else:
                replies[site] = reply
        return replies
