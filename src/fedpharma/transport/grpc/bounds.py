"""What a task can legitimately be answered with: the most bytes, and for a plaintext update
its exact structure, so a site cannot make the coordinator reserve gigabytes for a small model
or slip a wider dtype into the aggregate.

- a plaintext :class:`~fedpharma.core.protocol.TrainTask` is answered by an update of the model's
  names, shapes and dtypes: exactly the model's encoded size plus a reply header;
- under CKKS, by an encrypted update of ``ceil((values + 2) / SLOTS)`` ciphertexts of at most
  the decoder's chunk limit each (:mod:`fedpharma.secure.ckks`); so is a secure
  :class:`~fedpharma.core.protocol.ChemicalOverlapTask`, of ``buckets + n_bits`` values;
- a secure-aggregation phase, by a message of at most 8 bytes per value summed (a 64-bit masked
  vector: the model's, or the overlap's after a secure overlap task) plus a small multiple of the
  phase's own payload (key rosters, share lists);
- any other task (evaluation, description), by a reply header alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    ChemicalOverlapTask,
    Reply,
    SecureTask,
    Task,
    TrainResult,
    TrainTask,
)
from fedpharma.core.protocol.codec import MAX_HEADER_BYTES
from fedpharma.core.protocol.messages import secure_mode
from fedpharma.secure.ckks import MAX_CHUNK_BYTES, SLOTS

REPLY_HEADER_BYTES = 8 + MAX_HEADER_BYTES
"""Room for a reply's codec header (ids, counts, metrics, a description): what the codec reads."""
SECURE_PAYLOAD_FACTOR = 16
"""A secure phase's reply is at most this many times the phase's task payload, plus the model."""
RING_BYTES = 8


@dataclass(frozen=True)
class ReplyBound:
    """The most bytes an answer may declare and, for a plaintext update, the model it must fit."""

    max_bytes: int
    model: Parameters | None = None


def summed_values(task: Task) -> int | None:
    """How many values the secure phases after ``task`` sum: a train task's model size, a secure
    overlap task's sets; ``None`` for any other task (the secure phases keep the last size)."""
    if isinstance(task, TrainTask):
        return task.parameters.size
    if isinstance(task, ChemicalOverlapTask) and task.secure is not None:
        return task.buckets + task.n_bits
    return None


def reply_bound(task: Task, model_values: int | None, limit: int) -> ReplyBound:
    """The bound on the answer to ``task``; ``model_values`` is the size of the values summed
    (:func:`summed_values` of the last task that set it), ``limit`` the global payload limit
    (used when nothing tighter is known)."""
    if isinstance(task, ChemicalOverlapTask) and secure_mode(task) == "ckks":
        chunks = math.ceil((task.buckets + task.n_bits + 2) / SLOTS)
        return _capped(REPLY_HEADER_BYTES + chunks * (4 + MAX_CHUNK_BYTES), limit)
    if isinstance(task, TrainTask):
        mode = secure_mode(task)
        if mode is None:
            size = sum(memoryview(part).nbytes for part in task.parameters.wire_parts)
            return _capped(REPLY_HEADER_BYTES + size, limit, task.parameters)
        if mode == "ckks":
            chunks = math.ceil((task.parameters.size + 2) / SLOTS)
            return _capped(REPLY_HEADER_BYTES + chunks * (4 + MAX_CHUNK_BYTES), limit)
        return _capped(REPLY_HEADER_BYTES, limit)  # secagg: a key advertisement
    if isinstance(task, SecureTask):
        if model_values is None:
            return ReplyBound(limit)
        size = SECURE_PAYLOAD_FACTOR * len(task.payload) + RING_BYTES * model_values
        return _capped(REPLY_HEADER_BYTES + size, limit)
    return _capped(REPLY_HEADER_BYTES, limit)


def _capped(size: int, limit: int, model: Parameters | None = None) -> ReplyBound:
    return ReplyBound(min(size, limit), model)


def check_update(reply: Reply, bound: ReplyBound, site: str) -> None:
    """Raise :class:`ProtocolError` unless a plaintext update has the model's names and shapes,
    finite values, and exactly the model's dtypes (a float64 update for a float32 model is
    refused, and so is a float32 one for a float64 model)."""
    if bound.model is None or not isinstance(reply, TrainResult):
        return
    what = f"update from {site!r}"
    reply.update.check_matches(bound.model, what=what)
    for (name, got), due in zip(reply.update, bound.model.arrays, strict=True):
        if got.dtype != due.dtype:
            raise ProtocolError(
                f"{what}: parameter {name!r} is {got.dtype}, the model sent is {due.dtype}; "
                "send the update in the model's dtype"
            )
