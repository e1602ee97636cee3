"""Wire codec for protocol messages: a JSON header plus raw parameter bytes. Never pickle.

Layout (integers little-endian)::

    b"FPM1" | u32 header_len | header (UTF-8 JSON object) | parameters (core.params format)

Secure-aggregation messages carry their opaque ``payload`` bytes in place of the parameters.

The header holds the message type, the protocol version and the scalar fields; a train task's
typed settings are a nested object (:mod:`fedpharma.core.protocol.settings`). Decoding checks every
field's type, so a malformed or hostile message becomes a :class:`ProtocolError` that says what
is wrong, and nothing else.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import fields
from typing import Any

from fedpharma.core import params as params_codec
from fedpharma.core.errors import ProtocolError
from fedpharma.core.protocol.messages import (
    PROTOCOL_VERSION,
    SECURE_PHASES,
    ChemicalOverlapResult,
    ChemicalOverlapTask,
    DataCheckReply,
    DataCheckTask,
    DescribeTask,
    DescriptionReply,
    EvaluateResult,
    EvaluateTask,
    FeatureStatisticsResult,
    FeatureStatisticsTask,
    LabelStatisticsResult,
    LabelStatisticsTask,
    PreprocessingApplied,
    PreprocessingTask,
    Refusal,
    Reply,
    SecureReply,
    SecureTask,
    Task,
    TaskSummaryResult,
    TaskSummaryTask,
    TrainResult,
    TrainTask,
)
from fedpharma.core.protocol.settings import (
    TrainSettings,
    secure_settings_from_json,
    secure_settings_to_json,
    settings_from_json,
    settings_to_json,
)

MAGIC = b"FPM1"
MAX_HEADER_BYTES = 1 << 20
MAX_INT = 1 << 63
"""Integers in a header (rounds, counts, metric and config values) stay below this."""

Message = Task | Reply
EncodedMessage = tuple[bytes | memoryview, ...]
"""An encoded message as pieces (:func:`encode_message_parts`); joined, its bytes."""
_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        TrainTask,
        EvaluateTask,
        TrainResult,
        EvaluateResult,
        Refusal,
        SecureTask,
        SecureReply,
        DescribeTask,
        DescriptionReply,
        LabelStatisticsTask,
        LabelStatisticsResult,
        FeatureStatisticsTask,
        FeatureStatisticsResult,
        DataCheckTask,
        DataCheckReply,
        PreprocessingTask,
        PreprocessingApplied,
        TaskSummaryTask,
        TaskSummaryResult,
        ChemicalOverlapTask,
        ChemicalOverlapResult,
    )
}
_PARAMETER_FIELDS = ("parameters", "update")
_BYTES_FIELDS = ("payload",)
_TRAILING_FIELDS = (*_PARAMETER_FIELDS, *_BYTES_FIELDS)
_SCALAR_TYPES = {
    "run_id": str,
    "site": str,
    "kind": str,
    "reason": str,
    "phase": str,
    "description": str,
    "fit": str,
    "digest": str,
}
_INT_FIELDS = (
    "round",
    "n_examples",
    "n_tasks",
    "width",
    "label_width",
    "buckets",
    "n_bits",
    "scaffold_buckets",
    "set_bits",
)
_NUMBER_LIST_FIELDS = (
    "count",
    "total",
    "sum_of_squares",
    "histogram",
    "edges",
    "values",
    "label_counts",
)
_TEXT_LIST_FIELDS = ("passed", "failed")
MAX_TEXT_LIST = 10_000
MAX_TEXT_ITEM = 512


def encode_message(message: Message) -> bytes:
    return b"".join(encode_message_parts(message))


def encode_message_parts(message: Message) -> EncodedMessage:
    """:func:`encode_message`'s output as pieces whose concatenation it is: the header, then
    zero-copy views of the parameter arrays, so a transport can stream a large model without
    first copying it into one buffer."""
    header: dict[str, Any] = {"type": type(message).__name__, "version": PROTOCOL_VERSION}
    payload: tuple[bytes | memoryview, ...] = ()
    for f in fields(message):
        value = getattr(message, f.name)
        if f.name in _PARAMETER_FIELDS:
            payload = value.wire_parts
        elif f.name in _BYTES_FIELDS:
            payload = (bytes(value),)
        elif isinstance(value, TrainSettings):
            header[f.name] = settings_to_json(value)
        elif f.name == "secure":
            header[f.name] = secure_settings_to_json(value)
        else:
            header[f.name] = value
    try:
        raw = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:
        raise ProtocolError(
            f"{header['type']} holds a non-finite number; send finite values"
        ) from exc
    return (b"".join([MAGIC, struct.pack("<I", len(raw)), raw]), *payload)


def message_type(data: bytes | memoryview) -> str | None:
    """The type name an encoded message's header gives (for progress lines), without decoding
    the rest; ``None`` if the header cannot be read."""
    if len(data) < 8 or data[:4] != MAGIC:
        return None
    (header_len,) = struct.unpack("<I", data[4:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        return None
    try:
        header = json.loads(bytes(data[8 : 8 + header_len]))
    except (ValueError, UnicodeDecodeError):
        return None
    kind = header.get("type") if isinstance(header, dict) else None
    return kind if isinstance(kind, str) and kind in _TYPES else None


def decode_message(data: bytes | memoryview) -> Message:
    if len(data) < 8 or data[:4] != MAGIC:
        raise ProtocolError("message does not start with the FPM1 magic bytes")
    (header_len,) = struct.unpack("<I", data[4:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise ProtocolError("message header is truncated or oversized")
    header = params_codec.load_json(bytes(data[8 : 8 + header_len]), "message header")
    if not isinstance(header, dict):
        raise ProtocolError("message header must be a JSON object")
    version = header.pop("version", None)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"message uses protocol version {version!r}, this side speaks {PROTOCOL_VERSION}; "
            "upgrade the older side"
        )
    type_name = header.pop("type", None)
    cls = _TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type; expected one of {sorted(_TYPES)}")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in _PARAMETER_FIELDS:
            kwargs[f.name] = params_codec.decode(memoryview(data)[8 + header_len :])
        elif f.name in _BYTES_FIELDS:
            kwargs[f.name] = bytes(data[8 + header_len :])
        elif f.name not in header:
            if f.name == "metrics":
                kwargs[f.name] = {}
                continue
            raise ProtocolError(f"{cls.__name__} lacks field {f.name!r}")
        else:
            kwargs[f.name] = _check_field(cls.__name__, f.name, header.pop(f.name))
    if header:
        raise ProtocolError(f"{cls.__name__} has unexpected fields {sorted(header)}")
    if not any(f.name in _TRAILING_FIELDS for f in fields(cls)) and len(data) != 8 + header_len:
        raise ProtocolError(f"{cls.__name__} carries unexpected trailing bytes")
    message: Message = cls(**kwargs)
    return message


def _check_field(type_name: str, name: str, value: Any) -> Any:
    where = f"{type_name}.{name}"
    if name in _SCALAR_TYPES and not isinstance(value, _SCALAR_TYPES[name]):
        raise ProtocolError(f"{where} must be a string")
    if name == "phase" and value not in SECURE_PHASES:
        raise ProtocolError(f"{where} must be one of {SECURE_PHASES}")
    if name in _INT_FIELDS and (
        not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_INT
    ):
        raise ProtocolError(f"{where} must be a non-negative integer below 2^63")
    if name == "metrics":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and _is_number(v) for k, v in value.items()
        ):
            raise ProtocolError(f"{where} must map names to finite numbers")
        return {k: float(v) for k, v in value.items()}
    if name == "settings":
        return settings_from_json(value)
    if name == "secure":
        return secure_settings_from_json(value)
    if name == "labels" and not isinstance(value, bool):
        raise ProtocolError(f"{where} must be true or false")
    if name in _TEXT_LIST_FIELDS:
        if (
            not isinstance(value, list)
            or len(value) > MAX_TEXT_LIST
            or not all(isinstance(v, str) and len(v) <= MAX_TEXT_ITEM for v in value)
        ):
            raise ProtocolError(
                f"{where} must be a list of at most {MAX_TEXT_LIST} strings of at most "
                f"{MAX_TEXT_ITEM} characters"
            )
        return tuple(value)
    if name == "noise_multiplier":
        if value is not None and not (_is_number(value) and value > 0):
            raise ProtocolError(f"{where} must be a number > 0, or null")
        return None if value is None else float(value)
    if name in _NUMBER_LIST_FIELDS:
        if not isinstance(value, list) or not all(_is_number(v) for v in value):
            raise ProtocolError(f"{where} must be a list of finite numbers")
        return tuple(float(v) for v in value)
    return value


def _is_number(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return abs(v) < MAX_INT if isinstance(v, int) else math.isfinite(v)
