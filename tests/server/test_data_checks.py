"""Data checks at join: each site sends pass/fail per rule, the coordinator refuses or warns by
policy naming rule and column, never a value; over the real codec."""

from __future__ import annotations

import numpy as np

from fedpharma.core.config import DataChecksConfig
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.protocol import DataCheckReply, DataCheckTask
from fedpharma.core.protocol.codec import decode_message, encode_message
from fedpharma.data.checks import check_data
from fedpharma.data.tabular import Column, TabularSchema
from fedpharma.server.data_checks import gather_data_checks
from fedpharma.site.runtime import SiteRuntime
from fedpharma.transport.inprocess import InProcessChannel

SCHEMA = TabularSchema(
    (
        Column("lactate", "float", minimum=0.0, maximum=30.0, missing=("0",), impute="mean"),
        Column("sex", "category", ("f", "m")),
        Column("died", "int"),
    ),
    label_columns=("died",),
)


def _data(lactate: list[float], sex: list[int], died: list[float]) -> Dataset:
    return Dataset(
        features=np.column_stack([lactate, np.eye(2)[sex]]).astype(np.float32),
        labels=np.array(died, dtype=np.float32)[:, None],
        task="classification",
        task_names=("died",),
        groups=np.zeros(len(died), dtype=np.int64),
    )


GOOD = _data([1.5, 2.0, np.nan, 4.1], [0, 1, 0, 1], [0, 1, 0, 1])
OUT_OF_RANGE = _data([1.5, 240.0, 3.3, 2.0], [0, 1, 0, 1], [0, 1, 0, 1])  # mmol/L vs mg/dL
ONE_CLASS_ONE_SEX = _data([1.5, 2.0, 3.3, 2.0], [0, 0, 0, 0], [0, 0, 0, 0])


def test_each_rule_passes_on_good_data_and_fails_where_it_should() -> None:
    assert all(o.passed for o in check_data(SCHEMA, GOOD))
    failed = {o.key for o in check_data(SCHEMA, OUT_OF_RANGE) if not o.passed}
    assert failed == {"range:lactate"}
    failed = {o.key for o in check_data(SCHEMA, ONE_CLASS_ONE_SEX) if not o.passed}
    assert failed == {"constant:sex", "labels:died"}
    nothing = _data([np.nan] * 4, [0, 1, 0, 1], [0, 1, 0, 1])
    assert {o.key for o in check_data(SCHEMA, nothing) if not o.passed} == {"recorded:lactate"}


def _site(name: str, data: Dataset) -> SiteRuntime:
    return SiteRuntime(name, SiteData(data, data), trainer=None, schema=SCHEMA)  # type: ignore[arg-type]


def test_the_coordinator_refuses_or_warns_by_policy_naming_rule_and_column() -> None:
    channel = InProcessChannel(
        {
            "good": _site("good", GOOD),
            "lab": _site("lab", OUT_OF_RANGE),
            "one": _site("one", ONE_CLASS_ONE_SEX),
        }
    )
    outcome = gather_data_checks(channel, "run", SCHEMA, "classification", DataChecksConfig())
    assert outcome.refused == {"one": ("labels:died",)}
    assert outcome.warned == {"lab": ("range:lactate",), "one": ("constant:sex",)}
    text = "\n".join(outcome.lines())
    assert "site lab warned: data check failed for rule 'range' on column 'lactate'" in text
    assert "240" not in text
    strict = DataChecksConfig(range="refuse", constant="ignore", labels="warn")
    outcome = gather_data_checks(channel, "run", SCHEMA, "classification", strict)
    assert outcome.refused == {"lab": ("range:lactate",)}
    assert outcome.warned == {"one": ("labels:died",)}


def test_the_summary_crosses_the_codec_and_holds_only_rule_keys() -> None:
    reply = _site("lab", OUT_OF_RANGE).handle(DataCheckTask("run", 0))
    assert isinstance(reply, DataCheckReply)
    assert decode_message(encode_message(reply)) == reply
    assert reply.failed == ("range:lactate",)
    assert all(
        ":" in key and not any(c.isdigit() for c in key) for key in reply.passed + reply.failed
    )


class _Silent(SiteRuntime):
    """A site that claims nothing passed by leaving rules out of its summary."""

    def handle(self, task):  # type: ignore[no-untyped-def]
        return DataCheckReply(task.run_id, task.round, self.name, ("recorded:lactate",), ())


def test_a_rule_left_out_of_a_summary_counts_as_failed() -> None:
    channel = InProcessChannel({"quiet": _Silent("quiet", SiteData(GOOD, GOOD), trainer=None)})  # type: ignore[arg-type]
    outcome = gather_data_checks(channel, "run", SCHEMA, "classification", DataChecksConfig())
    assert outcome.refused == {"quiet": ("labels:died",)}
    assert outcome.warned == {
        "quiet": ("recorded:sex", "range:lactate", "constant:lactate", "constant:sex")
    }
