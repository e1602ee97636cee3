"""Writing key material to a new file: created with its mode, never over an existing key."""

from __future__ import annotations

import os

from fedpharma.core.errors import CryptoError


def write_new_key_file(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to a new file created with ``mode``; refuse to overwrite an existing file.

    Re-keying silently would lock a site out, so an existing file is a
    :class:`~fedpharma.core.errors.CryptoError` that says how to re-key.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise CryptoError(f"refusing to overwrite key file {path}; remove it to re-key") from exc
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
