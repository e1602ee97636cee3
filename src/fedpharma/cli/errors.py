"""How every command reports a failure: one clear message and the error's exit code.

Errors from the package arrive as :class:`~fedpharma.core.errors.FedPharmaError`; they are printed
as
one line on stderr (no traceback) and mapped to the error's exit code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from fedpharma.core.errors import FedPharmaError


def friendly_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Print a FedPharmaError as one clear message and exit with its code (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except FedPharmaError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from exc

    return wrapper
