"""The Python API's example script and notebook run as shipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_python_api_example_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "python_api.py"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert done.returncode == 0, done.stderr
    assert "row 3: no prediction (unparsable)" in done.stdout
    assert "same predictions" in done.stdout
    assert (tmp_path / "out" / "model" / "manifest.json").is_file()


def _code_cells() -> list[str]:
    notebook = json.loads((EXAMPLES / "quickstart.ipynb").read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]


def test_the_notebook_is_valid_and_its_code_compiles():
    cells = _code_cells()
    assert cells and any("fedpharma.load_model" in c for c in cells)
    for cell in cells:
        compile(cell, "quickstart.ipynb", "exec")


@pytest.mark.slow
def test_the_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for cell in _code_cells():
        exec(compile(cell, "quickstart.ipynb", "exec"), namespace)
    assert (tmp_path / "runs" / "notebook" / "model" / "manifest.json").is_file()
