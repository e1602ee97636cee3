"""The overhead benchmark's workload on Flower's simulation engine, for comparison only.

Runs in its own venv with ``flwr[simulation]`` and torch (never a dependency of fedpharma; see
DEVELOPERS.md), usually started by ``benchmarks/overhead.py --flower-python ...``. It reads the
per-site arrays, the initial weights and the hyper-parameters that overhead.py exported to an
.npz, so the data, the starting point, the minibatch order and the dropout seeds are the ones
fedpharma and the bare loop use. Flower's current Message API: a ServerApp running
``flwr.serverapp.strategy.FedAvg`` and a ClientApp whose ``train`` does the local epochs, run by
``flwr.simulation.run_simulation`` on the Ray backend, CPU only. Evaluation happens once, after
the last round, server-side on the pooled test sets (the pooled metric overhead.py prints).

Writes a JSON with the metric and three timings: ``internal_seconds`` (run_simulation, i.e.
backend start-up + rounds + shutdown; no interpreter start or imports), ``loop_seconds`` (first
to last round, from the strategy's own evaluate callbacks) and ``import_seconds``.

    FLWR_TELEMETRY_ENABLED=0 /work/flower-venv/bin/python benchmarks/flower_reference.py \
        --data sites.npz --threads 1 --out flower.json
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import flwr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional  # noqa: E402

_IMPORTED = time.perf_counter()
DATA_ENV = "FEDPHARMA_FLOWER_NPZ"
THREADS_ENV = "FEDPHARMA_FLOWER_THREADS"
_cache: dict[str, Any] = {}


def load(path: str) -> dict[str, Any]:
    """The exported workload, loaded once per process (server, and each Ray actor)."""
    if path not in _cache:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            sites = [
                {
                    "name": str(z[f"site{i}_name"]),
                    "x_train": torch.from_numpy(z[f"site{i}_x_train"]),
                    "y_train": torch.from_numpy(z[f"site{i}_y_train"]),
                    "x_test": torch.from_numpy(z[f"site{i}_x_test"]),
                    "y_test": z[f"site{i}_y_test"],
                }
                for i in range(meta["n_sites"])
            ]
            init = [z[f"init{j}"] for j in range(meta["n_init"])]
        _cache[path] = {"meta": meta, "sites": sites, "init": init}
    return _cache[path]


def network(n_features: int, n_tasks: int, meta: dict[str, Any]) -> nn.Sequential:
    h1, h2 = meta["hidden"]
    p = meta["dropout"]
    return nn.Sequential(
        nn.Linear(n_features, h1), nn.ReLU(), nn.Dropout(p),
        nn.Linear(h1, h2), nn.ReLU(), nn.Dropout(p),
        nn.Linear(h2, n_tasks),
    )  # fmt: skip


def masked_loss(outputs: torch.Tensor, labels: torch.Tensor, classification: bool) -> torch.Tensor:
    observed = ~torch.isnan(labels)
    targets = torch.where(observed, labels, torch.zeros((), dtype=labels.dtype))
    if classification:
        loss = functional.binary_cross_entropy_with_logits(outputs, targets, reduction="none")
    else:
        loss = (outputs - targets).square()
    return torch.where(observed, loss, torch.zeros(())).sum() / observed.sum().clamp(min=1)


def site_seed(run_seed: int, rnd: int, site: str) -> int:
    entropy = [run_seed, rnd, zlib.crc32(site.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


def pooled_metric(classification: bool, labels: np.ndarray, predictions: np.ndarray) -> float:
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


# ----- ClientApp ------------------------------------------------------------------------------

client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1")))
    work = load(os.environ[DATA_ENV])
    meta = work["meta"]
    site = work["sites"][int(context.node_config["partition-id"])]
    classification = meta["task"] == "classification"
    model = network(site["x_train"].shape[1], site["y_train"].shape[1], meta)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=meta["learning_rate"], fused=True)
    rnd = int(msg.content["config"]["server-round"])
    seed = site_seed(meta["seed"], rnd, site["name"])
    shuffle_seed, dropout_seed = np.random.SeedSequence(seed).generate_state(2, np.uint64)
    shuffler = torch.Generator().manual_seed(int(shuffle_seed))
    n = len(site["x_train"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(dropout_seed))
        for _ in range(meta["local_epochs"]):
            for rows in torch.split(torch.randperm(n, generator=shuffler), meta["batch_size"]):
                optimizer.zero_grad()
                loss = masked_loss(model(site["x_train"][rows]), site["y_train"][rows],
                                   classification)  # fmt: skip
                loss.backward()
                optimizer.step()
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"num-examples": n}),
        }
    )
    return Message(content=content, reply_to=msg)


# ----- ServerApp ------------------------------------------------------------------------------

server_app = ServerApp()
_marks: dict[str, float] = {}
_final: dict[str, float] = {}


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    work = load(os.environ[DATA_ENV])
    meta, sites = work["meta"], work["sites"]
    classification = meta["task"] == "classification"
    n_sites = meta["n_sites"]
    template = network(sites[0]["x_train"].shape[1], sites[0]["y_train"].shape[1], meta)
    keys = list(template.state_dict())
    initial = ArrayRecord({k: torch.from_numpy(a) for k, a in zip(keys, work["init"], strict=True)})
    labels = np.concatenate([s["y_test"] for s in sites])

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            _marks["loop_start"] = time.perf_counter()
            return None
        if server_round < meta["rounds"]:
            return None
        template.load_state_dict(arrays.to_torch_state_dict())
        template.eval()
        with torch.inference_mode():
            outputs = [template(s["x_test"]) for s in sites]
            if classification:
                outputs = [torch.sigmoid(o) for o in outputs]
        predictions = np.concatenate([o.numpy() for o in outputs])
        _final["metric"] = pooled_metric(classification, labels, predictions)
        _marks["loop_end"] = time.perf_counter()
        return MetricRecord({"metric": _final["metric"]})

    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,  # no client-side evaluation; the pooled one runs after the end
        min_train_nodes=n_sites,
        min_evaluate_nodes=0,
        min_available_nodes=n_sites,
    )
    strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=meta["rounds"],
        train_config=ConfigRecord({}),
        evaluate_fn=evaluate,
    )


def cli() -> int:
    parser = argparse.ArgumentParser(description="overhead workload on Flower's simulation")
    parser.add_argument("--data", required=True, help=".npz exported by overhead.py")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per client")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.environ[DATA_ENV] = str(Path(args.data).resolve())
    os.environ[THREADS_ENV] = str(args.threads)
    torch.set_num_threads(args.threads)
    load(os.environ[DATA_ENV])
    meta = _cache[os.environ[DATA_ENV]]["meta"]
    # Size the clients to the machine: each actor gets `threads` cores, so as many clients train
    # at once as there are cores for them (2 at a time with 1 thread on 2 cores).
    per_client = max(1, min(args.threads, args.cores))
    resources = {"num_cpus": per_client, "num_gpus": 0.0}
    backend_config = {
        "client_resources": resources,
        "init_args": {"num_cpus": args.cores, "num_gpus": 0, "include_dashboard": False},
    }
    started = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=meta["n_sites"],
        backend_config=backend_config,  # type: ignore[arg-type]
    )
    internal = time.perf_counter() - started
    if "metric" not in _final:
        print("Flower finished without the final evaluation (see its log above)", file=sys.stderr)
        return 1
    result = {
        "flwr_version": flwr.__version__,
        "torch": torch.__version__,
        "api": "run_simulation + ServerApp/ClientApp (Message API), flwr.serverapp.strategy.FedAvg",
        "client_resources": resources,
        "threads": args.threads,
        "metric": _final["metric"],
        "import_seconds": _IMPORTED - _T0,
        "internal_seconds": internal,
        "loop_seconds": _marks["loop_end"] - _marks["loop_start"],
    }
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
