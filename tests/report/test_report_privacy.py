"""The optional privacy section: parsing, the guarantee sentence, the ε plot and escaping."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from report_samples import Summary, make_privacy_summary, make_regression_summary

from fedpharma.core.errors import DataError
from fedpharma.report import render_report
from fedpharma.report.formatting import format_epsilon, format_parameter
from fedpharma.report.html import privacy_sentence
from fedpharma.report.plots import privacy_epsilon_png, privacy_utility_png
from fedpharma.report.summary import parse_summary

EVIL = "<script>alert('x')</script>"
SENTENCE = (
    "Record-level DP-SGD: every site's cumulative ε after round 3 is at most 3.23 at δ = 1e-5 "
    "(RDP accountant, improved conversion); budgets ε = 5 per site, enforced by each site."
)


def _page(directory: Path, summary: Summary) -> str:
    directory.mkdir()
    (directory / "summary.json").write_text(json.dumps(summary), "utf-8")
    return render_report(directory).read_text("utf-8")


def _img_count(page: str) -> int:
    return len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', page))


@pytest.fixture(scope="module")
def privacy_page(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _page(tmp_path_factory.mktemp("report") / "run", make_privacy_summary())


def test_privacy_is_parsed_into_typed_objects() -> None:
    privacy = parse_summary(make_privacy_summary()).privacy

    assert privacy is not None
    assert privacy.relations() == ("record",)
    assert privacy.rounds == (1, 2, 3)
    assert privacy.epsilon["site-1"]["record"] == (2.19, 2.77, 3.23)
    assert privacy.epsilon["site-2"]["record"][:2] == (2.19, 2.77)
    assert privacy.epsilon["site-2"]["record"][2] is None
    assert privacy.budget == {"record": 5.0, "site": None}
    assert privacy.max_final("record") == 3.23
    assert privacy.max_final("site") is None
    assert [(r.round, r.site, r.kind) for r in privacy.refusals] == [
        (3, "site-2", "privacy-budget")
    ]


def test_no_privacy_key_means_no_section(tmp_path: Path) -> None:
    summary = make_regression_summary()
    assert parse_summary(summary).privacy is None
    assert "<h2>Privacy</h2>" not in _page(tmp_path / "run", summary)


def test_privacy_section_states_the_guarantee_and_adds_a_plot(privacy_page: str) -> None:
    section = privacy_page.split("<h2>Privacy</h2>")[1].split("</section>")[0]

    assert _img_count(privacy_page) == 4  # learning curves, bars, loss + ε per round
    assert _img_count(section) == 1
    assert SENTENCE.replace("'", "&#39;") in section
    assert '<th scope="row">site-1</th><td>record</td><td>3.23</td><td>5</td><td>1e-5</td>' in (
        section
    )
    assert "<td>3</td>" in section and "privacy-budget" in section


def test_sentence_names_sites_without_epsilon_and_overspending() -> None:
    data = make_privacy_summary()
    del data["privacy"]["final"]["site-4"]
    data["privacy"]["final"]["site-1"]["record"] = 5.5

    assert privacy_sentence(parse_summary(data)) == (
        "Record-level DP-SGD: every site's cumulative ε after round 3 is at most 5.50 at "
        "δ = 1e-5 (no ε reported by site-4) (RDP accountant, improved conversion); budgets "
        "ε = 5 per site, enforced by each site, were exceeded by site-1."
    )


def test_refusal_reason_is_escaped(tmp_path: Path) -> None:
    data = make_privacy_summary()
    data["privacy"]["refusals"][0]["reason"] = EVIL
    page = _page(tmp_path / "run", data)

    assert "<script" not in page
    assert "<td>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</td>" in page


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.update(round="3"), r"\[privacy\] round = '3': expected a list"),
        (lambda p: p.pop("accountant"), r"\[privacy\]: missing key 'accountant'"),
        (
            lambda p: p["epsilon"]["site-1"].update(record=[1.0, 2.0]),
            r"\[privacy\.epsilon\.site-1\] record has 2 values but \[privacy\] round has 3",
        ),
        (
            lambda p: p["epsilon"]["site-1"].update(record=[1.0, -2.0, 3.0]),
            r"\[privacy\.epsilon\.site-1\] record: every ε must be ≥ 0",
        ),
        (
            lambda p: p["final"]["site-2"].update(user=1.0),
            r"\[privacy\.final\.site-2\]: key 'user' is not one of 'record', 'site'",
        ),
        (
            lambda p: p["budget"].update(record="5"),
            r"\[privacy\.budget\] record = '5': expected a number",
        ),
        (lambda p: p["refusals"][0].pop("site"), r"\[privacy\.refusals\[0\]\]: missing key 'site'"),
        (
            lambda p: p.update(refusals=["no"]),
            r"\[privacy\.refusals\[0\]\] must be a table, got str",
        ),
        (
            lambda p: p.update(record_level="yes"),
            r"\[privacy\] record_level = 'yes': expected true/false",
        ),
    ],
)
def test_malformed_privacy_is_a_data_error_naming_the_key(edit: Any, message: str) -> None:
    data = make_privacy_summary()
    edit(data["privacy"])

    with pytest.raises(DataError, match=message):
        parse_summary(data)


def test_epsilon_is_rounded_up_and_parameters_shown_as_written() -> None:
    assert [format_epsilon(v) for v in (3.23, 3.231, 0.1234, None)] == [
        "3.23",
        "3.24",
        "0.124",
        "—",
    ]
    assert [format_parameter(v) for v in (5.0, 1e-05, 0.5, float("inf"))] == [
        "5",
        "1e-5",
        "0.5",
        "∞",
    ]


def _pixels(png: bytes) -> np.ndarray:
    """The decoded image (rows × columns × RGBA)."""
    from matplotlib import image

    return image.imread(io.BytesIO(png), format="png")


def test_the_epsilon_plot_is_a_figure_sized_image_that_shows_the_budget() -> None:
    privacy = parse_summary(make_privacy_summary()).privacy
    assert privacy is not None
    with_budget = _pixels(privacy_epsilon_png(privacy))
    unbounded = dataclasses.replace(privacy, budget=dict.fromkeys(privacy.budget))
    assert with_budget.shape[:2] == (570, 1125)  # 7.5 × 3.8 inches at 150 dpi
    assert not np.array_equal(with_budget, _pixels(privacy_epsilon_png(unbounded)))


def test_the_privacy_utility_plot_skips_non_finite_scores_and_draws_the_no_dp_line() -> None:
    points = [(None, 0.62), (0.5, 0.9), (1.0, 0.8), (1.0, 0.78), (8.0, 0.66)]

    def plot(chosen: list[tuple[float | None, float]]) -> bytes:
        return privacy_utility_png(chosen, "rmse", higher_is_better=False, title="chembl · $x$")

    png = plot(points)
    assert _pixels(png).shape[:2] == (570, 975)  # 6.5 × 3.8 inches at 150 dpi
    assert plot([*points, (2.0, float("nan")), (None, float("inf"))]) == png
    assert not np.array_equal(_pixels(plot(points[1:])), _pixels(png))  # without "no DP"


def test_privacy_utility_png_refuses_a_non_positive_epsilon() -> None:
    with pytest.raises(ValueError, match="positive"):
        privacy_utility_png([(0.0, 0.5)], "rmse", higher_is_better=False, title="t")
