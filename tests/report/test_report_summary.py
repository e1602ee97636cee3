"""summary.json validation: every structural problem is a DataError naming the key."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from report_samples import Summary, make_audit_summary

from fedpharma.core.errors import DataError
from fedpharma.report import render_report
from fedpharma.report.summary import load_summary, parse_summary, write_summary

WriteRun = Callable[[Summary], Path]


def test_missing_summary_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no summary\.json in .*has the run finished"):
        render_report(tmp_path)


def test_invalid_json_names_the_position(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text('{"format": 1,\n  "title": }', "utf-8")

    with pytest.raises(DataError, match=r"not valid JSON \(line 2, column 12"):
        render_report(tmp_path)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("title",), r"top level: missing key 'title'"),
        (("metric", "name"), r"\[metric\]: missing key 'name'"),
        (("dataset", "task"), r"\[dataset\]: missing key 'task'"),
        (("pooled",), r"top level: missing key 'pooled'"),
        (("format",), r"top level: missing key 'format'"),
    ],
)
def test_missing_key_is_named(
    regression_summary: Summary, write_run: WriteRun, path: tuple[str, ...], message: str
) -> None:
    parent = regression_summary
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]

    run_dir = write_run(regression_summary)

    with pytest.raises(DataError, match=message):
        render_report(run_dir)
    assert not (run_dir / "report.html").exists()


def test_wrong_types_are_named(regression_summary: Summary) -> None:
    regression_summary["sites"]["site-2"]["federated"] = "0.7"
    with pytest.raises(DataError, match=r"\[sites\.site-2\] federated = '0\.7': expected a number"):
        parse_summary(regression_summary)


def test_boolean_is_not_a_number(regression_summary: Summary) -> None:
    regression_summary["rounds"] = True
    with pytest.raises(DataError, match=r"rounds = True: expected an integer"):
        parse_summary(regression_summary)


def test_non_object_section_is_named(regression_summary: Summary) -> None:
    regression_summary["metric"] = "rmse"
    with pytest.raises(DataError, match=r"\[metric\] must be a table, got str"):
        parse_summary(regression_summary)


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(DataError, match=r"top level must be a table, got list"):
        parse_summary([])


def test_curve_length_mismatch_is_named(regression_summary: Summary) -> None:
    regression_summary["curves"]["sites"]["site-3"].pop()
    with pytest.raises(DataError, match=r"\[curves\.sites\] site-3 has 19 values but"):
        parse_summary(regression_summary)


def test_unsupported_format_is_refused(regression_summary: Summary) -> None:
    regression_summary["format"] = 2
    with pytest.raises(DataError, match=r"'format' is 2, but this report understands format 1"):
        parse_summary(regression_summary)


def test_optional_parts_may_be_absent(regression_summary: Summary) -> None:
    for key in ("curves", "timings", "config", "run_id", "created"):
        del regression_summary[key]
    del regression_summary["pooled"]["metrics"]

    summary = parse_summary(regression_summary)

    assert summary.curves.rounds == ()
    assert summary.timings.total_seconds is None
    assert summary.pooled.details() == {}
    assert summary.pooled.score("federated") == 0.67


def test_null_and_nan_values_become_missing(regression_summary: Summary) -> None:
    regression_summary["pooled"]["local"] = None
    regression_summary["pooled"]["centralized"] = math.nan
    regression_summary["curves"]["pooled"][0] = None

    summary = parse_summary(regression_summary)

    assert summary.pooled.score("local") is None
    assert summary.pooled.score("centralized") is None
    assert summary.curves.pooled[0] is None


def test_a_summary_reads_back_as_written(regression_summary: Summary, tmp_path: Path) -> None:
    summary = parse_summary(make_audit_summary())

    write_summary(summary, tmp_path)

    assert load_summary(tmp_path) == summary
    assert parse_summary(regression_summary).sites["site-2"].score("federated") == 0.66
