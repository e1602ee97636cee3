"""A deployed tabular site waits for the consortium's fit, checks what it receives (hostile
input), applies it from its raw rows, and the new messages cross the wire intact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedpharma.core.dataset import Dataset, SiteData, TargetScaling
from fedpharma.core.errors import ProtocolError
from fedpharma.core.protocol import (
    EvaluateTask,
    FeatureStatisticsTask,
    PreprocessingApplied,
    PreprocessingTask,
    Refusal,
)
from fedpharma.core.protocol.codec import decode_message, encode_message
from fedpharma.data.federated_preprocessing import (
    FittedPreprocessing,
    column_sums,
    fitted_width,
)
from fedpharma.data.tabular import Column, TabularSchema
from fedpharma.site.runtime import SiteRuntime
from fedpharma.site.tabular import TabularPreparation

SCHEMA = TabularSchema(
    (
        Column("dose", "float", minimum=0.0, maximum=100.0, impute="median"),
        Column("weight", "float"),
        Column("y", "int"),
    ),
    label_columns=("y",),
)


def _site() -> tuple[SiteRuntime, list[SiteData]]:
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.uniform(0, 100, 30), rng.normal(70, 10, 30)]).astype(np.float32)
    x[::4, 0] = np.nan
    data = Dataset(
        features=x,
        labels=(rng.random((30, 1)) < 0.5).astype(np.float32),
        task="classification",
        task_names=("y",),
        groups=np.zeros(30, dtype=np.int64),
    )
    raw = SiteData(data, data)
    runtime = SiteRuntime("a", raw, trainer=None, schema=SCHEMA)  # type: ignore[arg-type]
    rebuilt: list[SiteData] = []

    def rebuild(prepared: SiteData, targets: TargetScaling | None) -> None:
        runtime.data = prepared
        rebuilt.append(prepared)

    runtime.tabular = TabularPreparation(raw, SCHEMA, rebuild)
    return runtime, rebuilt


def _fit() -> FittedPreprocessing:
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.uniform(0, 100, 50), rng.normal(70, 10, 50)])
    return FittedPreprocessing.fit(SCHEMA, column_sums(x, SCHEMA), indicate_all=True)


def test_a_site_refuses_to_evaluate_before_the_fit_and_applies_it_from_its_raw_rows():
    runtime, rebuilt = _site()
    reply = runtime.handle(EvaluateTask("run", 1, None))  # type: ignore[arg-type]
    assert isinstance(reply, Refusal) and "fitted preprocessing" in reply.reason
    fitted = _fit()
    for _ in range(2):  # a resumed run sends it again: applied from the raw rows each time
        applied = runtime.handle(PreprocessingTask("run", 0, fitted.to_json()))
        assert isinstance(applied, PreprocessingApplied) and applied.digest == fitted.digest()
    assert len(rebuilt) == 2
    np.testing.assert_array_equal(rebuilt[0].train.features, rebuilt[1].train.features)
    assert rebuilt[1].train.n_features == fitted_width(SCHEMA) == 3
    assert not np.isnan(rebuilt[1].train.features).any()
    # statistics are still those of the raw rows
    sums = runtime.handle(FeatureStatisticsTask("run", 0))
    assert sums.count[0] == 30 - 8  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "tamper, why",
    [
        (lambda d: d | {"feature_names": ["dose", "height"]}, "feature columns differ"),
        (lambda d: d | {"scale": [0.0, 1.0]}, "scale is not positive"),
        (lambda d: d | {"indicators": [7]}, "indicators do not name"),
        (lambda d: d | {"version": 99}, "not of version"),
        (lambda d: d | {"pickle": "cos\nsystem"}, "pickle"),
    ],
)
def test_a_tampered_fit_is_refused_and_nothing_is_applied(tamper, why):
    runtime, rebuilt = _site()
    document = json.loads(_fit().to_json())
    reply = runtime.handle(PreprocessingTask("run", 0, json.dumps(tamper(document))))
    assert isinstance(reply, Refusal) and why in reply.reason
    assert rebuilt == [] and runtime.tabular is not None and runtime.tabular.applied is None
    assert isinstance(runtime.handle(PreprocessingTask("run", 0, "{not json")), Refusal)


def test_the_new_messages_cross_the_wire_and_a_bad_noise_multiplier_is_refused():
    for message in (
        FeatureStatisticsTask("run", 0, 2.5),
        PreprocessingTask("run", 0, _fit().to_json()),
        PreprocessingApplied("run", 0, "a", "ab" * 32),
    ):
        assert decode_message(encode_message(message)) == message
    raw = encode_message(FeatureStatisticsTask("run", 0, 2.5)).replace(b"2.5", b"-10")
    with pytest.raises(ProtocolError, match="noise_multiplier"):
        decode_message(raw)
