import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import pytest

from fedpharma.core import serde
from fedpharma.core.errors import ConfigError, DataError


@dataclass(frozen=True)
class Masking:
    kind: Literal["masking"] = "masking"
    ring_bits: int = field(default=64, metadata={"choices": (32, 64)})


@dataclass(frozen=True)
class Encryption:
    kind: Literal["encryption"] = "encryption"
    scale_bits: int = 40


@dataclass(frozen=True)
class Attack:
    auc: float = field(metadata={"min": 0.0, "max": 1.0})
    n: int


@dataclass(frozen=True)
class Report:
    name: str
    rounds: tuple[int, ...] = ()
    pair: tuple[str, float] = ("a", 1.0)
    mode: Literal["fast", "exact"] = "fast"
    limit: float | None = None
    secure: Masking | Encryption | None = None
    attacks: tuple[Attack, ...] = ()
    target: Attack | str = "not run"
    scores: Mapping[str, float | None] = field(default_factory=dict)
    by_site: Mapping[str, Attack] = field(default_factory=dict)
    extra: object = None


FULL = Report(
    name="run",
    rounds=(1, 2),
    pair=("b", 2.5),
    mode="exact",
    limit=3.0,
    secure=Encryption(scale_bits=30),
    attacks=(Attack(auc=0.5, n=3), Attack(auc=1.0, n=0)),
    target=Attack(auc=0.25, n=9),
    scores={"site-1": 0.5, "site-2": None},
    by_site={"site-1": Attack(auc=0.75, n=2)},
    extra={"anything": [1, "x"]},
)


def test_to_dict_is_plain_json_that_reads_back_equal():
    plain = serde.to_dict(FULL)
    text = json.dumps(plain)
    assert plain["rounds"] == [1, 2] and plain["secure"] == {"kind": "encryption", "scale_bits": 30}
    assert plain["limit"] == 3.0 and serde.to_dict(Report(name="x"))["limit"] is None
    assert serde.load(Report, json.loads(text), source="t") == FULL
    assert serde.load(Report, serde.to_dict(Report(name="x")), source="t") == Report(name="x")


def test_a_union_of_dataclasses_is_told_apart_by_its_literal_field():
    read = serde.load(Report, {"name": "r", "secure": {"kind": "masking"}}, source="t")
    assert read.secure == Masking()
    obj, problems = serde.from_dict(Report, {"name": "r", "secure": {"kind": "garbling"}})
    assert problems == ["[secure] kind = 'garbling': must be one of 'masking', 'encryption'"]
    assert obj == Report(name="r")


def test_every_problem_is_reported_at_once_with_its_place():
    raw = {
        "nme": "r",
        "rounds": [1, "two"],
        "pair": ["a"],
        "mode": "slow",
        "limit": "high",
        "secure": {"kind": "masking", "ring_bits": 16, "rng_bits": 1},
        "attacks": [{"auc": 0.5, "n": 1}, {"auc": 1.5, "n": 1}, {"n": True}],
        "target": 7,
        "scores": {"site-1": "good"},
        "by_site": [],
    }
    obj, problems = serde.from_dict(Report, raw)
    assert obj is None  # `name` has no default and no valid value
    assert problems == [
        "top level: unknown key 'nme'; did you mean 'name'?",
        "rounds = [1, 'two']: expected a list of an integer",
        "pair = ['a']: expected a list of (a string, a number)",
        "mode = 'slow': expected one of 'fast', 'exact'",
        "limit = 'high': expected a number or nothing (omit the key)",
        "[secure] ring_bits = 16: must be one of 32, 64",
        "[secure]: unknown key 'rng_bits'; did you mean 'ring_bits'?",
        "[attacks[1]] auc = 1.5: must lie in [0.0, 1.0]",
        "[attacks[2]] n = True: expected an integer",
        "[attacks[2]]: missing key 'auc'",
        "target = 7: expected a table or a string",
        "[scores] site-1 = 'good': expected a number or nothing (omit the key)",
        "[by_site] must be a table, got list",
        "top level: missing key 'name'",
    ]


def test_invalid_values_fall_back_to_defaults_so_cross_checks_can_run():
    obj, problems = serde.from_dict(Report, {"name": "r", "mode": 3, "limit": 2})
    assert obj == Report(name="r", limit=2.0) and len(problems) == 1


def test_unknown_keys_may_be_ignored_for_forward_compatible_formats():
    raw = {"name": "r", "added_later": {"x": 1}, "secure": {"kind": "masking", "new": 1}}
    assert serde.load(Report, raw, source="t", ignore_unknown=True).secure == Masking()
    with pytest.raises(ConfigError, match="unknown key 'added_later'"):
        serde.load(Report, raw, source="t")


def test_load_raises_the_callers_error_with_every_problem():
    with pytest.raises(ConfigError) as info:
        serde.load(Report, {"rounds": "x"}, source="report.json")
    assert info.value.source == "report.json" and len(info.value.problems) == 2

    def data_error(problems, source):
        return DataError(f"{source}: {'; '.join(problems)}")

    with pytest.raises(DataError, match="top level must be a table, got list"):
        serde.load(Report, [], source="report.json", error=data_error)


def test_non_finite_numbers_pass_through():
    read = serde.load(
        Report, {"name": "r", "limit": math.inf, "scores": {"a": math.nan}}, source="t"
    )
    assert read.limit == math.inf and math.isnan(read.scores["a"] or 0.0)


def test_a_bounded_number_refuses_nan():
    raw = {"auc": math.nan, "n": 1}
    assert serde.from_dict(Attack, raw)[1] == ["auc = nan: must lie in [0.0, 1.0]"]


def test_to_dict_refuses_what_is_not_a_dataclass_instance():
    with pytest.raises(TypeError):
        serde.to_dict(Report)


@dataclass(frozen=True)
class Unavailable:
    unavailable: str


@dataclass(frozen=True)
class Audit:
    rounds: tuple[int, ...] = field(default=(), metadata={"key": "round"})
    by_relation: Mapping[Literal["record", "site"], float] = field(default_factory=dict)
    target: Attack | Unavailable | None = None


def test_a_field_may_have_its_own_key_in_the_data():
    audit = Audit(rounds=(1, 2))
    assert serde.to_dict(audit)["round"] == [1, 2]
    assert serde.load(Audit, {"round": [1, 2]}, source="t") == audit
    assert serde.from_dict(Audit, {"rounds": [1]})[1] == [
        "top level: unknown key 'rounds'; did you mean 'round'?"
    ]


def test_mapping_keys_of_a_literal_type_are_checked():
    assert serde.load(Audit, {"by_relation": {"site": 1}}, source="t").by_relation == {"site": 1.0}
    assert serde.from_dict(Audit, {"by_relation": {"user": 1}})[1] == [
        "[by_relation]: key 'user' is not one of 'record', 'site'"
    ]


def test_a_union_of_dataclasses_without_a_tag_is_told_apart_by_its_keys():
    assert serde.load(Audit, {"target": {"unavailable": "no"}}, source="t").target == (
        Unavailable("no")
    )
    read = serde.load(Audit, {"target": {"auc": 0.5, "n": 1}}, source="t")
    assert read.target == Attack(auc=0.5, n=1)
    assert serde.from_dict(Audit, {"target": {"auc": 0.5}})[1] == [
        "[target] needs the keys of one of (auc, n) or (unavailable)"
    ]
