"""The privacy audit and the cross-site matrix in the report: parsing, tables, escaping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_samples import make_audit_summary, make_privacy_summary

from fedpharma.core.errors import DataError
from fedpharma.report import render_report
from fedpharma.report.cross_site import NOT_EVALUATED, UNDEFINED, cross_site_html
from fedpharma.report.membership import (
    NO_DP_SENTENCE,
    RAW_UPDATE,
    RAW_UPDATE_SECURE,
    audit_sentence,
    privacy_audit_html,
)
from fedpharma.report.summary import AuditTarget, NotAudited, parse_summary

EVIL = "<script>alert('x')</script>"
NOT_EVALUATED_ATTRIBUTE = NOT_EVALUATED.replace("'", "&#39;")


@pytest.fixture(scope="module")
def audit_page(tmp_path_factory: pytest.TempPathFactory) -> str:
    run_dir = tmp_path_factory.mktemp("report") / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps(make_audit_summary()), "utf-8")
    return render_report(run_dir).read_text("utf-8")


def _section(page: str, heading: str) -> str:
    return page.split(f"<h2>{heading}</h2>")[1].split("</section>")[0]


def test_audit_and_matrix_are_parsed_into_typed_objects() -> None:
    summary = parse_summary(make_audit_summary())
    audit, matrix = summary.privacy_audit, summary.cross_evaluation

    assert audit is not None and matrix is not None
    assert list(audit.sites) == ["site-1", "site-2", "site-3", "site-4"]
    first = audit.sites["site-1"].final_model
    assert isinstance(first, AuditTarget)
    assert (first.loss_threshold.auc, first.calibrated.auc, first.best_auc()) == (
        0.52,
        0.53,
        0.53,
    )
    assert audit.sites["site-3"].site_update == NotAudited(
        "the site refused the audit round (policy): <no>"
    )
    assert matrix.allowed["site-4"] is False
    assert set(matrix.rows[4].scores) == {"site-4"}
    assert matrix.rows[1].scores["site-2"] is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s["privacy_audit"]["sites"]["site-1"]["final_model"]["calibrated"].update(
                auc=1.2
            ),
            r"\[privacy_audit\.sites\.site-1\.final_model\.calibrated\] auc = 1\.2: must lie in",
        ),
        (
            lambda s: s["privacy_audit"]["sites"]["site-2"].pop("nonmember_shift"),
            r"\[privacy_audit\.sites\.site-2\]: missing key 'nonmember_shift'",
        ),
        (
            lambda s: s["cross_evaluation"]["rows"][0]["scores"].update(elsewhere=0.5),
            r"\[cross_evaluation\.rows\[0\]\.scores\] elsewhere: not one of",
        ),
        (
            lambda s: s["cross_evaluation"].update(test_sites=[1, 2]),
            r"\[cross_evaluation\] test_sites = \[1, 2\]: expected a list of a string",
        ),
    ],
)
def test_malformed_sections_are_data_errors_naming_the_key(edit, message) -> None:
    summary = make_audit_summary()
    edit(summary)

    with pytest.raises(DataError, match=message):
        parse_summary(summary)


def test_without_dp_the_privacy_card_still_shows_the_audit(audit_page: str) -> None:
    privacy = _section(audit_page, "Privacy")

    assert NO_DP_SENTENCE in privacy
    assert '<table class="audit">' in privacy
    assert privacy.count('rowspan="2">no DP</td>') == 4
    assert privacy.count(f'<td class="text">{RAW_UPDATE}</td>') == 4
    assert "<td>0.520</td><td>0.080</td><td>0.530</td><td>0.080</td><td>40 / 40</td>" in privacy
    assert "At site-1, site-2 the held-out records come from groups" in privacy
    assert "not run: the site refused the audit round (policy): &lt;no&gt;" in privacy


def test_the_page_holds_the_cross_site_matrix(audit_page: str) -> None:
    matrix = _section(audit_page, "Cross-site evaluation")

    assert '<table class="cross-site">' in matrix
    assert matrix.count("<tr>") == 6  # header + federated + 4 local-only models
    assert "Cross evaluation not allowed by: site-4" in matrix


def test_matrix_marks_best_own_and_cells_not_evaluated() -> None:
    html = cross_site_html(parse_summary(make_audit_summary()))
    rows = html.split("<tbody>")[1].split("</tr>")

    federated, local_1, local_4 = rows[0], rows[1], rows[4]
    assert '<td class="best">0.640</td>' in federated  # lowest RMSE on site-1's data
    assert f'<td class="missing" title="{UNDEFINED}">—</td>' in local_1
    assert f'<td class="missing" title="{NOT_EVALUATED_ATTRIBUTE}">—</td>' in local_1  # site-4
    assert local_4.count(f'title="{NOT_EVALUATED_ATTRIBUTE}"') == 3
    assert '<td class="own">0.930</td>' in local_4


def test_audit_sits_beside_the_epsilon_and_names_secure_aggregation() -> None:
    summary = make_audit_summary(secure="secagg")
    summary["privacy"] = make_privacy_summary()["privacy"]
    html = privacy_audit_html(parse_summary(summary))

    assert '<td class="text" rowspan="2">record 3.23</td>' in html
    assert RAW_UPDATE_SECURE in html and RAW_UPDATE not in html
    assert "ε: the site&#39;s cumulative final ε" in html
    assert audit_sentence(parse_summary(summary).privacy_audit) == (
        "The strongest membership-inference attack reaches AUC 0.720 (site-1, raw update); "
        "0.5 means an attacker cannot tell training records from held-out ones."
    )


def test_site_names_are_escaped() -> None:
    summary = json.loads(json.dumps(make_audit_summary()).replace("site-2", EVIL))
    parsed = parse_summary(summary)
    html = privacy_audit_html(parsed) + cross_site_html(parsed)

    assert "<script" not in html
    assert "&lt;script&gt;" in html


def test_no_sections_without_audit_or_matrix(tmp_path: Path) -> None:
    summary = parse_summary(make_privacy_summary())

    assert privacy_audit_html(summary) == "" and cross_site_html(summary) == ""
