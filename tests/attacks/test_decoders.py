"""Every decoder a hostile site can reach, fuzzed: whatever the bytes, it returns a value or
raises one of fedpharma's typed errors (never ValueError, OverflowError, RecursionError...).

Each decoder is fed random bytes, valid encodings cut, bit-flipped and spliced, and (for the
framed and JSON formats) well-framed bodies with hostile contents, plus a corpus of the cases a
hostile site actually sent (:data:`PARAMS_CORPUS`, :data:`MESSAGE_CORPUS`).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedpharma.core import params
from fedpharma.core.errors import FedPharmaError
from fedpharma.core.protocol import (
    PROTOCOL_VERSION,
    EvaluateResult,
    LocalTraining,
    Refusal,
    SecureReply,
    TrainResult,
    TrainSettings,
    TrainTask,
)
from fedpharma.core.protocol.codec import MAGIC as MESSAGE_MAGIC
from fedpharma.core.protocol.codec import decode_message, encode_message
from fedpharma.secure import ckks, contributors, frames
from fedpharma.secure.identity import Endorsement
from fedpharma.secure.secagg import messages as secagg
from fedpharma.secure.shamir import SHARE_VALUE_BYTES, Share
from fedpharma.transport.grpc import WireLimits
from fedpharma.transport.grpc import fedpharma_v1_pb2 as pb
from fedpharma.transport.grpc.wire import PayloadAssembler, parse_chunk

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def typed(decoder, data):
    """``decoder(data)``; a typed fedpharma error counts as a clean refusal, anything else
    escapes and fails the test."""
    try:
        return decoder(data)
    except FedPharmaError:
        return None


def mutated(valid: bytes):
    """Hypothesis strategy: ``valid`` cut, bit-flipped, with bytes inserted, or spliced."""
    flips = st.lists(
        st.tuples(st.integers(0, max(len(valid) - 1, 0)), st.integers(1, 255)), max_size=8
    )

    def flip(changes):
        out = bytearray(valid)
        for at, mask in changes:
            out[at] ^= mask
        return bytes(out)

    return st.one_of(
        st.integers(0, len(valid)).map(lambda n: valid[:n]),
        flips.map(flip),
        st.tuples(st.integers(0, len(valid)), st.binary(min_size=1, max_size=64)).map(
            lambda t: valid[: t[0]] + t[1] + valid[t[0] :]
        ),
        st.binary(max_size=256),
    )


# ----- fedpharma.core.params ----------------------------------------------------------------------

MODEL = params.Parameters.from_dict({"w": np.arange(6.0).reshape(2, 3), "b": [0.5]})


def params_payload(header: object, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return params.MAGIC + struct.pack("<I", len(raw)) + raw + data


def descriptor(shape, dtype="<f4"):
    return [{"name": "w", "dtype": dtype, "shape": shape}]


PARAMS_CORPUS = {
    "2^32 x 2^32": params_payload(descriptor([2**32, 2**32])),
    "2^70": params_payload(descriptor([2**70])),
    "negative": params_payload(descriptor([-4]), b"\0" * 16),
    "empty with a huge axis": params_payload(descriptor([0, 2**70])),
    "empty with an overflowing product": params_payload(descriptor([0, 2**62, 4])),
    "100 dimensions": params_payload(descriptor([1] * 100), b"\0" * 4),
    "deeply nested header": params_payload(b"[" * 100_000 + b"]" * 100_000),
    "a 5000-digit dimension": params_payload(
        b'[{"name":"w","dtype":"<f4","shape":[1' + b"0" * 5000 + b"]}]"
    ),
    "float64 declared, float32 bytes": params_payload(descriptor([3], "<f8"), b"\0" * 12),
    "header length beyond the payload": params.MAGIC + struct.pack("<I", 2**32 - 1),
    "not utf-8": params_payload(b"\xff\xfe[]"),
    "names repeat": params_payload(descriptor([0]) * 2),
}


@pytest.mark.parametrize("case", PARAMS_CORPUS, ids=str)
def test_the_hostile_parameter_corpus_is_refused_with_a_protocol_error(case):
    with pytest.raises(FedPharmaError):
        params.decode(PARAMS_CORPUS[case])


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
DIMS = st.integers(-(2**70), 2**70) | st.integers(0, 4)
DESCRIPTORS = st.fixed_dictionaries(
    {
        "name": st.text(max_size=4) | JSON_VALUES,
        "dtype": st.sampled_from(["<f4", "<f8", ">f4", "|u1", "<c16"]) | JSON_VALUES,
        "shape": st.lists(DIMS, max_size=70) | JSON_VALUES,
    }
)


@FUZZ
@given(header=st.lists(DESCRIPTORS, max_size=3) | JSON_VALUES, data=st.binary(max_size=64))
def test_params_decode_on_any_header_raises_only_typed_errors(header, data):
    typed(params.decode, params_payload(header, data))


@FUZZ
@given(data=mutated(params.encode(MODEL)))
def test_params_decode_on_mutated_payloads_raises_only_typed_errors(data):
    typed(params.decode, data)


# ----- fedpharma.core.protocol.codec --------------------------------------------------------------


def message_payload(header: object, tail: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return MESSAGE_MAGIC + struct.pack("<I", len(raw)) + raw + tail


RESULT = {
    "type": "EvaluateResult",
    "version": PROTOCOL_VERSION,
    "run_id": "r",
    "round": 1,
    "site": "s",
}
MESSAGE_CORPUS = {
    "type is a list": message_payload({"type": ["TrainTask"], "version": PROTOCOL_VERSION}),
    "type is an object": message_payload({"type": {}, "version": PROTOCOL_VERSION}),
    "deeply nested header": message_payload(b"[" * 100_000 + b"]" * 100_000),
    "a 5000-digit version": message_payload(b'{"version":1' + b"0" * 5000 + b"}"),
    "round beyond 2^63": message_payload(RESULT | {"round": 2**80, "n_examples": 1}),
    "count beyond 2^63": message_payload(RESULT | {"n_examples": 2**70}),
    "metric beyond float": message_payload(RESULT | {"n_examples": 1, "metrics": {"a": 10**400}}),
    "config beyond float": message_payload(
        {
            "type": "TrainTask",
            "version": PROTOCOL_VERSION,
            "run_id": "r",
            "round": 1,
            "config": {"a": 10**400},
        },
        params.encode(MODEL),
    ),
    "update with a crafted shape": message_payload(
        RESULT | {"type": "TrainResult", "n_examples": 1}, params_payload(descriptor([0, 2**70]))
    ),
}


@pytest.mark.parametrize("case", MESSAGE_CORPUS, ids=str)
def test_the_hostile_message_corpus_is_refused_with_a_protocol_error(case):
    with pytest.raises(FedPharmaError):
        decode_message(MESSAGE_CORPUS[case])


MESSAGE_HEADERS = st.dictionaries(
    st.sampled_from(
        [
            *("type", "version", "run_id", "round", "site", "n_examples", "metrics", "config"),
            *("kind", "reason", "phase", "description", "other"),
        ]
    ),
    JSON_VALUES | st.sampled_from(["TrainResult", "EvaluateResult", "SecureReply", "Refusal"]),
    max_size=8,
)


@FUZZ
@given(header=MESSAGE_HEADERS | JSON_VALUES, tail=st.binary(max_size=32))
def test_decode_message_on_any_header_raises_only_typed_errors(header, tail):
    if isinstance(header, dict) and "version" in header and header["version"] is None:
        header["version"] = PROTOCOL_VERSION  # reach past the version check more often
    typed(decode_message, message_payload(header, tail))


VALID_MESSAGES = [
    encode_message(TrainResult("r", 2, "s", MODEL, 10, {"loss": 0.5})),
    encode_message(TrainTask("r", 2, MODEL, TrainSettings(local=LocalTraining(epochs=2)))),
    encode_message(EvaluateResult("r", 2, "s", 5, {"rmse": 1.0})),
    encode_message(Refusal("r", 2, "s", "budget", "spent")),
    encode_message(SecureReply("r", 2, "s", "advertise", b"\1" * 40)),
]


@FUZZ
@given(data=st.sampled_from(VALID_MESSAGES).flatmap(mutated))
def test_decode_message_on_mutated_messages_raises_only_typed_errors(data):
    typed(decode_message, data)


# ----- secure frames: secagg and CKKS messages ------------------------------------------------

KEY = b"\7" * secagg.KEY_BYTES
ENDORSEMENT = Endorsement(b"certificate", b"signature")
ADVERT = secagg.KeyAdvertisement("r", 1, "a", KEY, KEY, KEY, ENDORSEMENT)
SIGNATURE = secagg.ConsistencySignature("r", 1, "a", KEY + KEY)
MEMBER = contributors.Member("a", b"\5" * 32, ENDORSEMENT)
CONTRIBUTOR_SET = contributors.ContributorSet("r", 1, (MEMBER,))
SET_SIGNATURE = contributors.SetSignature("a", ENDORSEMENT)
SHARE = secagg.EncryptedShares("a", "b", b"\3" * secagg.SEALED_SHARE_BYTES)
SECURE_VALID = {
    frames.Kind.KEY_ADVERTISEMENT: ADVERT.to_bytes(),
    frames.Kind.KEY_ROSTER: secagg.KeyRoster("r", 1, 2, (ADVERT,)).to_bytes(),
    frames.Kind.SHARE_BUNDLE: secagg.ShareBundle("r", 1, "a", b"\1" * 32, (SHARE,)).to_bytes(),
    frames.Kind.SHARE_DELIVERY: secagg.ShareDelivery("r", 1, "b", (SHARE,)).to_bytes(),
    frames.Kind.MASKED_INPUT: secagg.MaskedInput("r", 1, "a", 32, b"\0" * 16).to_bytes(),
    frames.Kind.SURVIVOR_LIST: secagg.SurvivorList("r", 1, ("a", "b")).to_bytes(),
    frames.Kind.UNMASKING_SHARES: secagg.UnmaskingShares(
        "r",
        1,
        "a",
        (secagg.RevealedShare("b", Share(2, 5)),),
        (secagg.RevealedShare("c", Share(2, 7)),),
    ).to_bytes(),
    frames.Kind.CONSISTENCY_SIGNATURE: SIGNATURE.to_bytes(),
    frames.Kind.CONSISTENCY_PROOF: secagg.ConsistencyProof("r", 1, ("a",), (SIGNATURE,)).to_bytes(),
    frames.Kind.CKKS_UPDATE: ckks.EncryptedUpdate(b"\0" * 16, 3, (b"\1" * 64,)).to_bytes(),
    frames.Kind.CKKS_CONTRIBUTION: contributors.SignedContribution(
        "r", 1, "a", b"\1" * 64, ENDORSEMENT
    ).to_bytes(),
    frames.Kind.CKKS_CONTRIBUTOR_SET: CONTRIBUTOR_SET.to_bytes(),
    frames.Kind.CKKS_SET_SIGNATURE: SET_SIGNATURE.to_bytes(),
    frames.Kind.CKKS_DECRYPT_REQUEST: contributors.DecryptRequest(
        CONTRIBUTOR_SET, (SET_SIGNATURE,), (b"\1" * 64,)
    ).to_bytes(),
    frames.Kind.CKKS_DECRYPTED_MEAN: ckks.DecryptedMean(
        np.ones(4, dtype=np.float32), 10, 2
    ).to_bytes(),
}
SECURE_DECODERS = {
    frames.Kind.KEY_ADVERTISEMENT: secagg.KeyAdvertisement.from_bytes,
    frames.Kind.KEY_ROSTER: secagg.KeyRoster.from_bytes,
    frames.Kind.SHARE_BUNDLE: secagg.ShareBundle.from_bytes,
    frames.Kind.SHARE_DELIVERY: secagg.ShareDelivery.from_bytes,
    frames.Kind.MASKED_INPUT: secagg.MaskedInput.from_bytes,
    frames.Kind.SURVIVOR_LIST: secagg.SurvivorList.from_bytes,
    frames.Kind.UNMASKING_SHARES: secagg.UnmaskingShares.from_bytes,
    frames.Kind.CONSISTENCY_SIGNATURE: secagg.ConsistencySignature.from_bytes,
    frames.Kind.CONSISTENCY_PROOF: secagg.ConsistencyProof.from_bytes,
    frames.Kind.CKKS_UPDATE: ckks.EncryptedUpdate.from_bytes,
    frames.Kind.CKKS_CONTRIBUTION: contributors.SignedContribution.from_bytes,
    frames.Kind.CKKS_CONTRIBUTOR_SET: contributors.ContributorSet.from_bytes,
    frames.Kind.CKKS_SET_SIGNATURE: contributors.SetSignature.from_bytes,
    frames.Kind.CKKS_DECRYPT_REQUEST: contributors.DecryptRequest.from_bytes,
    frames.Kind.CKKS_DECRYPTED_MEAN: ckks.DecryptedMean.from_bytes,
    frames.Kind.CKKS_PUBLIC_CONTEXT: ckks.PublicContext.from_bytes,
}
HEADER_BYTES = 11  # magic, kind, version, body length


def reframed(kind: frames.Kind):
    """Bodies of ``kind``: a valid one mutated (or random bytes), framed with a valid digest, so
    the body reader itself is what gets fuzzed."""
    valid = SECURE_VALID.get(kind, frames.frame(kind, b"\0" * 16 + b"\4\0\0\0abcd"))
    body = valid[HEADER_BYTES : -frames.DIGEST_BYTES]
    return mutated(body).map(lambda b: frames.frame(kind, b))


def test_the_fuzzed_secure_examples_are_valid_to_begin_with():
    for kind, data in SECURE_VALID.items():
        assert SECURE_DECODERS[kind](data) is not None, kind.name


@FUZZ
@given(
    st.sampled_from(sorted(SECURE_DECODERS)).flatmap(lambda k: st.tuples(st.just(k), reframed(k)))
)
def test_secure_message_bodies_raise_only_typed_errors(case):
    kind, data = case
    typed(SECURE_DECODERS[kind], data)


@FUZZ
@given(
    st.sampled_from(sorted(SECURE_VALID)).flatmap(
        lambda k: st.tuples(st.just(k), mutated(SECURE_VALID[k]))
    )
)
def test_secure_frames_raise_only_typed_errors(case):
    kind, data = case
    typed(SECURE_DECODERS[kind], data)


def test_a_share_value_outside_the_field_is_a_crypto_error():
    body = SECURE_VALID[frames.Kind.UNMASKING_SHARES][HEADER_BYTES : -frames.DIGEST_BYTES]
    forged = body.replace(Share(2, 5).value_bytes(), b"\xff" * SHARE_VALUE_BYTES)
    assert forged != body
    with pytest.raises(FedPharmaError, match="outside the field"):
        secagg.UnmaskingShares.from_bytes(frames.frame(frames.Kind.UNMASKING_SHARES, forged))


# ----- gRPC framing ---------------------------------------------------------------------------


@FUZZ
@given(raw=st.binary(max_size=128), result=st.booleans())
def test_parse_chunk_raises_only_typed_errors(raw, result):
    typed(lambda r: parse_chunk(r, pb.ResultChunk if result else pb.TaskChunk), raw)


@FUZZ
@given(
    version=st.integers(0, 2**32 - 1),
    total=st.integers(0, 2**64 - 1),
    digest=st.binary(max_size=40),
    bound=st.none() | st.integers(0, 2**40),
    chunks=st.lists(st.binary(max_size=64), max_size=4),
)
def test_payload_assembly_raises_only_typed_errors(version, total, digest, bound, chunks):
    header = pb.PayloadHeader(protocol_version=version, total_bytes=total, sha256=digest)
    limits = WireLimits(chunk_bytes=1024, max_payload_bytes=1 << 20)

    def assemble(_):
        assembler = PayloadAssembler(header, limits, "fuzzed result", max_bytes=bound)
        for chunk in chunks:
            assembler.add(chunk)
        return assembler.finish()

    typed(assemble, None)


# ----- weakened twins: the same checks fail on decoders without their defences -----------------


def _untyped(decoder, corpus):
    """The corpus cases on which ``decoder`` raises something other than a fedpharma error."""
    escaped = set()
    for case, data in corpus.items():
        try:
            typed(decoder, data)
        except Exception:
            escaped.add(case)
    return escaped


def test_weakened_twin_a_decoder_without_its_checks_fails_the_corpus(monkeypatch):
    monkeypatch.setattr(params, "_check_extent", lambda *_: None)
    monkeypatch.setattr(params, "load_json", lambda raw, _: json.loads(raw))
    assert {"empty with a huge axis", "100 dimensions", "deeply nested header"} <= _untyped(
        params.decode, PARAMS_CORPUS
    )
    assert {"deeply nested header", "update with a crafted shape"} <= _untyped(
        decode_message, MESSAGE_CORPUS
    )


def test_weakened_twin_an_untyped_error_escapes_the_fuzz_check():
    def crashing(_):
        raise OverflowError("int too large")

    with pytest.raises(OverflowError):
        typed(crashing, b"")
