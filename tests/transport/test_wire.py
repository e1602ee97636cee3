"""The streamed-payload framing: hand-built data frames are protobuf's own encoding, chunks
reassemble to the payload, and the assembler checks size and digest."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpharma.transport.grpc import fedpharma_v1_pb2 as pb
from fedpharma.transport.grpc.wire import (
    OutgoingPayload,
    PayloadAssembler,
    PayloadRejected,
    PayloadTooLarge,
    PayloadTruncated,
    WireLimits,
    chunk_data,
    chunk_kind,
    data_frame,
    parse_chunk,
    payload_header,
)

# sizes around the one- and two-byte varint boundaries, and empty
SIZES = st.sampled_from([0, 1, 127, 128, 300, 16383, 16384]) | st.integers(0, 70_000)


@settings(max_examples=60, deadline=None)
@given(
    size=SIZES, cut=st.integers(0, 10), message_type=st.sampled_from([pb.TaskChunk, pb.ResultChunk])
)
def test_a_data_frame_is_the_generated_encoding_and_parses_back_to_its_bytes(
    size, cut, message_type
):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    pieces = (data[:cut], memoryview(data)[cut:])  # a frame may be built from several pieces
    frame = data_frame(message_type, pieces)
    assert frame == message_type(data=data).SerializeToString()
    parsed = parse_chunk(frame, message_type)
    assert chunk_kind(parsed) == "data"
    assert bytes(chunk_data(parsed)) == data


def test_other_messages_and_other_encodings_go_through_the_generated_parser():
    header = pb.TaskChunk(header=pb.PayloadHeader(run_id="r", total_bytes=3))
    parsed = parse_chunk(header.SerializeToString(), pb.TaskChunk)
    assert chunk_kind(parsed) == "header" and parsed.header.run_id == "r"
    # a data field followed by another field is valid protobuf but not a bare frame
    other = data_frame(pb.TaskChunk, [b"abc"]) + pb.TaskChunk(data=b"xyz").SerializeToString()
    parsed = parse_chunk(other, pb.TaskChunk)
    assert chunk_kind(parsed) == "data" and bytes(chunk_data(parsed)) == b"xyz"  # last one wins
    with pytest.raises(PayloadRejected, match="not a valid protobuf"):
        parse_chunk(b"\x12\x05ab", pb.TaskChunk)  # announces 5 bytes, holds 2


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=5),
    chunk_bytes=st.integers(1024, 4096),
)
def test_chunks_of_an_outgoing_payload_reassemble_to_its_bytes(sizes, chunk_bytes):
    parts = [bytes([i]) * n for i, n in enumerate(sizes)]
    joined = b"".join(parts)
    payload = OutgoingPayload.of(parts)
    assert payload.size == len(joined)
    assert payload.sha256 == hashlib.sha256(joined).digest()
    chunks = [b"".join(pieces) for pieces in payload.chunks(chunk_bytes)]
    assert b"".join(chunks) == joined
    assert all(len(c) == chunk_bytes for c in chunks[:-1])

    header = payload_header(payload, run_id="r", round=1, task_id="t", site="s")
    assembler = PayloadAssembler(header, WireLimits(), "test payload")
    for chunk in chunks:
        assembler.add(memoryview(chunk))
    received = assembler.finish()
    assert bytes(received) == joined and received.readonly


def test_the_assembler_refuses_padding_truncation_and_corruption():
    payload = OutgoingPayload.of([b"x" * 3000])
    header = payload_header(payload, run_id="r", round=1, task_id="t", site="s")
    padded = PayloadAssembler(header, WireLimits(), "result")
    padded.add(b"x" * 3000)
    with pytest.raises(PayloadRejected, match="more bytes"):
        padded.add(b"x")
    truncated = PayloadAssembler(header, WireLimits(), "result")
    truncated.add(b"x" * 2999)
    with pytest.raises(PayloadTruncated, match="2999 of 3000"):
        truncated.finish()
    corrupted = PayloadAssembler(header, WireLimits(), "result")
    corrupted.add(b"x" * 2999 + b"y")
    with pytest.raises(PayloadRejected, match="sha256"):
        corrupted.finish()


def test_a_payload_the_machine_cannot_reserve_is_refused_as_too_large(monkeypatch):
    header = payload_header(OutgoingPayload.of([b"x"]), run_id="r", round=1, task_id="t", site="s")

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("fedpharma.transport.grpc.wire.np.empty", no_memory)
    with pytest.raises(PayloadTooLarge, match="reserve"):
        PayloadAssembler(header, WireLimits(), "result")
