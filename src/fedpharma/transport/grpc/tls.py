"""Mutual-TLS credentials from provisioned PEM folders, and who a peer is.

The coordinator learns a site's name from the certificate the site presented in the handshake
(``x509_pem_cert`` in gRPC's auth context), never from what the site writes in a message. The
revocation list is re-read whenever its file changes, so revoking a certificate takes effect on
the very next call without restarting the coordinator.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from fedpharma.transport.pki import (
    CertificateInfo,
    PartyFiles,
    certificate_info,
    check_party_files,
    read_revoked,
)

INSECURE_WARNING = (
    "!!! INSECURE: the fedpharma transport runs WITHOUT TLS. Anyone on the network can read "
    "every model update and impersonate any site. Use this only for local tests. !!!"
)


@dataclass(frozen=True)
class ServerTls:
    """The coordinator's PEM folder (``ca.pem``, ``cert.pem``, ``key.pem``) and revocation list."""

    files: PartyFiles
    revoked: Path | None = None

    @classmethod
    def from_folder(cls, folder: Path) -> ServerTls:
        files = PartyFiles.in_folder(folder)
        revoked = files.folder / "revoked.txt"
        return cls(files, revoked if revoked.exists() else None)

    def credentials(self) -> Any:
        """gRPC server credentials that *require* a client certificate from the same CA."""
        check_party_files(self.files, expect_client=False)
        return grpc.ssl_server_credentials(
            [(self.files.key.read_bytes(), self.files.cert.read_bytes())],
            root_certificates=self.files.ca.read_bytes(),
            require_client_auth=True,
        )


@dataclass(frozen=True)
class SiteTls:
    """A site's PEM folder; the certificate's common name is the site's name."""

    files: PartyFiles

    @classmethod
    def from_folder(cls, folder: Path) -> SiteTls:
        return cls(PartyFiles.in_folder(folder))

    def check(self) -> CertificateInfo:
        """Check the files locally (expiry, CA, key); raises CryptoError naming the problem."""
        return check_party_files(self.files, expect_client=True)

    def credentials(self) -> Any:
        return grpc.ssl_channel_credentials(
            root_certificates=self.files.ca.read_bytes(),
            private_key=self.files.key.read_bytes(),
            certificate_chain=self.files.cert.read_bytes(),
        )


class RevocationList:
    """Revoked serials from a file, reloaded when the file's modification time changes."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._serials: frozenset[int] = frozenset()

    def is_revoked(self, serial: int) -> bool:
        if self._path is None:
            return False
        stat = os.stat(self._path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._serials = read_revoked(self._path)
                self._stamp = stamp
            return serial in self._serials


class PeerCertificates:
    """Parses (and caches) the certificates peers present; small, bounded cache by PEM."""

    def __init__(self, capacity: int = 1024) -> None:
        self._cache: dict[bytes, CertificateInfo] = {}
        self._capacity = capacity
        self._lock = threading.Lock()

    def of(self, context: Any) -> CertificateInfo | None:
        """The certificate of the peer of ``context``, or None when it presented none."""
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            return None
        pem = pems[0]
        with self._lock:
            info = self._cache.get(pem)
        if info is None:
            info = certificate_info(pem)
            with self._lock:
                if len(self._cache) >= self._capacity:
                    self._cache.clear()
                self._cache[pem] = info
        return info
