"""The README's commands work: the quick start runs as written (in CI), every `fedpharma`
command it shows exists with the options it uses, and the long ones run under ``-m slow``."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedpharma.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CLI = [sys.executable, "-c", "from fedpharma.cli.main import app; app(prog_name='fedpharma')"]
SHARED_DATA = ROOT.parent / "shared" / "data"


def _bash_blocks() -> list[list[str]]:
    """Each ```bash block's command lines, comments stripped."""
    blocks = re.findall(r"^```bash\n(.*?)^```", README, flags=re.S | re.M)
    blocks = [block.replace("\\\n", " ") for block in blocks]  # join continued lines
    return [
        [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
        for block in blocks
    ]


def _inline_commands() -> set[str]:
    return set(re.findall(r"`((?:fedpharma|\./run|\.venv/bin/python) [^`]*)`", README))


def _fedpharma(args: list[str], cwd: Path, timeout: float = 300):
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _quick_start() -> list[str]:
    block = next(b for b in _bash_blocks() if any("fedpharma export" in c for c in b))
    return [c.replace("examples/", f"{ROOT}/examples/") for c in block]


@pytest.mark.timeout(900)  # four processes, the demo's baselines and audit included
def test_the_quick_start_runs_as_written(tmp_path):
    commands = _quick_start()
    assert [shlex.split(c)[1] for c in commands] == ["demo", "export", "predict", "report"]
    for command in commands:
        done = _fedpharma(shlex.split(command)[1:], tmp_path)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert rows[0] == "row,pIC50,status" and len(rows) == 6
    assert all(row.endswith(",ok") for row in rows[1:])
    assert (tmp_path / "runs" / "demo" / "report.html").is_file()


def _commands_shown() -> list[list[str]]:
    shown = [c for block in _bash_blocks() for c in block] + sorted(_inline_commands())
    return [shlex.split(c.replace("|", " ").replace("<", "").replace(">", "")) for c in shown]


def test_every_fedpharma_command_the_readme_shows_exists_with_its_options():
    """A renamed command or option fails here, not in a reader's shell."""
    checked = 0
    for words in _commands_shown():
        if words[0] != "fedpharma":
            continue
        subcommand = [w for w in words[1:3] if re.fullmatch(r"[a-z][a-z-]*", w)]
        if words[1:2] == ["--version"]:
            subcommand = []
        if subcommand[:1] not in (["audit"], ["schema"]):
            subcommand = subcommand[:1]
        done = CliRunner().invoke(app, [*subcommand, "--help"], terminal_width=200)
        assert done.exit_code == 0, f"{' '.join(words)}: {done.output}"
        for option in (w.split("=")[0] for w in words if w.startswith("--")):
            assert option in done.output, f"{' '.join(words)}: no option {option}"
        checked += 1
    assert checked >= 20


def test_every_run_job_and_benchmark_the_readme_shows_exists():
    jobs = set(re.findall(r"^  (\w+)\)", (ROOT / "run").read_text(), flags=re.M))
    for words in _commands_shown():
        if words[0] == "./run":
            assert words[1] in jobs, words
        elif words[0] == ".venv/bin/python":
            script = ROOT / words[1]
            assert script.is_file(), words
            for option in (w for w in words[2:] if w.startswith("--")):
                assert option in script.read_text(), f"{words[1]} has no option {option}"


@pytest.mark.slow
def test_the_long_readme_commands_run(tmp_path):
    """`./run demo` (the full 30-round demo), provisioning the deployment example, and the ESOL
    example with overrides where its data is present. The deployment's server and site commands
    run as processes in tests/integration/test_deployment.py."""
    done = _fedpharma(["demo", "--out", str(tmp_path / "demo")], tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr
    block = next(b for b in _bash_blocks() if any("provision" in c for c in b))
    provision = shlex.split(block[0].replace("examples/deploy/pki", str(tmp_path / "pki")))
    done = _fedpharma(provision[1:], tmp_path)
    assert done.returncode == 0, done.stderr
    if SHARED_DATA.is_dir():
        esol = next(c for c in _inline_commands() if "esol_fedadam" in c)
        args = [*shlex.split(esol)[1:], "--out", str(tmp_path / "esol")]
        args = [a.replace("examples/", f"{ROOT}/examples/") for a in args]
        done = _fedpharma(args, tmp_path, 900)
        assert done.returncode == 0, done.stderr
