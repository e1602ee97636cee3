"""`fedpharma schema infer`: the inferred schema printed or saved, read back by a run."""

from typer.testing import CliRunner

from fedpharma.cli.main import app
from fedpharma.data.schema import load_schema

runner = CliRunner()


def test_schema_infer_writes_a_file_a_run_reads_back(tmp_path):
    data = tmp_path / "trial.csv"
    data.write_text("age,crp,site,outcome\n61,?,a,1\n45,3.5,b,0\n", encoding="utf-8")
    printed = runner.invoke(app, ["schema", "infer", str(data), "--label", "outcome"])
    assert printed.exit_code == 0, printed.output
    assert 'name = "crp"\ntype = "float"' in printed.output and 'missing = ["?"]' in printed.output
    out = tmp_path / "trial.schema.toml"
    saved = runner.invoke(
        app,
        ["schema", "infer", str(data), "--label", "outcome", "--site", "site", "--out", str(out)],
    )
    assert saved.exit_code == 0, saved.output
    schema = load_schema(out)
    assert schema.site_column == "site" and schema.label_columns == ("outcome",)
    missing = runner.invoke(app, ["schema", "infer", str(data), "--label", "death"])
    assert missing.exit_code != 0 and "lacks columns: death" in missing.output
