"""One exception tree for the whole package, and the CLI exit code of each branch.

Foreign exceptions are mapped to these at the boundary (``raise ... from exc``), so a caller only
ever needs to catch :class:`FedPharmaError`.
"""

from __future__ import annotations

from collections.abc import Sequence


class FedPharmaError(Exception):
    """Base of every error fedpharma raises on purpose."""

    exit_code = 1


class ConfigError(FedPharmaError):
    """A configuration is invalid. Carries *every* problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: Sequence[str], source: str = "config") -> None:
        self.problems = tuple(problems)
        self.source = source
        if len(self.problems) == 1:  # one problem, one line
            super().__init__(f"{source}: {self.problems[0]}")
            return
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source} has {len(self.problems)} problem(s):\n{lines}")


class ProtocolError(FedPharmaError):
    """A message is malformed, of the wrong version, or not what the protocol expects."""

    exit_code = 3


class DataError(FedPharmaError):
    """Input data cannot be used as it is (bad file, schema mismatch, invalid molecules...)."""

    exit_code = 4


class PolicyRefused(FedPharmaError):
    """A site refused a task because its policy does not allow it."""

    exit_code = 5


class PrivacyBudgetExceeded(PolicyRefused):
    """A site refused a task whose privacy cost would exceed the site's budget."""


class CryptoError(FedPharmaError):
    """Encryption, masking or key material failed verification."""

    exit_code = 6


class TransportError(FedPharmaError):
    """A channel could not deliver a message."""

    exit_code = 7


class RoundFailed(FedPharmaError):
    """A round could not complete (e.g. too few sites answered)."""

    exit_code = 8
