"""How a simulation scales with its number of sites on each execution backend.

The same total data (a synthetic tabular regression set, ``--rows`` × ``--features``, written
once as CSV) is split into 10, 100 and 1,000 sites (``[partition] method = "quantity"`` with a
large α: near-equal shares), and ``--rounds`` FedAvg rounds of a small MLP run on each backend
of ``[simulation]``: sequential (the sites in the driver), processes (a pool of ``--workers``)
and ray (if installed). Each configuration runs in a fresh interpreter, which drives the
Federation directly over the backend's channel (no ``prepare_sites`` in the driver: on the
process and Ray backends the driver never loads a row). Reported per configuration: seconds to
start the backend (workers loading their sites), seconds per round, peak RSS of the driver and
peak RSS of the driver's whole process tree (sampled every 0.2 s from /proc; Ray's raylet, GCS
and actors are children of a local cluster's driver), next to the size of the data itself.

    .venv/bin/python benchmarks/scale_sites.py                      # 10, 100, 1000 sites
    .venv/bin/python benchmarks/scale_sites.py --sites 10,100 --backends sequential,processes

Writes ``benchmarks/results/scale_sites.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedpharma.core.config import (
    DatasetConfig,
    ModelConfig,
    PartitionConfig,
    RunConfig,
    SimulationConfig,
    StrategyConfig,
    TrainingConfig,
)
from fedpharma.models.factory import build_trainer
from fedpharma.server.plan import build_federation
from fedpharma.sim.backends import open_sites
from fedpharma.sim.sites import prepare_sites
from fedpharma.sim.tabular import preprocess_sites

ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Shape:
    task: str
    n_features: int
    n_tasks: int


def write_data(path: Path, rows: int, features: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, features))
    y = np.tanh(x @ rng.normal(size=features) / np.sqrt(features)) + 0.1 * rng.normal(size=rows)
    header = ",".join([f"f{i}" for i in range(features)] + ["y"])
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="", fmt="%.5f")


def make_config(data: Path, sites: int, backend: str, workers: int, rounds: int) -> RunConfig:
    return RunConfig(
        dataset=DatasetConfig(
            path=str(data), kind="tabular", label_columns=("y",), task="regression"
        ),
        partition=PartitionConfig(method="quantity", n_sites=sites, alpha=1000.0),
        model=ModelConfig(kind="mlp", hidden=(64,), dropout=0.0),
        training=TrainingConfig(batch_size=32, calibrate_output=False),
        strategy=StrategyConfig(name="fedavg", evaluate_every=0),
        simulation=SimulationConfig(backend=backend, workers=workers),
        rounds=rounds,
        baselines=False,
        privacy_audit=False,
    )


def fit_beforehand(config: RunConfig, run_dir: Path) -> None:
    """The consortium's tabular fit in ``run_dir``, made in this process as ``simulate``'s
    driver makes it before it opens the sites, so the measured interpreter loads no row."""
    run_dir.mkdir(parents=True)
    sim = prepare_sites(config)
    preprocess_sites(config, sim.sites, sim.dataset, run_dir, "scale", lambda _line: None)


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants, now."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += [child for child, parent in parents.items() if parent == pid]
    return total


class PeakSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.done = 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, tree_rss(os.getpid()))


def one(args: argparse.Namespace) -> dict[str, Any]:
    """One backend × sites configuration, in this interpreter."""
    backend, sites = args.one[0], int(args.one[1])
    config = make_config(args.data, sites, backend, args.workers, args.rounds)
    names = [f"site-{i}" for i in range(1, sites + 1)]
    sampler = PeakSampler()
    sampler.start()
    started = time.perf_counter()
    with open_sites(config, names, args.run_dir) as channel:
        setup = time.perf_counter() - started
        trainer = build_trainer(config, Shape("regression", args.features, 1))  # type: ignore[arg-type]
        federation = build_federation(
            config, planned_sites=sites, noise_rng=np.random.default_rng(0)
        )
        looped = time.perf_counter()
        federation.run(channel, trainer.initial_parameters(0), args.rounds, run_id="scale")
        loop = time.perf_counter() - looped
    sampler.done.set()
    sampler.join()
    return {
        "backend": backend,
        "sites": sites,
        "workers": args.workers if backend != "sequential" else 0,
        "setup_seconds": setup,
        "seconds_per_round": loop / args.rounds,
        "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tree_peak_rss_mb": sampler.peak / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", default="10,100,1000")
    parser.add_argument("--backends", default="sequential,processes,ray")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale_sites.json"
    )
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return 0
    backends = [b for b in args.backends.split(",") if b]
    if "ray" in backends and importlib.util.find_spec("ray") is None:
        print("ray is not installed (pip install 'fedpharma[ray]'): its rows are skipped")
        backends.remove("ray")
    work = Path(tempfile.mkdtemp(prefix="fedpharma-scale-data-"))
    data = work / "synthetic.csv"
    write_data(data, args.rows, args.features)
    data_mb = args.rows * (args.features + 1) * 4 / 2**20
    load = os.getloadavg()[0]
    print(f"data: {args.rows} rows × {args.features} features (float32 {data_mb:.1f} MB), "
          f"{args.rounds} rounds, {os.cpu_count()} cores, load {load:.1f}")  # fmt: skip
    print(f"{'backend':<11} {'sites':>6} {'start s':>8} {'s/round':>8} {'driver MB':>10} "
          f"{'tree MB':>8}")  # fmt: skip
    rows = []
    for backend in backends:
        for sites in (int(s) for s in args.sites.split(",")):
            run_dir = work / f"{backend}-{sites}"
            fit_beforehand(make_config(data, sites, backend, args.workers, args.rounds), run_dir)
            command = [sys.executable, __file__, "--one", backend, str(sites), "--data", str(data),
                       "--rounds", str(args.rounds), "--workers", str(args.workers),
                       "--features", str(args.features), "--run-dir", str(run_dir)]  # fmt: skip
            proc = subprocess.run(command, capture_output=True, text=True)
            shutil.rmtree(run_dir)
            if proc.returncode != 0:
                print(f"{backend:<11} {sites:>6} failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{backend:<11} {sites:>6} {row['setup_seconds']:>8.1f} "
                  f"{row['seconds_per_round']:>8.2f} {row['driver_peak_rss_mb']:>10.0f} "
                  f"{row['tree_peak_rss_mb']:>8.0f}")  # fmt: skip
    result = {
        "benchmark": "scale_sites",
        "data_mb_float32": data_mb,
        "rows": args.rows,
        "features": args.features,
        "rounds": args.rounds,
        "cores": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()),
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
