"""Mutation testing of the modules that carry fedpharma's promises (mutmut 3), on demand.

    ./run mutation                  # the modules in DEFAULT_KEYS
    ./run mutation params codec     # only these (keys of MODULES, or module paths)
    ./run mutation secagg           # a group: every secagg-* key (or a package's path)
    ./run mutation --list           # the module → tests table

Each module is mutated on its own, in a scratch copy of the tree under ``build/mutation/<key>``,
and each mutant runs only the fast test files listed for its module in MODULES (mutmut further
narrows them to the tests that call the mutated function), with mutmut's per-mutant CPU-time
limit and one worker. The script then prints one table — module, mutants, killed, survived,
timeout, % killed — and every surviving mutant as ``file:line`` and its diff. "No tests"
(no listed test reaches the mutated function) counts as survived. The exit status is 1 when a
module is below ``--min-killed`` (85 % by default).

Not part of CI: a full run takes tens of minutes. See README, "Development notes".
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"
VENV_BIN = ROOT / ".venv" / "bin"

# The promise-carrying modules and the FAST test files that exercise each (a mutant must cost
# seconds, not the whole suite). After moving code, update this table and DEFAULT_KEYS.
SECAGG_TESTS = (
    "tests/secure/test_secagg.py",
    "tests/secure/test_secagg_masks.py",
    "tests/secure/test_secagg_messages.py",
    "tests/attacks/test_secagg_active.py",
    "tests/secure/test_secagg_round_rules.py",
    "tests/secure/test_secagg_key_agreement.py",
    "tests/secure/test_secagg_message_refusals.py",
    "tests/secure/test_secagg_site_refusals.py",
    "tests/secure/test_secagg_server_refusals.py",
)
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    # key: (module path under src/, the test files its mutants run)
    "params": (
        "fedpharma/core/params.py",
        ("tests/core/test_params.py", "tests/core/test_params_guards.py"),
    ),
    "codec": (
        "fedpharma/core/protocol/codec.py",
        ("tests/core/test_codec.py", "tests/core/test_codec_guards.py"),
    ),
    "messages": (
        "fedpharma/core/protocol/messages.py",
        ("tests/core/test_reply_validation.py", "tests/core/test_reply_acceptance.py"),
    ),
    "aggregate": (
        "fedpharma/strategy/aggregate.py",
        ("tests/strategy/test_aggregate.py", "tests/strategy/test_aggregate_guards.py"),
    ),
    "audit": (
        "fedpharma/server/audit.py",
        ("tests/server/test_audit.py", "tests/server/test_audit_chain_guards.py"),
    ),
    "ledger": (
        "fedpharma/privacy/ledger.py",
        ("tests/privacy/test_privacy_ledger.py", "tests/privacy/test_ledger_refusals.py"),
    ),
    "accountant": (
        "fedpharma/privacy/accountant.py",
        ("tests/privacy/test_privacy_accountant.py", "tests/privacy/test_accountant_arguments.py"),
    ),
    "shamir": (
        "fedpharma/secure/shamir.py",
        ("tests/secure/test_secure_shamir.py", "tests/secure/test_shamir_field_bounds.py"),
    ),
    "quantize": (
        "fedpharma/secure/quantize.py",
        ("tests/secure/test_secure_quantize.py", "tests/secure/test_quantize_limits.py"),
    ),
    "join": (
        "fedpharma/server/join.py",
        (
            "tests/server/test_join.py",
            "tests/server/test_join_check.py",
            "tests/server/test_join_delivery.py",
            "tests/server/test_join_wait.py",
            "tests/server/test_join_refusal_messages.py",
            "tests/server/test_join_description_exchange.py",
            "tests/server/test_join_log.py",
        ),
    ),
    "round": (
        "fedpharma/server/round.py",
        (
            "tests/server/test_federation.py",
            "tests/server/test_reply_sorting.py",
            "tests/server/test_site_seeds.py",
        ),
    ),
    "federation": (
        "fedpharma/server/federation.py",
        (
            "tests/server/test_federation.py",
            "tests/server/test_federation_hand_offs.py",
            "tests/server/test_federation_run_control.py",
            "tests/server/test_federation_secure_path.py",
        ),
    ),
    # The secure-aggregation package, one key per module (``./run mutation secagg`` runs all).
    **{
        f"secagg-{name}": (f"fedpharma/secure/secagg/{name}.py", SECAGG_TESTS + extra)
        for name, extra in (
            ("round", ()),
            ("masks", ()),
            ("messages", ("tests/attacks/test_decoders.py",)),
            ("site", ()),
            ("server", ()),
        )
    },
}
DEFAULT_KEYS = (  # cheapest first
    "aggregate",
    "messages",
    "shamir",
    "quantize",
    "codec",
    "audit",
    "params",
    "accountant",
    "ledger",
    "round",
    "secagg-round",
    "secagg-masks",
    "federation",
    "secagg-messages",
    "secagg-site",
    "secagg-server",
    "join",
)

# Each mutant's tests run in a process forked from mutmut's: a BLAS/OpenMP thread pool inherited
# across the fork spins (torch training then burns the CPU-time limit), so one thread each.
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

# mutmut exit codes (mutmut.stats.status_by_exit_code), reduced to the table's columns.
KILLED_CODES = {1, 3, 37}
TIMEOUT_CODES = {24, -24, 36, 152, 255}


@dataclass
class ModuleResult:
    key: str
    module: str
    codes: dict[str, int | None] = field(default_factory=dict)
    survivors: list[tuple[str, int, str]] = field(default_factory=list)  # (name, line, diff)
    seconds: float = 0.0

    def count(self, codes: set[int]) -> int:
        return sum(1 for c in self.codes.values() if c in codes)

    @property
    def killed(self) -> int:
        return self.count(KILLED_CODES)

    @property
    def timeout(self) -> int:
        return self.count(TIMEOUT_CODES)

    @property
    def survived(self) -> int:
        return len(self.codes) - self.killed - self.timeout

    @property
    def percent_killed(self) -> float:
        """Killed or timed out (a mutant that hangs the tests is caught), over all mutants."""
        total = len(self.codes)
        return 100.0 * (self.killed + self.timeout) / total if total else 100.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="keys of MODULES (default: the stable ones)")
    parser.add_argument("--list", action="store_true", help="print the module → tests table")
    parser.add_argument("--min-killed", type=float, default=85.0, help="percent; default 85")
    parser.add_argument(
        "--timeout-multiplier", type=float, default=10.0, help="mutmut's CPU-time factor"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.list:
        for key, (module, tests) in MODULES.items():
            print(f"{key:<16} src/{module:<36} {' '.join(tests)}")
        return 0
    keys = [key for name in args.modules for key in _keys(name)] or list(DEFAULT_KEYS)
    results = [run_module(key, args.timeout_multiplier) for key in keys]
    print_report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([_as_dict(r) for r in results], indent=1) + "\n")
    return 0 if all(r.percent_killed >= args.min_killed for r in results) else 1


def _keys(name: str) -> list[str]:
    """A key of MODULES, a module path, or a group: a package path or a key prefix (``secagg``
    for every ``secagg-*`` key)."""
    if name in MODULES:
        return [name]
    path = name.removeprefix("src/").removesuffix(".py").replace(".", "/").rstrip("/")
    keys = [
        key
        for key, (module, _) in MODULES.items()
        if module == path + ".py" or module.startswith(path + "/") or key.startswith(name + "-")
    ]
    if not keys:
        sys.exit(f"unknown module {name!r}; one of {sorted(MODULES)} (see --list)")
    return keys


def run_module(key: str, timeout_multiplier: float) -> ModuleResult:
    """Mutate one module in a fresh scratch tree and collect each mutant's mutmut exit code."""
    module, tests = MODULES[key]
    missing = [t for t in (f"src/{module}", *tests) if not (ROOT / t).exists()]
    if missing:
        sys.exit(f"{key}: {missing} not found; update MODULES in {Path(__file__).name}")
    work = WORK / key
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    shutil.copytree(ROOT / "tests", work / "tests")
    config = {
        "source_paths": ["src"],
        "only_mutate": [f"src/{module}"],
        "pytest_add_cli_args_test_selection": list(tests),
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-p", "no:randomly"],
        "timeout_multiplier": timeout_multiplier,
        "use_git_change_detection": False,
    }
    pyproject = (ROOT / "pyproject.toml").read_text() + "\n[tool.mutmut]\n"
    pyproject += "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())
    (work / "pyproject.toml").write_text(pyproject)

    print(f"== {key}: src/{module} against {' '.join(tests)}", flush=True)
    start = time.monotonic()
    log = work / "mutmut.log"
    with log.open("w") as out:
        completed = subprocess.run(
            [str(VENV_BIN / "mutmut"), "run", "--max-children", "1"],
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            env=os.environ | SINGLE_THREADED,
        )
    result = ModuleResult(key, module, seconds=time.monotonic() - start)
    meta = work / "mutants" / "src" / (module + ".meta")
    if completed.returncode != 0 or not meta.exists():
        sys.exit(f"{key}: mutmut failed (exit {completed.returncode}); see {log}")
    result.codes = json.loads(meta.read_text())["exit_code_by_key"]
    source = (ROOT / "src" / module).read_text()
    for name, code in sorted(result.codes.items()):
        if code not in KILLED_CODES | TIMEOUT_CODES:
            diff, offset = _show(work, name)
            result.survivors.append((name, _line_of(source, name, diff, offset), diff))
    print(
        f"   {len(result.codes)} mutants, {result.percent_killed:.1f} % killed, "
        f"{result.seconds:.0f} s",
        flush=True,
    )
    return result


def _show(work: Path, name: str) -> tuple[str, int | None]:
    """The mutant's diff (removed and added lines) and the line of the first removed one,
    counted from its function's ``def`` (mutmut diffs the function alone), when known."""
    shown = subprocess.run(
        [str(VENV_BIN / "mutmut"), "show", name],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    offset = None
    for ln in shown.splitlines():
        if ln.startswith("@@ -") and offset is None:
            offset = int(ln[4:].split(",")[0].split(" ")[0])
        elif offset is not None and ln.startswith("-") and not ln.startswith("--- "):
            break
        elif offset is not None and ln.startswith(" "):
            offset += 1
    # drop the "# name: status" line, the ---/+++ file header and the @@ hunk headers
    keep = [ln for ln in shown.splitlines() if not ln.startswith(("# ", "--- ", "+++ "))]
    return "\n".join(ln for ln in keep if ln.startswith(("-", "+"))), offset


def _line_of(source: str, name: str, diff: str, offset: int | None = None) -> int:
    """The source line a mutant changes: ``offset`` lines into its function if that line is the
    first removed one, else the first line of the function that is."""
    function = name.rsplit(".", 1)[-1].split("__mutmut_")[0]  # x_func or xǁClassǁmethod
    parts = function.removeprefix("x").strip("ǁ_").split("ǁ") if "ǁ" in function else None
    wanted = parts[-1] if parts else function.removeprefix("x_")
    owner = parts[0] if parts and len(parts) > 1 else None
    start, end = 1, source.count("\n") + 1
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and owner and node.name == owner:
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and (
                    item.name == wanted
                ):
                    start, end = item.lineno, item.end_lineno or end
        elif isinstance(node, ast.FunctionDef) and not owner and node.name == wanted:
            start, end = node.lineno, node.end_lineno or end
    removed = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-")]
    lines = source.splitlines()
    at = start + offset - 1 if offset is not None else 0
    if removed and start <= at <= min(end, len(lines)) and lines[at - 1].strip() == removed[0]:
        return at
    for number in range(start, end + 1):
        if removed and removed[0] and lines[number - 1].strip() == removed[0]:
            return number
    return start


def print_report(results: list[ModuleResult]) -> None:
    columns = ("mutants", "killed", "survived", "timeout", "% killed")
    width = max([34] + [len(r.module) + 5 for r in results])
    header = f"{'module':<{width}} " + " ".join(f"{c:>8}" for c in columns)
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{'src/' + r.module:<{width}} {len(r.codes):>8} {r.killed:>8} {r.survived:>8} "
            f"{r.timeout:>8} {r.percent_killed:>7.1f}%"
        )
    for r in results:
        if r.survivors:
            print(f"\nSurviving mutants of src/{r.module}:")
        for name, line, diff in r.survivors:
            status = "no tests" if r.codes[name] in {5, 33} else "survived"
            print(f"  src/{r.module}:{line}  {name.rsplit('.', 1)[-1]} ({status})")
            for ln in diff.splitlines():
                print(f"      {ln}")


def _as_dict(r: ModuleResult) -> dict[str, object]:
    return {
        "module": r.module,
        "mutants": len(r.codes),
        "killed": r.killed,
        "survived": r.survived,
        "timeout": r.timeout,
        "percent_killed": round(r.percent_killed, 1),
        "seconds": round(r.seconds),
        "survivors": [{"name": n, "line": ln, "diff": d} for n, ln, d in r.survivors],
    }


if __name__ == "__main__":
    sys.exit(main())
