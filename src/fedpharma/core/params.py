"""Model parameters as named float arrays, with a safe binary encoding (never pickle).

Wire format of :func:`encode` (all integers little-endian)::

    magic b"FPP1" | u32 header_len | header (UTF-8 JSON) | raw array bytes, concatenated

The header lists, per array in order, its name, dtype (``<f4`` or ``<f8``) and shape. Decoding
checks the magic, the header, every dtype, that the byte count matches the shapes exactly, and
(optionally) that every value is finite. Nothing in the payload can make the decoder run code.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from fedpharma.core.errors import ProtocolError

FloatArray = npt.NDArray[np.floating]

MAGIC = b"FPP1"
ALLOWED_DTYPES = ("<f4", "<f8")
MAX_HEADER_BYTES = 1 << 20
MAX_ARRAYS = 10_000
MAX_DIMS = 32
MAX_ARRAY_BYTES = 1 << 48
"""No array may span more bytes than this, counting its non-zero dimensions (numpy's own
limits lie beyond; an empty array with huge dimensions would otherwise break ``reshape``)."""


@dataclass(frozen=True)
class Parameters:
    """An ordered, immutable mapping of parameter names to float arrays.

    Arrays are stored read-only so a strategy cannot mutate a site's update in place.
    """

    names: tuple[str, ...]
    arrays: tuple[FloatArray, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.arrays):
            raise ValueError("names and arrays differ in length")
        if len(set(self.names)) != len(self.names):
            raise ValueError("parameter names must be unique")
        for a in self.arrays:
            a.flags.writeable = False

    @classmethod
    def from_dict(cls, named: Mapping[str, npt.ArrayLike]) -> Parameters:
        return cls(tuple(named), tuple(np.array(v, dtype=np.float32) for v in named.values()))

    def to_dict(self) -> dict[str, FloatArray]:
        return dict(zip(self.names, self.arrays, strict=True))

    def __iter__(self) -> Iterator[tuple[str, FloatArray]]:
        return iter(zip(self.names, self.arrays, strict=True))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(a.shape for a in self.arrays)

    @property
    def size(self) -> int:
        """Total number of scalars."""
        return sum(int(a.size) for a in self.arrays)

    def flatten(self) -> npt.NDArray[np.float64]:
        """All parameters as one float64 vector, in name order."""
        if not self.arrays:
            return np.zeros(0)
        return np.concatenate([a.ravel().astype(np.float64) for a in self.arrays])

    def unflatten(self, vector: FloatArray) -> Parameters:
        """Arrays of this structure (names, shapes, dtypes) filled from ``vector``."""
        if vector.shape != (self.size,):
            raise ValueError(f"vector has shape {vector.shape}, expected ({self.size},)")
        out, start = [], 0
        for a in self.arrays:
            out.append(vector[start : start + a.size].reshape(a.shape).astype(a.dtype))
            start += a.size
        return Parameters(self.names, tuple(out))

    @cached_property
    def wire_parts(self) -> tuple[bytes | memoryview, ...]:
        """The pieces of :func:`encode`'s output, as zero-copy views of the arrays.

        Joining them gives the encoding; a message codec joins them with its own header in
        one copy. Cached: the coordinator sends the same parameters to every site.
        """
        return _wire_parts(self)

    def minus(self, other: Parameters) -> Parameters:
        """Element-wise ``self − other`` (e.g. an update Δ = w_local − w_global), same dtypes."""
        if not self.same_structure(other):
            raise ValueError("parameters differ in names or shapes")
        diffs = tuple(
            (a - b).astype(a.dtype, copy=False)
            for a, b in zip(self.arrays, other.arrays, strict=True)
        )
        return Parameters(self.names, diffs)

    def same_structure(self, other: Parameters) -> bool:
        return self.names == other.names and self.shapes == other.shapes

    def check_matches(self, reference: Parameters, what: str = "update") -> None:
        """Raise :class:`ProtocolError` unless names and shapes match ``reference``, all finite."""
        if self.names != reference.names:
            missing = sorted(set(reference.names) - set(self.names))
            extra = sorted(set(self.names) - set(reference.names))
            raise ProtocolError(
                f"{what} has different parameter names (missing {missing}, unexpected {extra}); "
                "the site must train the model the coordinator sent"
            )
        for name, a, ref in zip(self.names, self.arrays, reference.arrays, strict=True):
            if a.shape != ref.shape:
                raise ProtocolError(
                    f"{what}: parameter {name!r} has shape {a.shape}, expected {ref.shape}"
                )
        check_finite(self, what)


def check_finite(params: Parameters, what: str) -> None:
    for name, a in params:
        if not np.isfinite(a).all():
            raise ProtocolError(f"{what}: parameter {name!r} holds NaN or infinite values")


def encode(params: Parameters) -> bytes:
    """Serialize to the self-describing binary format above (little-endian, no pickle)."""
    return b"".join(params.wire_parts)


def _wire_parts(params: Parameters) -> tuple[bytes | memoryview, ...]:
    entries, chunks = [], []
    for name, a in params:
        le = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        dtype = le.dtype.str
        if dtype not in ALLOWED_DTYPES:
            raise ProtocolError(f"parameter {name!r} has dtype {a.dtype}; only float32/64 travel")
        entries.append({"name": name, "dtype": dtype, "shape": list(a.shape)})
        chunks.append(le.reshape(-1).view(np.uint8).data)
    header = json.dumps(entries, separators=(",", ":")).encode()
    return (MAGIC, struct.pack("<I", len(header)), header, *chunks)


def decode(payload: bytes | memoryview, *, require_finite: bool = True) -> Parameters:
    """Parse :func:`encode` output, validating every field; raise :class:`ProtocolError`.

    Arrays are read-only views into ``payload`` (no copy) when their byte order is native.
    """
    view = memoryview(payload)
    if len(view) < 8 or bytes(view[:4]) != MAGIC:
        raise ProtocolError("parameter payload does not start with the FPP1 magic bytes")
    (header_len,) = struct.unpack("<I", view[4:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(view):
        raise ProtocolError("parameter payload header is truncated or oversized")
    entries = load_json(bytes(view[8 : 8 + header_len]), "parameter payload header")
    if not isinstance(entries, list) or len(entries) > MAX_ARRAYS:
        raise ProtocolError("parameter payload header must be a list of array descriptors")
    names, arrays, offset = [], [], 8 + header_len
    for e in entries:
        name, dtype, shape = _descriptor(e)
        nbytes = math.prod(shape) * dtype.itemsize  # exact: Python ints cannot overflow
        if nbytes > len(view) - offset:
            raise ProtocolError(f"parameter payload is truncated inside array {name!r}")
        _check_extent(name, dtype, shape)
        arr = np.frombuffer(view[offset : offset + nbytes], dtype=dtype).reshape(shape)
        names.append(name)
        arrays.append(arr if dtype.isnative else arr.astype(dtype.newbyteorder("=")))
        offset += nbytes
    if offset != len(view):
        raise ProtocolError(f"parameter payload has {len(view) - offset} trailing bytes")
    try:
        params = Parameters(tuple(names), tuple(arrays))
    except ValueError as exc:
        raise ProtocolError(f"invalid parameter payload: {exc}") from exc
    if require_finite:
        check_finite(params, "parameter payload")
    return params


def _descriptor(entry: object) -> tuple[str, np.dtype[np.floating], tuple[int, ...]]:
    """(name, dtype, shape) of one header entry; raise :class:`ProtocolError` unless every
    dimension is a non-negative integer (a negative one would make the decoder read the header
    as array data)."""
    if not (
        isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and entry.get("dtype") in ALLOWED_DTYPES
        and isinstance(entry.get("shape"), list)
        and all(isinstance(d, int) and not isinstance(d, bool) for d in entry["shape"])
    ):
        raise ProtocolError(
            f"malformed array descriptor in parameter payload: {entry!r:.200}; a payload must "
            "come from fedpharma.core.params.encode (name, dtype <f4 or <f8, shape as integers)"
        )
    shape = tuple(entry["shape"])
    if any(d < 0 for d in shape):
        raise ProtocolError(
            f"array {entry['name']!r:.100} in parameter payload has a negative dimension "
            f"{shape!r:.100}; a payload must come from fedpharma.core.params.encode"
        )
    return entry["name"], np.dtype(entry["dtype"]), shape


def _check_extent(name: str, dtype: np.dtype[np.floating], shape: tuple[int, ...]) -> None:
    """Refuse what numpy cannot shape even when empty: too many dimensions, or non-zero
    dimensions whose product is beyond any array (``[0, 2**70]`` holds no byte)."""
    if len(shape) > MAX_DIMS or math.prod(max(d, 1) for d in shape) * dtype.itemsize > (
        MAX_ARRAY_BYTES
    ):
        raise ProtocolError(
            f"array {name!r:.100} in parameter payload has shape {shape!r:.100}, beyond "
            f"{MAX_DIMS} dimensions or {MAX_ARRAY_BYTES} bytes; a payload must come from "
            "fedpharma.core.params.encode"
        )


def load_json(raw: bytes, what: str) -> object:
    """The JSON value of a wire header; :class:`ProtocolError` for anything that is not JSON,
    nests too deep, or holds an integer too long to convert."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # ValueError covers JSON and UTF-8 errors
        raise ProtocolError(f"{what} is not valid JSON (or nests too deep)") from exc
