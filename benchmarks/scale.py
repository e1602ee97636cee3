"""Does one large pharma partner fit? Memory, load time and training throughput at scale.

Two workloads, one per invocation so that each process's peak RSS is its own:

``chembl``: the ChEMBL file in ``../shared/data`` (23,871 molecules × 691 targets) loaded by
    fedpharma from scratch (no feature cache): load + featurize seconds, peak RSS above the
    process's baseline (after imports, before loading) per molecule, then a second, cached load.
``synthetic``: a partner of realistic shape built directly as CSR (no RDKit): N compounds ×
    32,768 folded count columns (~60 non-zeros a row, counts 1–4) and T tasks at 0.5 % label
    density (binary labels). fedpharma's :class:`TorchTrainer` trains a time-bounded number of
    batches of the 2,000-hidden multitask MLP (masked BCE, Adam) beside a bare PyTorch loop of
    the same model (``nn.EmbeddingBag`` → ReLU → Dropout → Linear) on the same CSR arrays, in
    the same process, interleaved: compounds per second for each, and peak RSS.

    Each epoch is timed twice: wall clock and this process's CPU time (user + system, so the page
    faults it causes count). On a shared machine a single-threaded run's wall clock also counts
    the time it waits for a core, which depends on the other jobs, not on the code, and swings
    2–3× from one epoch to the next; its CPU time counts only the work it did, so the ratio of
    CPU-time throughputs (``fedpharma_over_bare_cpu``) is the fairer comparison there. It holds
    with one torch thread only (``OMP_NUM_THREADS=1`` or ``--threads 1``): with more, threads
    spinning while they wait for a busy core add CPU time that is contention, not work.
    ``load_average`` is the 1-minute load before and after.

Run from the repository root::

    .venv/bin/python benchmarks/scale.py chembl
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py synthetic --rows 100000 --batches 6
    .venv/bin/python benchmarks/scale.py synthetic --rows 1000000 --batches 3
    .venv/bin/python benchmarks/scale.py synthetic --rows 1000000 --device cuda --precision bf16

Targets (issue 14): ChEMBL ≤ 4 KB/molecule above baseline and load + featurize ≤ 15 s; 1M
synthetic within 8 GB peak RSS; 100k throughput ≥ 0.9× the bare loop on the CPU; on a GPU
≥ 0.8× the bare loop and ≥ 300,000 compounds/s in bf16. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, require_shared_file


def rss_mb() -> float:
    """This process's current resident set (MB), from /proc."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the featurization workers)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def chembl() -> dict[str, Any]:
    from fedpharma.core.config import DatasetConfig, FeaturesConfig
    from fedpharma.data import chunk_features, preprocessing  # RDKit loads here, before baseline
    from fedpharma.data.datasets import load_dataset
    from fedpharma.data.loading import CHUNK_ROWS, worker_count

    assert chunk_features.REASONS and preprocessing.RECIPE_VERSION

    path = require_shared_file("chembl_5thresh.csv.gz")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
    features = FeaturesConfig(n_bits=2048, counts=True)
    baseline = rss_mb()
    with tempfile.TemporaryDirectory() as cache:
        config = DatasetConfig(
            path=str(path),
            label_columns=tuple(h for h in header if h != "smiles"),
            task="regression",
            cache_dir=cache,
        )
        started, cpu = time.perf_counter(), _cpu_seconds()
        dataset, report = load_dataset(config, features)
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
        peak = peak_rss_mb()
        started = time.perf_counter()
        cached, _ = load_dataset(config, features)
        cached_seconds = time.perf_counter() - started
    n = report.n_input
    return {
        "workload": "chembl",
        "molecules": n,
        "rows_used": len(dataset),
        "tasks": dataset.n_tasks,
        "features": f"Morgan r2 counts, {features.n_bits} columns (CSR)",
        "load_featurize_s": round(seconds, 2),
        "load_featurize_cpu_s": round(cpu, 2),
        "featurize_workers": worker_count(math.ceil(n / CHUNK_ROWS)),
        "cached_load_s": round(cached_seconds, 2),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_above_baseline_kb_per_molecule": round((peak - baseline) * 1024 / n, 2),
        "worker_peak_rss_mb": round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1),
        "import_summary": report.summary(max_rows=3),
        "same_as_cached": len(cached) == len(dataset),
    }


def synthetic_partner(rows: int, columns: int, nnz: int, tasks: int, density: float, seed: int):  # type: ignore[no-untyped-def]
    """CSR features (uint16 counts) and CSR binary labels, built in chunks (never dense)."""
    from fedpharma.core.dataset import Dataset, SparseMatrix

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.poisson(nnz, rows), 1, columns)
    indptr = np.zeros(rows + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = rng.integers(0, columns, int(indptr[-1]), dtype=np.int32)  # repeats add up
    values = rng.integers(1, 5, int(indptr[-1]), dtype=np.uint16)
    features = SparseMatrix(indptr, indices, values, columns)
    per_row = rng.binomial(tasks, density, rows)
    label_ptr = np.zeros(rows + 1, np.int64)
    np.cumsum(per_row, out=label_ptr[1:])
    label_tasks = rng.integers(0, tasks, int(label_ptr[-1]), dtype=np.int32)
    # a learnable signal: the label is 1 where the row's first column and the task agree in parity
    first = indices[indptr[:-1]]
    row_of = np.repeat(np.arange(rows), per_row)
    label_values = ((first[row_of] + label_tasks) % 2).astype(np.float32)
    labels = SparseMatrix(label_ptr, label_tasks, label_values, tasks, fill=math.nan)
    names = tuple(f"task{t}" for t in range(tasks))
    groups = np.arange(rows, dtype=np.int64)
    return Dataset(features, labels, "classification", names, groups, name="synthetic")


def synthetic(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch import nn
    from torch.nn import functional

    from fedpharma.core.config import ModelConfig, TrainingConfig
    from fedpharma.core.dataset import SparseMatrix
    from fedpharma.models.batches import LabelTriples, SparseBatch, TensorData
    from fedpharma.models.device import resolve_device
    from fedpharma.models.trainer import TorchTrainer

    baseline = rss_mb()
    started = time.perf_counter()
    data = synthetic_partner(args.rows, args.columns, args.nnz, args.tasks, args.density, 0)
    build_s = time.perf_counter() - started
    features_nnz = data.features.nnz if isinstance(data.features, SparseMatrix) else 0
    after_load = peak_rss_mb()
    device = resolve_device(args.device)
    training = TrainingConfig(
        batch_size=args.batch, learning_rate=1e-3, device=args.device, precision=args.precision
    )
    model = ModelConfig(hidden=(args.hidden,), dropout=0.1)
    trainer = TorchTrainer(model, training, "classification", args.columns, args.tasks)
    params = trainer.initial_parameters(seed=0)
    # A fit holds the whole partner on its device (CSR, shared with the dataset on the CPU); it
    # is built here so that peak RSS counts it, then a bounded number of batches is timed.
    whole = TensorData(data.features, data.labels, device)
    train_rows = min(args.rows, args.batch * args.batches)
    part = data.subset(np.arange(train_rows))

    bare = nn.Sequential(
        nn.EmbeddingBag(args.columns, args.hidden, mode="sum"),
    ).to(device)
    bare_bias = torch.zeros(args.hidden, device=device, requires_grad=True)
    bare_head = nn.Linear(args.hidden, args.tasks).to(device)
    bare_params = [*bare.parameters(), bare_bias, *bare_head.parameters()]
    bare_optimizer = torch.optim.Adam(bare_params, lr=1e-3, fused=True)
    tensors = TensorData(part.features, part.labels, device)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=args.precision == "bf16")

    def bare_epoch() -> None:
        order = torch.randperm(train_rows, device=device)
        for rows in torch.split(order, args.batch):
            x = tensors.features(rows)
            y = tensors.labels(rows)
            assert isinstance(x, SparseBatch) and isinstance(y, LabelTriples)
            bare_optimizer.zero_grad()
            with autocast:
                hidden = bare[0](x.indices, x.offsets, per_sample_weights=x.values) + bare_bias
                out = bare_head(functional.dropout(torch.relu(hidden), 0.1))
            logits = out.float()[y.rows, y.tasks]
            loss = functional.binary_cross_entropy_with_logits(logits, y.values)
            loss.backward()
            bare_optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    def fedpharma_epoch() -> None:
        trainer.fit(params, part, epochs=1, seed=0)
        if device.type == "cuda":
            torch.cuda.synchronize()

    timings: dict[str, list[float]] = {"fedpharma": [], "bare": []}
    cpu_timings: dict[str, list[float]] = {"fedpharma": [], "bare": []}
    load_before = os.getloadavg()[0]
    fedpharma_epoch()  # warm-up: moves the model, allocates the optimizer state
    bare_epoch()
    for _ in range(args.repeats):
        for name, run in (("fedpharma", fedpharma_epoch), ("bare", bare_epoch)):
            started, cpu = time.perf_counter(), time.process_time()
            run()
            timings[name].append(time.perf_counter() - started)
            cpu_timings[name].append(time.process_time() - cpu)
    throughput = {name: train_rows / min(values) for name, values in timings.items()}
    cpu_throughput = {name: train_rows / min(values) for name, values in cpu_timings.items()}
    return {
        "workload": "synthetic",
        "rows": args.rows,
        "columns": args.columns,
        "nnz_per_row": round(features_nnz / args.rows, 1),
        "tasks": args.tasks,
        "label_density": args.density,
        "model": f"{args.columns}→{args.hidden}→{args.tasks}, dropout 0.1, Adam",
        "batch": args.batch,
        "device": str(device),
        "precision": args.precision,
        "build_s": round(build_s, 2),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_after_load_mb": round(after_load, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "trained_rows_per_epoch": train_rows,
        "whole_partner_on_device_rows": whole.n_rows,
        "epoch_seconds": {k: [round(v, 3) for v in vs] for k, vs in timings.items()},
        "compounds_per_s": {k: round(v, 1) for k, v in throughput.items()},
        "fedpharma_over_bare": round(throughput["fedpharma"] / throughput["bare"], 3),
        "epoch_cpu_seconds": {k: [round(v, 3) for v in vs] for k, vs in cpu_timings.items()},
        "compounds_per_cpu_s": {k: round(v, 1) for k, v in cpu_throughput.items()},
        "fedpharma_over_bare_cpu": round(cpu_throughput["fedpharma"] / cpu_throughput["bare"], 3),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "gpu_memory_peak_mb": (
            round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else None
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("workload", choices=("chembl", "synthetic"))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--columns", type=int, default=32_768)
    parser.add_argument("--nnz", type=int, default=60)
    parser.add_argument("--tasks", type=int, default=3_000)
    parser.add_argument("--density", type=float, default=0.005)
    parser.add_argument("--hidden", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=4_096)
    parser.add_argument("--batches", type=int, default=6, help="batches per timed epoch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = chembl() if args.workload == "chembl" else synthetic(args)
    result["machine"] = machine_info()
    result["command"] = " ".join(["benchmarks/scale.py", *sys.argv[1:]])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
