"""render_report end to end: the page exists, shows the right things, and escapes input.

Rendering draws real matplotlib figures (about a second each page), so each scenario is rendered
once per module and shared by the tests that only read it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from report_samples import (
    Summary,
    make_classification_summary,
    make_no_baselines_summary,
    make_regression_summary,
)

from fedpharma.report import render_report
from fedpharma.report.html import headline_sentence, verdict_sentence
from fedpharma.report.summary import parse_summary

EVIL = "<script>alert('x')</script>"


def _render(directory: Path, summary: Summary) -> tuple[Path, Path]:
    """Write ``summary`` into ``directory``, render it; return (run dir, report path)."""
    directory.mkdir()
    (directory / "summary.json").write_text(json.dumps(summary), "utf-8")
    return directory, render_report(directory)


def _img_count(page: str) -> int:
    return len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', page))


def _evil_summary() -> Summary:
    """A regression summary whose user-supplied strings try to inject markup."""
    summary = make_regression_summary()
    summary["sites"][EVIL] = summary["sites"].pop("site-1")
    summary["curves"]["sites"][EVIL] = summary["curves"]["sites"].pop("site-1")
    summary["title"] = f"{EVIL} & co"
    summary["strategy"] = "$x$ <b>"
    summary["config"]["note"] = EVIL
    return summary


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _render(tmp_path_factory.mktemp("report") / "run", make_regression_summary())


@pytest.fixture(scope="module")
def regression_page(regression_run: tuple[Path, Path]) -> str:
    return regression_run[1].read_text("utf-8")


@pytest.fixture(scope="module")
def classification_page(tmp_path_factory: pytest.TempPathFactory) -> str:
    run = tmp_path_factory.mktemp("report") / "run"
    return _render(run, make_classification_summary())[1].read_text("utf-8")


def test_report_is_written_into_the_run_directory(regression_run: tuple[Path, Path]) -> None:
    run_dir, path = regression_run

    assert path == run_dir / "report.html"
    assert path.is_file()
    assert sorted(p.name for p in run_dir.iterdir()) == ["report.html", "summary.json"]


def test_regression_report_shows_plots_partners_and_metric(regression_page: str) -> None:
    assert _img_count(regression_page) == 3
    assert regression_page.count("<img") == 3
    for site in ("site-1", "site-2", "site-3", "site-4"):
        assert f"<h3>{site}</h3>" in regression_page
    assert "RMSE" in regression_page and "lower is better" in regression_page


def test_header_shows_run_facts(regression_page: str) -> None:
    header = regression_page.split("</header>")[0]

    assert "<h1>chembl2321810 · 4 sites · fedavg</h1>" in header
    for fact in ("chembl2321810", "regression · pIC50", "1,017", "fedavg", "20"):
        assert f"<dd>{fact}</dd>" in header
    assert "2026-11-27 20:30 UTC" in header
    assert "42.0 s (federated 20.0 s, baselines 15.0 s)" in header


def test_config_is_a_collapsible_json_block(regression_page: str) -> None:
    config = regression_page.split("<details>")[1].split("</details>")[0]

    assert "<summary>" in config
    assert "&#34;seed&#34;: 7" in config


def test_report_is_self_contained(regression_page: str) -> None:
    assert "<script" not in regression_page
    assert "<link" not in regression_page
    assert "http://" not in regression_page and "https://" not in regression_page


def test_classification_report_uses_its_metrics(classification_page: str) -> None:
    assert _img_count(classification_page) == 3
    for label in ("ROC AUC", "PR AUC", "Accuracy", "higher is better", "hospital-A"):
        assert label in classification_page


def test_best_value_per_row_is_highlighted(classification_page: str) -> None:
    pooled_table = classification_page.split("<h3>All sites (weighted mean)</h3>")[1]
    pooled_table = pooled_table.split("</table>")[0]

    def best_cells(metric: str) -> list[str]:
        row = pooled_table.split(f"{metric}</th>")[1].split("</tr>")[0]
        return re.findall(r'<td class="best"[^>]*>([^<]+)</td>', row)

    assert best_cells("ROC AUC") == ["0.840"]
    assert best_cells("Accuracy") == ["0.750"] * 3  # a tie highlights every tied cell
    assert best_cells("PR AUC") == ["0.600"] * 2  # federated PR AUC is null, shown as —
    assert '<td class="missing">—</td>' in pooled_table


def test_null_baselines_and_empty_curves_leave_only_the_bar_plot(tmp_path: Path) -> None:
    page = _render(tmp_path / "run", make_no_baselines_summary())[1].read_text("utf-8")

    assert _img_count(page) == 1
    assert "No rounds were recorded." in page
    assert "Local-only</th>" not in page  # no column for a model that never ran
    assert "no local-only or centralized baseline was run" in page


def test_strings_from_the_summary_are_escaped(tmp_path: Path) -> None:
    page = _render(tmp_path / "run", _evil_summary())[1].read_text("utf-8")

    assert "<script" not in page
    assert "<b>" not in page
    assert "<h3>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</h3>" in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in page
    assert _img_count(page) == 3


def test_headline_compares_federated_with_both_baselines() -> None:
    summary = parse_summary(make_regression_summary())

    assert headline_sentence(summary) == (
        "Federated model: RMSE 0.670 on the sites' test sets (weighted mean) vs 0.830 for "
        "local-only models (mean) and 0.630 centralized (training rows pooled)."
    )
    assert verdict_sentence(summary) == (
        "Federation recovers 80% of the gain that pooling all data centrally brings over "
        "local-only training."
    )


def test_verdict_says_when_federation_is_worse() -> None:
    data = make_classification_summary()
    data["pooled"]["federated"] = 0.6

    assert verdict_sentence(parse_summary(data)) == (
        "The federated model does worse than training on each site alone."
    )


def test_no_verdict_without_a_local_baseline() -> None:
    assert verdict_sentence(parse_summary(make_no_baselines_summary())) is None


def test_importing_the_package_does_not_load_matplotlib() -> None:
    code = "import sys, fedpharma.report; sys.exit('matplotlib' in sys.modules)"

    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
