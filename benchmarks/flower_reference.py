"""The overhead workload on Flower's simulation engine, for comparison only.

Runs in its own venv with ``flwr[simulation]`` and torch (never a dependency of fedpharma; see
DEVELOPERS.md), usually started by ``benchmarks/overhead.py --flower-python ...``. It reads the
per-site arrays, the initial weights and the hyper-parameters that overhead.py exported to an
.npz, so the data, the starting point, the minibatch order and the dropout seeds are the ones
fedpharma and the bare loop use. Flower's current Message API: a ServerApp running
``flwr.serverapp.strategy.FedAvg`` and a ClientApp whose ``train`` does the local epochs, run by
``flwr.simulation.run_simulation`` on the Ray backend, CPU only.

Flower's idiomatic set-up, as ``flwr run`` gives it: the apps live in an importable module
(``benchmarks/flower_app.py``), so Ray's workers import them by reference and each worker loads
the workload once and keeps it; nothing large travels with a client call. (Defining the apps in
``__main__`` after filling a module-level cache made Ray pickle the whole dataset into every
call — an unfair handicap this driver avoids: it never loads the data itself.) Clients get
``--threads`` cores each out of ``--cores``, so as many train at once as fedpharma's process
pool runs workers on the same cores. Evaluation happens once, after the last round, server-side
on the pooled test sets (the pooled metric overhead.py prints).

Writes a JSON with the metric and timings: ``internal_seconds`` (run_simulation: backend
start-up + rounds + shutdown; no interpreter start or imports), ``loop_seconds`` (rounds only:
first to last round, from the strategy's own evaluate callbacks) and ``import_seconds``.

    FLWR_TELEMETRY_ENABLED=0 .venv-flower/bin/python benchmarks/flower_reference.py \
        --data sites.npz --threads 1 --out flower.json
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
HERE = Path(__file__).resolve().parent
# Ray's workers (started by this process) import the app module by reference from here.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
)
sys.path.insert(0, str(HERE))

import flower_app  # noqa: E402
import flwr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

_IMPORTED = time.perf_counter()


def cli() -> int:
    parser = argparse.ArgumentParser(description="overhead workload on Flower's simulation")
    parser.add_argument("--data", required=True, help=".npz exported by overhead.py")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per client")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.environ[flower_app.DATA_ENV] = str(Path(args.data).resolve())
    os.environ[flower_app.THREADS_ENV] = str(args.threads)
    torch.set_num_threads(args.threads)
    with np.load(args.data) as z:  # the metadata only; the server app loads the data itself
        meta = json.loads(str(z["meta"]))
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
        server_app=flower_app.server_app,
        client_app=flower_app.client_app,
        num_supernodes=meta["n_sites"],
        backend_config=backend_config,  # type: ignore[arg-type]
    )
    internal = time.perf_counter() - started
    final, marks = flower_app.FINAL, flower_app.MARKS
    if "metric" not in final:
        print("Flower finished without the final evaluation (see its log above)", file=sys.stderr)
        return 1
    result = {
        "flwr_version": flwr.__version__,
        "torch": torch.__version__,
        "api": "run_simulation + ServerApp/ClientApp (Message API) from an importable module, "
        "flwr.serverapp.strategy.FedAvg",
        "cores": args.cores,
        "client_resources": resources,
        "threads": args.threads,
        "metric": final["metric"],
        "import_seconds": _IMPORTED - _T0,
        "internal_seconds": internal,
        "loop_seconds": marks["loop_end"] - marks["loop_start"],
    }
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
