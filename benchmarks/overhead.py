"""What does fedpharma cost on top of the local training it orchestrates?

One simulated workload (default: 10 sites × 20 rounds, 1 local epoch, MLP 2048→512→128→t on
Morgan fingerprints, Adam, batch 64, FedAvg, evaluation only after the last round) is run:

(a) through fedpharma: ``simulate()`` with ``baselines=False``, ``privacy_audit=False`` and
    ``evaluate_every=0``, i.e. the preprocessing check at join, the Federation round loop, the
    in-process channel, the wire codec on every task and reply, the site runtime, the run store
    (SQLite, one checkpoint per round) and the final evaluation;
(b) as a bare PyTorch loop doing the same local training (same network and initial weights, same
    data per site, same epochs / batch size / optimizer, same minibatch order and dropout seeds)
    and FedAvg of state dicts in plain torch;
(c) optionally, through Flower's simulation engine (``--flower-python``: a separate venv that runs
    ``benchmarks/flower_reference.py`` on the very same per-site arrays, exported to an .npz),
    compared with (d) fedpharma on its process-pool backend (``[simulation] backend =
    "processes"``), both on all ``--cores`` with one torch thread per training site: Flower's
    Ray actors and fedpharma's workers alike. The peer comparison is rounds only (Flower's
    first to last round; fedpharma's federated loop), with both end-to-end times beside it.

Both in-process runs are interleaved and repeated (``--repeats``, default 3) and the median is
reported (the minimum too), for each torch thread setting given in ``--threads`` (default "1,2":
on 2 vCPUs two intra-op threads can be slower than one when another process competes). The
first setting is the headline one and is the setting Flower gets.

Run from the repository root::

    .venv/bin/python benchmarks/overhead.py                       # fedpharma vs bare
    .venv/bin/python benchmarks/overhead.py --flower-python /work/flower-venv/bin/python

Targets: fedpharma / bare ≤ 1.15×; Flower / fedpharma (process pool, rounds only) ≥ 3×; final
metrics equal within 1e-3.
Writes ``benchmarks/results/overhead.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import inspect
import io
import json
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from fedpharma.core.config import (
    DatasetConfig,
    ModelConfig,
    PartitionConfig,
    RunConfig,
    SimulationConfig,
    StrategyConfig,
    TrainingConfig,
)
from fedpharma.core.dataset import dense
from fedpharma.evaluation.metrics import PRIMARY_METRIC, compute_metrics
from fedpharma.sim import engine
from fedpharma.sim.engine import Simulation, prepare_sites

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
TOX21_TASKS = (
    "NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD", "NR-PPAR-gamma",
    "SR-ARE", "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53",
)  # fmt: skip
TARGET_OVERHEAD = 1.15
TARGET_FLOWER_SPEEDUP = 3.0


# ----- workload -------------------------------------------------------------------------------


def make_config(args: argparse.Namespace) -> RunConfig:
    if args.dataset == "chembl2321810":
        dataset = DatasetConfig(name="chembl2321810")
    elif args.dataset == "tox21":
        path = SHARED_DATA / "tox21.csv.gz"
        if not path.exists():
            sys.exit(f"--dataset tox21 needs {path} (the shared data folder); it is absent")
        dataset = DatasetConfig(path=str(path), label_columns=TOX21_TASKS, task="classification")
    else:  # argparse restricts the choices
        raise ValueError(args.dataset)
    return RunConfig(
        dataset=dataset,
        partition=PartitionConfig(method="scaffold", n_sites=args.sites),
        model=ModelConfig(kind="mlp", hidden=(512, 128), dropout=0.1),
        # No output-layer calibration: the bare loop and Flower start from the same raw weights,
        # so all three do identical training and only the framework around it differs.
        training=TrainingConfig(
            local_epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            calibrate_output=False,
        ),
        strategy=StrategyConfig(name="fedavg", evaluate_every=0),
        rounds=args.rounds,
        seed=args.seed,
        baselines=False,
        privacy_audit=False,  # an analysis after training, which the other two runs do not do
    )


def site_seed(run_seed: int, rnd: int, site: str) -> int:
    """The per-(round, site) seed fedpharma hands a site; re-derived so the runs draw alike."""
    entropy = [run_seed, rnd, zlib.crc32(site.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


def initial_arrays(config: RunConfig, sim: Simulation) -> list[np.ndarray]:
    """fedpharma's initial weights for ``config.seed`` (all three runs start from them)."""
    trainer = engine.build_trainer(config, sim.dataset)
    return [np.array(a) for a in trainer.initial_parameters(config.seed).arrays]


# ----- (a) fedpharma --------------------------------------------------------------------------


def on_cores(config: RunConfig, cores: int) -> RunConfig:
    """``config`` on the process-pool backend with one worker per core."""
    return dataclasses.replace(
        config, simulation=SimulationConfig(backend="processes", workers=cores)
    )


def run_fedpharma(config: RunConfig, sim: Simulation, workdir: Path) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="fedpharma-", dir=workdir))
    if "prepared" in inspect.signature(engine.simulate).parameters:
        started = time.perf_counter()
        result = engine.simulate(config, run_dir, prepared=sim)
        seconds = time.perf_counter() - started
    else:  # an engine without `prepared`: keep the prepared sites by handing them back
        original = engine.prepare_sites
        engine.prepare_sites = lambda _cfg: sim  # type: ignore[assignment]
        try:
            started = time.perf_counter()
            result = engine.simulate(config, run_dir)
            seconds = time.perf_counter() - started
        finally:
            engine.prepare_sites = original
    # The runs are compared on one definition: the metric of the concatenated test sets, as the
    # bare loop and Flower score it (fedpharma's own pooled figure is the test-size-weighted mean
    # of the sites' metrics, reported beside it).
    trainer = engine.build_trainer(config, sim.dataset)
    tests = [d.test for d in sim.sites.values()]
    predictions = np.concatenate([trainer.predict(result.parameters, t) for t in tests])
    labels = np.concatenate([t.dense_labels() for t in tests])
    return {
        "seconds": seconds,
        "loop_seconds": result.summary.timings.federated_seconds,
        "metric": pooled_metric(sim.dataset.task == "classification", labels, predictions),
        "metric_sites_weighted": result.summary.pooled.federated,
        "metric_name": result.summary.metric.name,
    }


# ----- (b) bare PyTorch -----------------------------------------------------------------------


@dataclass(frozen=True)
class BareSite:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: np.ndarray


def bare_network(n_features: int, n_tasks: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_features, 512), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(512, 128), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(128, n_tasks),
    )  # fmt: skip


def masked_loss(outputs: torch.Tensor, labels: torch.Tensor, classification: bool) -> torch.Tensor:
    observed = ~torch.isnan(labels)
    targets = torch.where(observed, labels, torch.zeros((), dtype=labels.dtype))
    if classification:
        loss = functional.binary_cross_entropy_with_logits(outputs, targets, reduction="none")
    else:
        loss = (outputs - targets).square()
    return torch.where(observed, loss, torch.zeros(())).sum() / observed.sum().clamp(min=1)


def pooled_metric(classification: bool, labels: np.ndarray, predictions: np.ndarray) -> float:
    """Mean over tasks of ROC-AUC (classification) or RMSE (regression), observed labels only."""
    from sklearn.metrics import roc_auc_score

    scores = []
    for t in range(labels.shape[1]):
        seen = ~np.isnan(labels[:, t])
        y, p = labels[seen, t], predictions[seen, t].astype(np.float64)
        if classification:
            if len(np.unique(y)) == 2:
                scores.append(roc_auc_score(y, p))
        elif len(y):
            scores.append(math.sqrt(float(np.mean((y - p) ** 2))))
    return float(np.mean(scores)) if scores else float("nan")


def bare_sites(sim: Simulation) -> list[BareSite]:
    return [
        BareSite(
            name,
            torch.from_numpy(np.ascontiguousarray(dense(d.train.features), dtype=np.float32)),
            torch.from_numpy(d.train.dense_labels()),
            torch.from_numpy(np.ascontiguousarray(dense(d.test.features), dtype=np.float32)),
            d.test.dense_labels(),
        )
        for name, d in sim.sites.items()
    ]


def run_bare(
    config: RunConfig, sites: list[BareSite], init: list[np.ndarray], classification: bool
) -> dict[str, Any]:
    """FedAvg in plain torch: per round, each site trains from the global weights; average."""
    started = time.perf_counter()
    n_features, n_tasks = sites[0].x_train.shape[1], init[-1].shape[0]
    model = bare_network(n_features, n_tasks, config.model.dropout)
    keys = list(model.state_dict())
    global_state = {k: torch.tensor(a) for k, a in zip(keys, init, strict=True)}
    cfg = config.training
    for rnd in range(1, config.rounds + 1):
        total = sum(len(s.x_train) for s in sites)
        new_state = {k: torch.zeros_like(v) for k, v in global_state.items()}
        for site in sites:
            model.load_state_dict(global_state)
            model.train()
            optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, fused=True)
            seed = site_seed(config.seed, rnd, site.name)
            shuffle_seed, dropout_seed = np.random.SeedSequence(seed).generate_state(2, np.uint64)
            shuffler = torch.Generator().manual_seed(int(shuffle_seed))
            n = len(site.x_train)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(dropout_seed))
                for _ in range(cfg.local_epochs):
                    for rows in torch.split(torch.randperm(n, generator=shuffler), cfg.batch_size):
                        optimizer.zero_grad()
                        loss = masked_loss(model(site.x_train[rows]), site.y_train[rows],
                                           classification)  # fmt: skip
                        loss.backward()
                        optimizer.step()
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    new_state[k].add_(v, alpha=n / total)
        global_state = new_state
    model.load_state_dict(global_state)
    model.eval()
    with torch.inference_mode():
        outputs = [model(s.x_test) for s in sites]
        if classification:
            outputs = [torch.sigmoid(o) for o in outputs]
    predictions = np.concatenate([o.numpy() for o in outputs])
    labels = np.concatenate([s.y_test for s in sites])
    metric = pooled_metric(classification, labels, predictions)
    seconds = time.perf_counter() - started
    task = "classification" if classification else "regression"
    name = PRIMARY_METRIC[task][0]
    return {
        "seconds": seconds,
        "metric": metric,
        "metric_name": name,
        # the same predictions scored by fedpharma's own metric code, as a cross-check
        "metric_fedpharma_scorer": compute_metrics(task, labels, predictions)[name],
    }


# ----- (c) Flower -----------------------------------------------------------------------------


def export_npz(path: Path, config: RunConfig, sim: Simulation, init: list[np.ndarray]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for i, (name, d) in enumerate(sim.sites.items()):
        arrays[f"site{i}_x_train"] = np.ascontiguousarray(dense(d.train.features))
        arrays[f"site{i}_y_train"] = d.train.dense_labels()
        arrays[f"site{i}_x_test"] = np.ascontiguousarray(dense(d.test.features))
        arrays[f"site{i}_y_test"] = d.test.dense_labels()
        arrays[f"site{i}_name"] = np.array(name)
    for j, a in enumerate(init):
        arrays[f"init{j}"] = a
    meta = {
        "n_sites": len(sim.sites),
        "n_init": len(init),
        "task": sim.dataset.task,
        "rounds": config.rounds,
        "seed": config.seed,
        "local_epochs": config.training.local_epochs,
        "batch_size": config.training.batch_size,
        "learning_rate": config.training.learning_rate,
        "dropout": config.model.dropout,
        "hidden": list(config.model.hidden),
    }
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


def run_flower(python: str, npz: Path, threads: int, cores: int, timeout: float) -> dict[str, Any]:
    script = Path(__file__).resolve().parent / "flower_reference.py"
    out = npz.with_suffix(f".flower-{time.monotonic_ns()}.json")
    env = os.environ | {
        "FLWR_TELEMETRY_ENABLED": "0",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "RAY_DEDUP_LOGS": "0",
    }
    command = [
        python,
        str(script),
        "--data",
        str(npz),
        "--threads",
        str(threads),
        "--cores",
        str(cores),
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        raise RuntimeError(f"Flower run failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    result["end_to_end_seconds"] = wall
    return result


# ----- reporting ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_at_start": list(os.getloadavg()),
    }


def summarize(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def profile_fedpharma(config: RunConfig, sim: Simulation, workdir: Path, path: Path) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    run_fedpharma(config, sim, workdir)
    profiler.disable()
    profiler.dump_stats(path)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    return text.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("chembl2321810", "tox21"), default="chembl2321810")
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; median reported")
    parser.add_argument(
        "--threads", default="1,2", help="torch intra-op thread counts to measure; first = headline"
    )
    parser.add_argument("--flower-python", help="python of a venv with flwr[simulation] + torch")
    parser.add_argument(
        "--cores", type=int, default=os.cpu_count() or 1, help="for the process pool and Flower"
    )
    parser.add_argument("--flower-repeats", type=int, default=2)
    parser.add_argument("--flower-timeout", type=float, default=1800.0)
    parser.add_argument("--profile", type=Path, help="also cProfile one fedpharma run to this file")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "overhead.json"
    )
    args = parser.parse_args(argv)
    thread_settings = [int(t) for t in args.threads.split(",")]

    info = machine()
    print(f"machine: {info['cpu']}, {info['logical_cores']} logical cores "
          f"({info['usable_cores']} usable), torch {info['torch']}, python {info['python']}, "
          f"load average {info['load_average_at_start'][0]:.2f}")  # fmt: skip
    config = make_config(args)
    started = time.perf_counter()
    sim = prepare_sites(config)
    prepare_seconds = time.perf_counter() - started
    classification = sim.dataset.task == "classification"
    n_train = [len(d.train) for d in sim.sites.values()]
    print(f"workload: {args.dataset}, {len(sim.dataset)} molecules → {len(sim.sites)} sites "
          f"(train rows {min(n_train)}–{max(n_train)}, total {sum(n_train)}), "
          f"{args.rounds} rounds × {args.epochs} epoch, batch {args.batch_size}, "
          f"Adam lr {args.lr}, MLP "
          f"{sim.dataset.n_features}→512→128→{sim.dataset.n_tasks}; data prepared in "
          f"{prepare_seconds:.1f} s (not timed below)")  # fmt: skip
    init = initial_arrays(config, sim)
    sites = bare_sites(sim)
    workdir = Path(tempfile.mkdtemp(prefix="fedpharma-overhead-"))

    # Warm-up (first-call costs of torch / sklearn / sqlite), not counted.
    torch.set_num_threads(thread_settings[0])
    warm = make_config(args.__class__(**(vars(args) | {"rounds": 1})))
    run_fedpharma(warm, sim, workdir)
    run_bare(warm, sites, init, classification)

    per_threads: dict[str, Any] = {}
    for threads in thread_settings:
        torch.set_num_threads(threads)
        fed_runs, bare_runs = [], []
        for i in range(args.repeats):
            # alternate the order so that drifting background load hits both alike
            if i % 2 == 0:
                fed_runs.append(run_fedpharma(config, sim, workdir))
                bare_runs.append(run_bare(config, sites, init, classification))
            else:
                bare_runs.append(run_bare(config, sites, init, classification))
                fed_runs.append(run_fedpharma(config, sim, workdir))
        fed = summarize([r["seconds"] for r in fed_runs])
        bare = summarize([r["seconds"] for r in bare_runs])
        per_threads[str(threads)] = {
            "fedpharma": {
                "seconds": fed,
                "loop_seconds": summarize([r["loop_seconds"] for r in fed_runs]),
                "all_seconds": [r["seconds"] for r in fed_runs],
                "metric": fed_runs[0]["metric"],
            },
            "bare": {
                "seconds": bare,
                "all_seconds": [r["seconds"] for r in bare_runs],
                "metric": bare_runs[0]["metric"],
                "metric_fedpharma_scorer": bare_runs[0]["metric_fedpharma_scorer"],
            },
            "ratio_median": fed["median"] / bare["median"],
            "ratio_min": fed["min"] / bare["min"],
        }
    metric_name = PRIMARY_METRIC[sim.dataset.task][0]
    headline = per_threads[str(thread_settings[0])]

    # (d) the process pool on all cores (one thread per worker, as each Flower client gets).
    torch.set_num_threads(1)
    pool_runs = [run_fedpharma(on_cores(config, args.cores), sim, workdir) for _ in range(2)]
    pool = {
        "workers": args.cores,
        "seconds": summarize([r["seconds"] for r in pool_runs]),
        "loop_seconds": summarize([r["loop_seconds"] for r in pool_runs]),
        "metric": pool_runs[0]["metric"],
    }

    flower: dict[str, Any] | None = None
    if args.flower_python:
        npz = workdir / "sites.npz"
        export_npz(npz, config, sim, init)
        torch.set_num_threads(thread_settings[0])
        try:
            runs = [
                run_flower(args.flower_python, npz, 1, args.cores, args.flower_timeout)
                for _ in range(args.flower_repeats)
            ]
            flower = {
                "threads": 1,
                "version": runs[0].get("flwr_version"),
                "api": runs[0].get("api"),
                "client_resources": runs[0].get("client_resources"),
                "end_to_end_seconds": summarize([r["end_to_end_seconds"] for r in runs]),
                "internal_seconds": summarize([r["internal_seconds"] for r in runs]),
                "loop_seconds": summarize([r["loop_seconds"] for r in runs]),
                "metric": runs[0]["metric"],
                "metrics": [r["metric"] for r in runs],
                "runs": runs,
            }
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            flower = {"error": str(exc)}

    # ----- table
    print()
    print(f"{'torch threads':>13} | {'run':<22} | {'median s':>9} | {'min s':>7} | "
          f"{'ratio':>6} | pooled {metric_name}")  # fmt: skip
    print("-" * 84)
    for threads, r in per_threads.items():
        fed, bare = r["fedpharma"], r["bare"]
        print(
            f"{threads:>13} | {'bare PyTorch FedAvg':<22} | {bare['seconds']['median']:>9.2f} | "
            f"{bare['seconds']['min']:>7.2f} | {1.0:>5.2f}× | {bare['metric']:.4f}"
        )
        print(
            f"{threads:>13} | {'fedpharma simulate':<22} | {fed['seconds']['median']:>9.2f} | "
            f"{fed['seconds']['min']:>7.2f} | {r['ratio_median']:>5.2f}× | {fed['metric']:.4f}"
        )
        print(
            f"{'':>13} | {'  of which round loop':<22} | "
            f"{fed['loop_seconds']['median']:>9.2f} | {fed['loop_seconds']['min']:>7.2f} |"
        )
    w = f"1 × {args.cores}"
    print(f"{w:>13} | {'fedpharma process pool':<22} | {pool['seconds']['median']:>9.2f} | "
          f"{pool['seconds']['min']:>7.2f} | {'':>6} | {pool['metric']:.4f}")  # fmt: skip
    print(f"{'':>13} | {'  of which round loop':<22} | {pool['loop_seconds']['median']:>9.2f} | "
          f"{pool['loop_seconds']['min']:>7.2f} |")  # fmt: skip
    if flower and "error" not in flower:
        for label, key, base in (
            ("Flower end-to-end", "end_to_end_seconds", pool["seconds"]["median"]),
            ("Flower run_simulation", "internal_seconds", pool["seconds"]["median"]),
            ("Flower rounds only", "loop_seconds", pool["loop_seconds"]["median"]),
        ):
            s = flower[key]
            print(f"{w:>13} | {label:<22} | {s['median']:>9.2f} | {s['min']:>7.2f} | "
                  f"{s['median'] / base:>5.2f}× | {flower['metric']:.4f}")  # fmt: skip
        print(
            "(Flower ratios are Flower / fedpharma's process pool, median over median: rounds "
            "only over its round loop, the others over its whole simulate(); flwr "
            f"{flower['version']}, {flower['api']}, client resources {flower['client_resources']})"
        )
    print(
        f"repeats: {args.repeats} interleaved runs each (Flower: {args.flower_repeats}); "
        f"median reported; load average now {os.getloadavg()[0]:.2f}"
    )

    overhead = headline["ratio_median"]
    metric_gap = abs(headline["fedpharma"]["metric"] - headline["bare"]["metric"])
    verdicts = {
        "overhead_ratio": overhead,
        "overhead_pass": overhead <= TARGET_OVERHEAD,
        "metric_gap_fedpharma_vs_bare": metric_gap,
    }
    print(f"\nfedpharma / bare = {overhead:.3f}× (median, {thread_settings[0]} thread(s)); target "
          f"≤ {TARGET_OVERHEAD}× → {'PASS' if verdicts['overhead_pass'] else 'FAIL'}; "
          f"{metric_name} fedpharma {headline['fedpharma']['metric']:.4f} vs bare "
          f"{headline['bare']['metric']:.4f} (|Δ| = {metric_gap:.2g})")  # fmt: skip
    if flower and "error" not in flower:
        fed_s = pool["seconds"]["median"]
        speedup = flower["loop_seconds"]["median"] / pool["loop_seconds"]["median"]
        speedup_internal = flower["internal_seconds"]["median"] / fed_s
        speedup_e2e = flower["end_to_end_seconds"]["median"] / fed_s
        gap = abs(flower["metric"] - pool["metric"])
        verdicts |= {
            "flower_speedup_rounds_only": speedup,
            "flower_speedup_internal": speedup_internal,
            "flower_speedup_end_to_end": speedup_e2e,
            "flower_speedup_pass": speedup >= TARGET_FLOWER_SPEEDUP and gap < 1e-3,
            "metric_gap_fedpharma_vs_flower": gap,
        }
        print(f"Flower / fedpharma process pool on {args.cores} cores = {speedup:.2f}× (rounds "
              f"only), {speedup_internal:.2f}× (run_simulation vs simulate) and {speedup_e2e:.2f}× "
              f"(end-to-end incl. interpreter start); target ≥ {TARGET_FLOWER_SPEEDUP}× with "
              f"|Δ {metric_name}| < 1e-3 → "
              f"{'PASS' if verdicts['flower_speedup_pass'] else 'FAIL'}; {metric_name} Flower "
              f"{flower['metric']:.4f} (|Δ| to fedpharma = {gap:.2g})")  # fmt: skip
    elif flower:
        print(f"Flower comparison not available: {flower['error']}")

    result = {
        "benchmark": "overhead",
        "machine": info | {"load_average_at_end": list(os.getloadavg())},
        "workload": {
            "dataset": args.dataset,
            "n_molecules": len(sim.dataset),
            "sites": {
                n: {"train": len(d.train), "test": len(d.test)} for n, d in sim.sites.items()
            },
            "rounds": args.rounds,
            "local_epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "optimizer": "adam",
            "model": f"mlp {sim.dataset.n_features}-512-128-{sim.dataset.n_tasks}, dropout 0.1",
            "partition": "scaffold",
            "evaluate": "after the last round only",
            "metric": metric_name,
            "prepare_seconds": prepare_seconds,
        },
        "repeats": args.repeats,
        "statistic": "median of interleaved repeats",
        "threads": per_threads,
        "headline_threads": thread_settings[0],
        "process_pool": pool,
        "flower": flower,
        "targets": {"overhead_max": TARGET_OVERHEAD, "flower_speedup_min": TARGET_FLOWER_SPEEDUP},
        "verdicts": verdicts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"\nwrote {args.out}")
    if args.profile:
        torch.set_num_threads(thread_settings[0])
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        profile_text = profile_fedpharma(config, sim, workdir, args.profile)
        print(f"\ncProfile of one fedpharma run (top 25 by own time), stats in {args.profile}:")
        print(profile_text)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
