"""The overhead workload as a Flower app module, imported by reference as ``flwr run`` loads one.

Ray's workers import this module (``benchmarks/`` on their ``PYTHONPATH``) instead of receiving
the apps pickled by value from ``__main__``: each worker process loads the exported workload
once (:func:`load`, its own module-level cache) and keeps it for every client call it runs. See
``flower_reference.py`` for the driver and the timings.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch import nn
from torch.nn import functional

DATA_ENV = "FEDPHARMA_FLOWER_NPZ"
THREADS_ENV = "FEDPHARMA_FLOWER_THREADS"
_cache: dict[str, Any] = {}


def load(path: str) -> dict[str, Any]:
    """The exported workload, loaded once per process (the server app's, and each Ray worker's)
    and kept in this module, which Ray imports rather than ships."""
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
MARKS: dict[str, float] = {}
FINAL: dict[str, float] = {}


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
            MARKS["loop_start"] = time.perf_counter()
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
        FINAL["metric"] = pooled_metric(classification, labels, predictions)
        MARKS["loop_end"] = time.perf_counter()
        return MetricRecord({"metric": FINAL["metric"]})

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
