"""The command line's small promises: a version, and one line + non-zero exit on bad input."""

from __future__ import annotations

from typer.testing import CliRunner

import fedpharma
from fedpharma.cli.main import app

runner = CliRunner()


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"fedpharma {fedpharma.__version__}"


def _one_line_failure(result, code: int | None = None) -> str:
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def _write(path, text: str):
    path.write_text(text)
    return path


def test_classification_on_a_continuous_column_is_one_line_naming_it(molecules_csv, tmp_path):
    config = _write(
        tmp_path / "c.toml",
        f'rounds = 1\n[dataset]\npath = "{molecules_csv}"\nlabel_columns = ["pIC50"]\n'
        'task = "classification"\n',
    )
    out = tmp_path / "run"
    text = _one_line_failure(runner.invoke(app, ["simulate", str(config), "--out", str(out)]), 4)
    assert "'pIC50'" in text and "0 or 1" in text
    assert not out.exists()  # a failed run leaves no empty --out


def test_a_24_molecule_sdf_over_4_sites_is_one_line(tmp_path):
    from rdkit import Chem

    sdf = tmp_path / "mols.sdf"
    writer = Chem.SDWriter(str(sdf))
    for i in range(24):
        mol = Chem.MolFromSmiles("C" * (i % 6 + 1) + "O" + "c1ccccc1" * (i % 3))
        mol.SetProp("pIC50", str(5 + i / 10))
        writer.write(mol)
    writer.close()
    config = _write(
        tmp_path / "s.toml",
        'rounds = 1\n[dataset]\npath = "mols.sdf"\nlabel_columns = ["pIC50"]\n'
        'task = "regression"\n[partition]\nn_sites = 4\n',
    )
    out = tmp_path / "run"
    text = _one_line_failure(runner.invoke(app, ["simulate", str(config), "--out", str(out)]), 4)
    assert "too few held-out rows" in text and "n_sites" in text
    assert not out.exists()


def test_set_overrides_a_setting_and_its_problems_are_listed(tmp_path):
    config = _write(tmp_path / "bc.toml", '[dataset]\nname = "breast-cancer"\nkind = "tabular"\n')
    from fedpharma.core.config import load_config

    cfg = load_config(config, ["training.learning_rate=0.05", "strategy.name=fedadam"])
    assert cfg.training.learning_rate == 0.05 and cfg.strategy.name == "fedadam"
    result = runner.invoke(
        app, ["simulate", str(config), "--set", "training.learning_rate=0", "--set", "rounds"]
    )
    assert result.exit_code == 2
    assert "table.key=value" in result.output
    result = runner.invoke(app, ["simulate", str(config), "--set", "training.learning_rate=0"])
    assert result.exit_code == 2 and "learning_rate = 0.0: must be > 0" in result.output


def test_a_mistyped_value_gets_a_did_you_mean(tmp_path):
    config = _write(tmp_path / "t.toml", '[strategy]\nname = "fedadm"\n[model]\nkind = "MLP"\n')
    result = runner.invoke(app, ["simulate", str(config)])
    assert result.exit_code == 2
    assert "did you mean 'fedadam'" in result.output and "did you mean 'mlp'" in result.output


def test_a_relative_data_path_is_read_from_the_configs_folder(molecules_csv, tmp_path):
    from fedpharma.core.config import load_config

    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "data.csv").write_bytes(molecules_csv.read_bytes())
    config = _write(
        folder / "r.toml",
        '[dataset]\npath = "data.csv"\nlabel_columns = ["pIC50"]\ntask = "regression"\n',
    )
    assert load_config(config).dataset.path == str(folder / "data.csv")


def test_privacy_on_an_empty_ledger_says_so_and_reads_the_given_policy(tmp_path):
    from fedpharma.core.config import SitePolicyConfig, site_policy_toml
    from fedpharma.site.policy import SitePolicy

    site = tmp_path / "site"
    site.mkdir()
    SitePolicy(SitePolicyConfig(record_epsilon=4.0), site / "privacy.sqlite")
    owner = _write(tmp_path / "owner.toml", site_policy_toml(SitePolicyConfig(record_epsilon=4.0)))
    result = runner.invoke(app, ["privacy", str(site), "--policy", str(owner)])
    assert result.exit_code == 0, result.output
    assert "holds no charge" in result.output and "record-level ε = 4" in result.output
    missing = runner.invoke(app, ["privacy", str(site)])  # no policy.toml in the folder
    _one_line_failure(missing)
