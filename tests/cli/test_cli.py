import json

from typer.testing import CliRunner

from fedpharma.cli.main import app

runner = CliRunner()


def test_demo_writes_summary_and_report(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--rounds", "2"])
    assert result.exit_code == 0, result.output
    assert "pooled" in result.output and "federated" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and len(summary["sites"]) == 4
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").stat().st_size > 10_000
    page = (out / "report.html").read_text()
    assert "Membership-inference audit" in page and "Cross-site evaluation" in page
    assert set(summary["privacy_audit"]["sites"]) == set(summary["sites"])
    assert summary["privacy_audit"]["sites"]["site-1"]["nonmember_shift"] is True  # scaffolds


def test_simulate_lists_every_config_problem(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('rounds = 0\n[model]\nkind = "cnn"\n[trainig]\nlocal_epochs = 1\n')
    result = runner.invoke(app, ["simulate", str(config)])
    assert result.exit_code == 2
    text = result.output
    assert "3 problem(s)" in text
    assert "rounds = 0" in text and "'cnn'" in text and "did you mean 'training'" in text


def test_simulate_runs_a_tabular_config(tmp_path):
    config = tmp_path / "bc.toml"
    config.write_text(
        'rounds = 5\n[dataset]\nname = "breast-cancer"\nkind = "tabular"\n'
        '[partition]\nmethod = "dirichlet"\nn_sites = 3\nalpha = 1.0\n'
        '[model]\nkind = "linear"\n[training]\nlocal_epochs = 2\nlearning_rate = 0.01\n'
        '[strategy]\nname = "fedprox"\n'
    )
    out = tmp_path / "run"
    result = runner.invoke(app, ["simulate", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"]["name"] == "roc_auc"
    assert summary["pooled"]["federated"] > 0.9


def test_report_on_missing_run_dir_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code != 0
    assert "summary.json" in result.output


def test_permutation_key_writes_a_private_key_once_and_prints_its_id(tmp_path):
    from fedpharma.data.permutation import load_permutation_key, permutation_key_id

    key = tmp_path / "consortium.key"
    result = runner.invoke(app, ["permutation-key", "--out", str(key)])
    assert result.exit_code == 0, result.output
    assert key.stat().st_mode & 0o777 == 0o600
    assert f'permutation_key_id = "{permutation_key_id(load_permutation_key(key))}"' in (
        result.output
    )
    again = runner.invoke(app, ["permutation-key", "--out", str(key)])
    assert again.exit_code != 0 and "refusing to overwrite" in again.output
