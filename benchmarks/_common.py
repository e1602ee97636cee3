"""Small helpers shared by the benchmark scripts: data location, machine info, JSON, tables.

Benchmarks read public datasets from ``../shared/data`` (relative to the project root), or from
the folder named by the environment variable ``FEDPHARMA_SHARED_DATA``; they never copy them
into the repository.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"  # git-ignored
SHARED_DATA_ENV = "FEDPHARMA_SHARED_DATA"


def shared_data_dir() -> Path:
    """``$FEDPHARMA_SHARED_DATA`` if set, else ``<project root>/../shared/data``."""
    override = os.environ.get(SHARED_DATA_ENV)
    return Path(override) if override else PROJECT_ROOT.parent / "shared" / "data"


def require_shared_file(name: str) -> Path:
    """The shared data file ``name``, or exit with a clear message if it is absent."""
    path = shared_data_dir() / name
    if not path.exists():
        sys.exit(
            f"benchmark data {path} not found: put the public datasets in ../shared/data "
            f"or point {SHARED_DATA_ENV} at the folder that holds them"
        )
    return path


def machine_info() -> dict[str, Any]:
    """CPU model (from /proc/cpuinfo where available), core count, Python and torch versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    try:
        from rdkit import rdBase

        info["rdkit"] = rdBase.rdkitVersion
    except ImportError:
        pass
    with contextlib.suppress(OSError):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def write_json(path: Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON (NaN/inf become null), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(payload), indent=2) + "\n", encoding="utf-8")
    return path


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table; floats with 3 decimals, ``None`` as ``–``; first column left-aligned."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "–"
        if isinstance(value, float):
            return f"{value:.3f}"
        return str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        parts = [v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in pairs]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print(format_table(headers, rows), flush=True)
