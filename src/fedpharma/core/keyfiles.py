"""Key files: written new with their mode (never over an existing key), read back as hex text."""

from __future__ import annotations

import os
from pathlib import Path

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


def read_hex_key(path: str | os.PathLike[str], what: str, min_bytes: int) -> bytes:
    """The key in a file of hexadecimal text (whitespace ignored), at least ``min_bytes`` long;
    ``what`` names the key in the :class:`~fedpharma.core.errors.CryptoError` a missing,
    unreadable, malformed or short file raises. Make one with ``openssl rand -hex 32``."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise CryptoError(f"{what} file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CryptoError(
            f"cannot read {what} file {path}: it must hold the key as hexadecimal text (e.g. "
            "made by `openssl rand -hex 32`)"
        ) from exc
    try:
        key = bytes.fromhex("".join(text.split()))
    except ValueError as exc:
        raise CryptoError(
            f"{what} file {path} is not hexadecimal text; make one with `openssl rand -hex 32`"
        ) from exc
    if len(key) < min_bytes:
        raise CryptoError(
            f"{what} in {path} has {len(key)} bytes; at least {min_bytes} ({2 * min_bytes} hex "
            "digits) are required, e.g. `openssl rand -hex 32`"
        )
    return key
