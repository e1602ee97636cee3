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
