"""How fast does one round move a model over gRPC + mutual TLS, against the in-process channel?

One coordinator (this process) and ``--sites`` site processes (default 4), all on 127.0.0.1 with a
freshly provisioned PKI and mutual TLS. Each round sends every site a TrainTask carrying a
``--params``-parameter float32 model (default 10M → 40 MB) and each site answers with a
TrainResult of the same size (an echo handler: decode the task, encode a result; no training), so
a round moves 2 × sites × 40 MB. The same round then runs through the in-process channel with the
same handlers (encode/decode only, no network) for the ratio. Each channel runs one untimed
round at full size first.

Effective throughput = task + result payload bytes / round wall time. Target: ≥ 300 MB/s with TLS.
The CPU seconds every process (coordinator and sites, all threads) spent per round are printed
too: with more processes than cores, they are what sets the wall time.

    .venv/bin/python benchmarks/transport.py [--params 10000000] [--sites 4] [--rounds 3]

Writes ``benchmarks/results/transport.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fedpharma.core.params import Parameters
from fedpharma.core.protocol import TrainResult, TrainTask
from fedpharma.core.protocol.codec import (
    EncodedMessage,
    decode_message,
    encode_message,
    encode_message_parts,
)
from fedpharma.transport import pki
from fedpharma.transport.grpc import (
    CoordinatorSettings,
    GrpcCoordinatorServer,
    ServerTls,
    SiteSettings,
    SiteTls,
    run_site,
)
from fedpharma.transport.inprocess import InProcessChannel


class EchoSite:
    """Answers a TrainTask with its parameters as the update: pure codec work, no training."""

    def __init__(self, name: str) -> None:
        self.name = name

    def handle_encoded(self, data: bytes | memoryview) -> EncodedMessage:
        task = decode_message(data)
        assert isinstance(task, TrainTask)
        result = TrainResult(task.run_id, task.round, self.name, task.parameters, 100)
        return encode_message_parts(result)


def site_main(address: str, folder: str) -> int:
    tls = SiteTls.from_folder(Path(folder))
    run_site(address, tls, EchoSite(tls.check().common_name), settings=SiteSettings(pull_wait=2))
    return 0


def model(n_params: int) -> Parameters:
    rng = np.random.default_rng(0)
    return Parameters.from_dict({"weights": rng.normal(size=n_params).astype(np.float32)})


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds so far of these processes, all their threads (Linux /proc);
    None where /proc is not available."""
    try:
        ticks = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def timed_rounds(
    channel: object, tasks: dict[str, TrainTask], rounds: int, pids: list[int]
) -> tuple[list[float], float | None]:
    """Wall seconds of each of ``rounds`` rounds, and the CPU seconds per round that ``pids``
    spent on them, after one untimed round: memory allocators and HTTP/2 flow-control windows
    grow to the model's size, as they have in every round of a running deployment but its
    first."""
    seconds = []
    cpu_started = None
    for index in range(rounds + 1):
        if index == 1:
            cpu_started = cpu_seconds(pids)
        started = time.perf_counter()
        replies = channel.exchange(tasks, 600)  # type: ignore[attr-defined]
        if index > 0:
            seconds.append(time.perf_counter() - started)
        bad = {s: r for s, r in replies.items() if not isinstance(r, TrainResult)}
        if bad:
            raise SystemExit(f"round failed: {bad}")
    cpu_ended = cpu_seconds(pids)
    if cpu_started is None or cpu_ended is None:
        return seconds, None
    return seconds, (cpu_ended - cpu_started) / rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/transport.json"))
    args = parser.parse_args()
    names = [f"site-{i}" for i in range(args.sites)]
    parameters = model(args.params)
    tasks = {s: TrainTask("bench", 1, parameters) for s in names}
    payload_mb = len(encode_message(tasks[names[0]])) / 1e6
    moved_mb = 2 * args.sites * payload_mb

    with tempfile.TemporaryDirectory() as tmp:
        made = pki.provision("bench", names, Path(tmp) / "pki")
        settings = CoordinatorSettings(run_id="bench", address="127.0.0.1:0")
        server = GrpcCoordinatorServer(settings, ServerTls.from_folder(made.coordinator.folder))
        server.start()
        processes = [
            subprocess.Popen(
                [sys.executable, __file__, "--site", server.address, str(made.sites[s].folder)]
            )
            for s in names
        ]
        try:
            if len(server.channel.wait_for_sites(args.sites, timeout=60)) < args.sites:
                raise SystemExit("not every site joined within 60 s")
            everyone = [os.getpid(), *(process.pid for process in processes)]
            grpc_seconds, grpc_cpu = timed_rounds(server.channel, tasks, args.rounds, everyone)
            server.finish(wait=10)
        finally:
            server.stop()
            for process in processes:
                process.wait(timeout=30)

    inprocess = InProcessChannel({s: EchoSite(s) for s in names})
    local_seconds, local_cpu = timed_rounds(inprocess, tasks, args.rounds, [os.getpid()])

    grpc_median, local_median = statistics.median(grpc_seconds), statistics.median(local_seconds)
    rows = [
        ("gRPC + mTLS (loopback)", grpc_median, min(grpc_seconds), grpc_cpu),
        ("in-process channel", local_median, min(local_seconds), local_cpu),
    ]
    print(
        f"{args.params:,} float32 parameters ({payload_mb:.1f} MB per message), {args.sites} sites,"
        f" {moved_mb:.0f} MB moved per round, median of {args.rounds} rounds"
    )
    print(f"{'channel':<26}{'round s':>10}{'best s':>10}{'MB/s':>10}{'CPU s/round':>14}")
    for label, median, best, cpu in rows:
        shown = "n/a" if cpu is None else f"{cpu:.2f}"
        print(f"{label:<26}{median:>10.2f}{best:>10.2f}{moved_mb / median:>10.0f}{shown:>14}")
    ratio = grpc_median / local_median
    print(f"gRPC / in-process wall time: {ratio:.2f}x   (target ≥ 300 MB/s with TLS)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "params": args.params,
        "sites": args.sites,
        "rounds": args.rounds,
        "payload_mb": payload_mb,
        "moved_mb_per_round": moved_mb,
        "grpc_round_seconds": grpc_seconds,
        "inprocess_round_seconds": local_seconds,
        "grpc_mb_per_s": moved_mb / grpc_median,
        "inprocess_mb_per_s": moved_mb / local_median,
        "grpc_over_inprocess": ratio,
        "grpc_cpu_seconds_per_round": grpc_cpu,
        "inprocess_cpu_seconds_per_round": local_cpu,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--site":
        sys.exit(site_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())
