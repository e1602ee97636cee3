import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedpharma.core import params as params_codec
from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    PROTOCOL_VERSION,
    ChemicalOverlapResult,
    ChemicalOverlapTask,
    CKKSSettings,
    DescribeTask,
    DescriptionReply,
    EvaluateResult,
    EvaluateTask,
    FeatureStatisticsResult,
    FeatureStatisticsTask,
    LabelStatisticsResult,
    LabelStatisticsTask,
    LocalTraining,
    RecordDP,
    Refusal,
    SecAggSettings,
    SiteDP,
    TaskSummaryResult,
    TaskSummaryTask,
    TrainResult,
    TrainSettings,
    TrainTask,
)
from fedpharma.core.protocol.codec import decode_message, encode_message

PARAMS = Parameters.from_dict({"w": np.arange(6.0).reshape(2, 3), "b": np.ones(3)})
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
text = st.text(max_size=20)


def _same(a, b):
    assert type(a) is type(b)
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, Parameters):
            assert x.names == y.names
            for p, q in zip(x.arrays, y.arrays, strict=True):
                np.testing.assert_array_equal(p, q)
        else:
            assert x == y


positive = st.floats(min_value=1e-9, max_value=1e9)
settings = st.builds(
    TrainSettings,
    st.builds(LocalTraining, st.integers(1, 100), st.integers(0, 2**31 - 1), st.floats(0, 10)),
    st.none()
    | st.builds(RecordDP, positive, positive, st.integers(1, 1000), st.none() | positive, positive),
    st.none()
    | st.builds(
        SiteDP,
        positive,
        positive,
        st.integers(1, 100),
        st.integers(1, 100),
        st.sampled_from(["central", "distributed"]),
    ),
    st.none()
    | st.builds(
        SecAggSettings,
        st.integers(2, 100),
        st.sampled_from([32, 64]),
        positive,
        st.integers(1, 100),
        st.integers(1, 10**6),
    )
    | st.builds(CKKSSettings, st.integers(2, 100), text),
)


@given(text, st.integers(0, 10_000), settings)
def test_tasks_round_trip(run_id, rnd, task_settings):
    for message in (
        TrainTask(run_id, rnd, PARAMS, task_settings),
        EvaluateTask(run_id, rnd, PARAMS),
        LabelStatisticsTask(run_id, rnd),
        FeatureStatisticsTask(run_id, rnd),
        FeatureStatisticsTask(run_id, rnd, 2.0, task_settings.secure, labels=True),
    ):
        _same(decode_message(encode_message(message)), message)


def test_a_feature_statistics_task_with_malformed_secure_settings_is_refused():
    header = {"type": "FeatureStatisticsTask", "version": PROTOCOL_VERSION, "run_id": "r"}
    header |= {"round": 0, "noise_multiplier": None, "labels": False}
    with pytest.raises(ProtocolError, match="kind = 'garbled'"):
        decode_message(_forge(header | {"secure": {"kind": "garbled"}}, b""))
    with pytest.raises(ProtocolError, match="labels must be true or false"):
        decode_message(_forge(header | {"secure": None, "labels": "yes"}, b""))


def _train_task(raw_settings: object) -> bytes:
    header = {"type": "TrainTask", "version": PROTOCOL_VERSION, "run_id": "r", "round": 1}
    return _forge(header | {"settings": raw_settings}, params_codec.encode(PARAMS))


def test_train_settings_leave_defaults_out_and_refuse_an_unknown_field():
    blob = encode_message(TrainTask("r", 1, PARAMS, TrainSettings(LocalTraining(seed=7))))
    (header_len,) = struct.unpack("<I", blob[4:8])
    assert json.loads(blob[8 : 8 + header_len])["settings"] == {"local": {"seed": 7}}
    with pytest.raises(ProtocolError, match="unknown key 'new_privacy_knob'"):
        decode_message(_train_task({"site_dp": {"new_privacy_knob": 1}}))


def test_malformed_train_settings_are_refused_with_every_problem_named():
    raw = {
        "local": {"epochs": 0, "sed": 3},
        "record_dp": {"max_grad_norm": -1.0, "delta": 1e-5, "planned_rounds": 2},
        "secure": {"kind": "garbled"},
    }
    with pytest.raises(ProtocolError) as info:
        decode_message(_train_task(raw))
    text = str(info.value)
    assert "epochs = 0" in text and "did you mean 'seed'" in text
    assert (
        "max_grad_norm = -1.0: must be > 0" in text and "noise_multiplier or target_epsilon" in text
    )
    assert "kind = 'garbled'" in text
    nan = {
        "site_dp": {
            "noise_multiplier": float("nan"),
            "clip_norm": 1.0,
            "planned_sites": 2,
            "min_sites": 1,
        }
    }
    with pytest.raises(ProtocolError, match="finite"):
        decode_message(_train_task(nan))


@given(text, st.integers(0, 10_000), text, st.lists(finite, max_size=5))
def test_label_statistics_round_trip(run_id, rnd, site, sums):
    message = LabelStatisticsResult(run_id, rnd, site, tuple(sums), tuple(sums), tuple(sums))
    _same(decode_message(encode_message(message)), message)


@given(text, st.integers(0, 10_000), text, st.integers(0, 10**9), st.lists(finite, max_size=5))
def test_feature_statistics_round_trip(run_id, rnd, site, n, sums):
    message = FeatureStatisticsResult(run_id, rnd, site, n, tuple(sums), tuple(sums), tuple(sums))
    _same(decode_message(encode_message(message)), message)


@given(text, st.integers(0, 10_000), text, st.integers(1, 10**9), st.dictionaries(text, finite))
def test_results_round_trip(run_id, rnd, site, n, metrics):
    for message in (
        TrainResult(run_id, rnd, site, PARAMS, n, metrics),
        EvaluateResult(run_id, rnd, site, n, metrics),
        Refusal(run_id, rnd, site, "policy", "not approved"),
    ):
        _same(decode_message(encode_message(message)), message)


@given(
    text,
    st.integers(0, 10_000),
    text,
    st.integers(0, 50),
    st.lists(finite, max_size=8),
    st.dictionaries(text, finite),
)
def test_task_summary_messages_round_trip(run_id, rnd, site, n, values, metrics):
    for message in (
        TaskSummaryTask(run_id, rnd, PARAMS, n, len(values), tuple(values)),
        TaskSummaryResult(run_id, rnd, site, tuple(values), metrics),
    ):
        _same(decode_message(encode_message(message)), message)


@given(text, st.integers(0, 10_000), text, st.integers(0, 2**20), st.integers(0, 4096))
def test_chemical_overlap_messages_round_trip(run_id, rnd, site, buckets, bits):
    secure = SecAggSettings(threshold=3, ring_bits=64, clip=1.0, max_sites=3, max_examples=1)
    for message in (
        ChemicalOverlapTask(run_id, rnd, buckets, bits),
        ChemicalOverlapTask(run_id, rnd, buckets, bits, secure),
        ChemicalOverlapTask(run_id, rnd, buckets, bits, CKKSSettings(threshold=3, key_id="ab")),
        ChemicalOverlapResult(run_id, rnd, site, buckets, bits),
    ):
        _same(decode_message(encode_message(message)), message)


@pytest.mark.parametrize("count", [-1, 1.5, True, "3", None])
def test_a_chemical_overlap_count_that_is_no_whole_number_of_at_least_0_is_refused(count):
    header = {
        "type": "ChemicalOverlapResult",
        "version": PROTOCOL_VERSION,
        "run_id": "r",
        "round": 2,
        "site": "s",
        "scaffold_buckets": 5,
        "set_bits": count,
    }
    with pytest.raises(ProtocolError, match="set_bits must be a non-negative integer"):
        decode_message(_forge(header))


@given(text, st.integers(0, 10_000), text, st.text(max_size=2000))
def test_join_messages_round_trip(run_id, rnd, site, description):
    for message in (DescribeTask(run_id, rnd), DescriptionReply(run_id, rnd, site, description)):
        _same(decode_message(encode_message(message)), message)


def _forge(header: dict, tail: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return b"FPM1" + struct.pack("<I", len(raw)) + raw + tail


def test_other_protocol_version_names_both_versions():
    blob = _forge({"type": "Refusal", "version": 99})
    with pytest.raises(ProtocolError, match=f"version 99.*speaks {PROTOCOL_VERSION}"):
        decode_message(blob)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ({"type": "Evil"}, "unknown message type"),
        ({"type": "Refusal", "run_id": "r", "round": 1, "site": "s", "kind": "k"}, "lacks"),
        (
            {"type": "EvaluateResult", "run_id": "r", "round": -1, "site": "s", "n_examples": 1},
            "non-negative integer",
        ),
        (
            {"type": "EvaluateResult", "run_id": 3, "round": 1, "site": "s", "n_examples": 1},
            "must be a string",
        ),
        (
            {
                "type": "EvaluateResult",
                "run_id": "r",
                "round": 1,
                "site": "s",
                "n_examples": 1,
                "metrics": {"auc": "high"},
            },
            "finite numbers",
        ),
        (
            {
                "type": "Refusal",
                "run_id": "r",
                "round": 1,
                "site": "s",
                "kind": "k",
                "reason": "x",
                "extra": 1,
            },
            "unexpected fields",
        ),
        (
            {"type": "DescriptionReply", "run_id": "r", "round": 0, "site": "s"},
            "lacks field 'description'",
        ),
        (
            {
                "type": "DescriptionReply",
                "run_id": "r",
                "round": 0,
                "site": "s",
                "description": {"radius": 2},
            },
            "description must be a string",
        ),
    ],
)
def test_malformed_headers_are_rejected(header, match):
    with pytest.raises(ProtocolError, match=match):
        decode_message(_forge({"version": PROTOCOL_VERSION} | header))


def test_non_finite_metric_cannot_be_sent():
    with pytest.raises(ProtocolError, match="non-finite"):
        encode_message(EvaluateResult("r", 1, "s", 3, {"auc": float("nan")}))


def test_truncated_update_is_rejected():
    blob = encode_message(TrainResult("r", 1, "s", PARAMS, 5))
    with pytest.raises(ProtocolError, match="truncated"):
        decode_message(blob[:-3])
