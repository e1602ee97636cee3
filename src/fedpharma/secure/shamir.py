"""Shamir t-out-of-n secret sharing of 32-byte secrets (Shamir 1979, "How to share a secret").

A secret s is the constant term of a random polynomial f of degree t − 1 over GF(p); participant
i (x = 1, 2, …) holds f(x). Any t shares determine f(0) = s by Lagrange interpolation; t − 1
shares reveal nothing about s (every secret is equally consistent with them).

The field is GF(p) with p = 2^256 + 297, the smallest prime above 2^256, so every 32-byte secret
(an X25519 private key, an AES-256 mask seed) is one field element. A share's value therefore
travels in 33 bytes. Coefficients come from the OS CSPRNG (:mod:`secrets`).

Reconstruction cannot tell a wrong share from a right one; callers verify the result against a
public commitment (secure aggregation checks a reconstructed X25519 key against the advertised
public key, and a mask seed against its SHA-256 commitment).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from fedpharma.core.errors import CryptoError

PRIME = 2**256 + 297
SECRET_BYTES = 32
SHARE_VALUE_BYTES = 33


@dataclass(frozen=True)
class Share:
    """The value f(x) of a sharing polynomial at the participant's point x ≥ 1."""

    x: int
    value: int

    def __post_init__(self) -> None:
        if not 1 <= self.x < PRIME or not 0 <= self.value < PRIME:
            raise CryptoError("a Shamir share lies outside the field; it was altered or corrupted")

    def value_bytes(self) -> bytes:
        return self.value.to_bytes(SHARE_VALUE_BYTES, "little")

    @classmethod
    def from_value_bytes(cls, x: int, raw: bytes) -> Share:
        if len(raw) != SHARE_VALUE_BYTES:
            raise CryptoError(f"a share value is {SHARE_VALUE_BYTES} bytes, got {len(raw)}")
        return cls(x, int.from_bytes(raw, "little"))


def split(secret: bytes, threshold: int, points: Sequence[int]) -> dict[int, Share]:
    """Shares of ``secret`` at each x in ``points``; any ``threshold`` of them recover it."""
    if len(secret) != SECRET_BYTES:
        raise CryptoError(f"Shamir secrets are {SECRET_BYTES} bytes, got {len(secret)}")
    if len(set(points)) != len(points) or not 1 <= threshold <= len(points):
        raise CryptoError(f"need distinct points and 1 ≤ threshold ≤ {len(points)}")
    coefficients = [int.from_bytes(secret, "little")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: Share(x, _evaluate(coefficients, x)) for x in points}


def lagrange_at_zero(points: Sequence[int]) -> list[int]:
    """Coefficients λ_i with f(0) = Σ λ_i f(x_i) for any f of degree < len(points).

    Computed once per set of responders and reused for every secret they reconstruct.
    """
    if len(set(points)) != len(points) or any(not 1 <= x < PRIME for x in points):
        raise CryptoError("Lagrange interpolation needs distinct points in [1, p)")
    coefficients = []
    for i, xi in enumerate(points):
        numerator, denominator = 1, 1
        for j, xj in enumerate(points):
            if i != j:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        coefficients.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return coefficients


def combine(shares: Sequence[Share], coefficients: Sequence[int]) -> bytes:
    """The secret from shares at the points ``coefficients`` were made for (same order)."""
    if len(shares) != len(coefficients):
        raise CryptoError(f"{len(shares)} shares for {len(coefficients)} Lagrange coefficients")
    secret = sum(s.value * c for s, c in zip(shares, coefficients, strict=True)) % PRIME
    if secret >= 1 << (8 * SECRET_BYTES):
        raise CryptoError("reconstructed secret is out of range: at least one share is wrong")
    return secret.to_bytes(SECRET_BYTES, "little")


def reconstruct(shares: Sequence[Share]) -> bytes:
    """The secret from at least ``threshold`` shares (all of those given are used)."""
    return combine(shares, lagrange_at_zero([s.x for s in shares]))


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    result = 0
    for coefficient in reversed(coefficients):
        result = (result * x + coefficient) % PRIME
    return result
