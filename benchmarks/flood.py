"""Does one hostile site with a valid certificate starve the honest ones? The flood table.

A real gRPC coordinator (a process of its own, so its peak RSS is its own) with mutual TLS on
127.0.0.1 and the default admission control runs rounds for ``--seconds`` against two honest
sites (the real site loop, an echo handler that "trains" ``--work`` seconds, a ``--params``
float32 model). It runs three times:

- ``no hostile site``: the baseline;
- ``hostile site``: a third site of the same consortium joins and, for the whole run, holds
  ``--pulls`` long-poll pulls open at once and calls Heartbeat as fast as two threads can —
  the attack of issue 13 (40 held pulls took every worker and failed the honest rounds);
- ``hostile site, admission off``: the same attack with the per-site limits lifted (the
  weakened twin: what the defence is worth).

For each: honest rounds completed (both honest updates back before the ``--round-timeout``
deadline, after waiting up to as long for both honest sites to be connected) of those attempted,
the p95 round time (waiting included), the coordinator's peak RSS, and the audit
entries naming the hostile site.

    .venv/bin/python benchmarks/flood.py [--seconds 15] [--pulls 40] [--params 125000]

Writes ``benchmarks/results/flood.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import platform
import resource
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from fedpharma.core.errors import FedPharmaError
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import Failure, TrainResult, TrainTask
from fedpharma.core.protocol.codec import decode_message, encode_message_parts
from fedpharma.server.audit import AuditLog, read_entries
from fedpharma.transport import pki
from fedpharma.transport.grpc import (
    CoordinatorSettings,
    GrpcCoordinatorServer,
    ServerTls,
    SiteConnection,
    SiteSettings,
    SiteTls,
    run_site,
)
from fedpharma.transport.grpc.admission import AdmissionSettings

HONEST, HOSTILE, RUN = ("site-a", "site-b"), "site-m", "flood"
SITE = SiteSettings(pull_wait=0.5, backoff_initial=0.05, backoff_max=0.2, give_up_after=30.0)
OPEN_DOOR = AdmissionSettings(
    max_calls_per_site=10**6,
    max_pulls_per_site=10**6 - 1,
    rate_per_site=1e9,
    burst_per_site=10**9,
    quarantine_after=10**9,
    audit_burst=10**9,
    max_task_sends=10**9,
)
SCENARIOS = {
    "no hostile site": (False, True),
    "hostile site": (True, True),
    "hostile site, admission off": (True, False),
}


@dataclass(frozen=True)
class Outcome:
    scenario: str
    rounds_completed: int
    rounds_attempted: int
    p95_round_seconds: float
    coordinator_peak_rss_mib: float
    hostile_audit_entries: dict[str, int]  # entry kind → count
    first_failures: tuple[str, ...]  # why the first rounds that did not complete failed


class Echo:
    """An honest site's handler: its update is the model plus one, after ``work`` seconds of
    "training" (a sleep: rounds of a real length, without burning the CPUs the coordinator
    is measured on)."""

    def __init__(self, name: str, work: float) -> None:
        self.name, self.work = name, work

    def handle_encoded(self, data: memoryview) -> tuple[bytes | memoryview, ...]:
        time.sleep(self.work)
        task = decode_message(data)
        assert isinstance(task, TrainTask)
        update = Parameters(task.parameters.names, tuple(a + 1 for a in task.parameters.arrays))
        return encode_message_parts(TrainResult(task.run_id, task.round, self.name, update, 10))


def coordinator(
    folder: str, admission: bool, hostile: bool, args: argparse.Namespace, pipe: Connection
) -> None:
    """The coordinator process: serve, run rounds for ``args.seconds``, report to ``pipe``."""
    audit_path = Path(folder) / f"audit-{int(admission)}{int(hostile)}.jsonl"
    audit = AuditLog(audit_path, durable=True)
    settings = CoordinatorSettings(
        run_id=RUN,
        heartbeat_seconds=1.0,
        liveness_timeout=5.0,
        max_pull_wait=2.0,
        admission=AdmissionSettings() if admission else OPEN_DOOR,
    )
    server = GrpcCoordinatorServer(
        settings, ServerTls.from_folder(Path(folder) / "coordinator"), audit=audit
    )
    server.start()
    pipe.send(server.address)
    server.channel.wait_for_sites(len(HONEST) + int(hostile), timeout=30)
    pipe.recv()  # the attack (if any) is under way
    model = Parameters.from_dict({"w": np.zeros(args.params, dtype=np.float32)})
    times, completed, rnd, failures = [], 0, 0, []
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        rnd += 1
        started = time.monotonic()
        # as the round loop does: wait (up to a round's deadline) for the sites to be there
        server.channel.wait_for_sites(len(HONEST), timeout=args.round_timeout)
        tasks = {site: TrainTask(RUN, rnd, model) for site in HONEST}
        replies = server.channel.exchange(tasks, timeout=args.round_timeout)
        times.append(time.monotonic() - started)
        completed += all(isinstance(r, TrainResult) for r in replies.values())
        failures += [f"round {rnd}: {r}" for r in replies.values() if isinstance(r, Failure)]
    server.finish(wait=2)
    server.stop(grace=0.5)
    audit.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    hostile_entries = dict(Counter(e.kind for e in read_entries(audit_path) if e.site == HOSTILE))
    p95 = float(np.percentile(times, 95))
    pipe.send((completed, rnd, p95, peak, hostile_entries, tuple(failures[:3])))


def attack(address: str, folder: Path, pulls: int, stop: threading.Event) -> list[threading.Thread]:
    """A joined hostile site holding ``pulls`` pulls and flooding Heartbeat until ``stop``."""
    connection = SiteConnection(address, SiteTls.from_folder(folder), HOSTILE)
    connection.join()

    def loop(call: str) -> None:
        while not stop.is_set():
            with contextlib.suppress(FedPharmaError):
                connection.pull(2.0) if call == "pull" else connection.heartbeat()

    threads = [threading.Thread(target=loop, args=("pull",), daemon=True) for _ in range(pulls)]
    threads += [threading.Thread(target=loop, args=("beat",), daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    return threads


def scenario(name: str, folder: Path, args: argparse.Namespace) -> Outcome:
    hostile, admission = SCENARIOS[name]
    context = multiprocessing.get_context("spawn")
    here, there = context.Pipe()
    process = context.Process(
        target=coordinator, args=(str(folder), admission, hostile, args, there)
    )
    process.start()
    address = here.recv()
    stop = threading.Event()
    sites = [
        threading.Thread(
            target=run_site,
            args=(address, SiteTls.from_folder(folder / "sites" / s), Echo(s, args.work)),
            kwargs={"settings": SITE, "stop": stop},
            daemon=True,
        )
        for s in HONEST
    ]
    for site in sites:
        site.start()
    attackers = attack(address, folder / "sites" / HOSTILE, args.pulls, stop) if hostile else []
    here.send("go")
    completed, attempted, p95, peak, entries, failures = here.recv()
    stop.set()
    for thread in [*sites, *attackers]:
        thread.join(10)
    process.join(10)
    return Outcome(name, completed, attempted, p95, peak, entries, failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="rounds run this long")
    parser.add_argument("--pulls", type=int, default=40, help="pulls the hostile site holds")
    parser.add_argument("--params", type=int, default=125_000, help="float32 model size")
    parser.add_argument("--round-timeout", type=float, default=5.0)
    parser.add_argument("--work", type=float, default=0.5, help="seconds each site 'trains'")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/flood.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pki.provision("flood", (*HONEST, HOSTILE), folder, days=1)
        outcomes = [scenario(name, folder, args) for name in SCENARIOS]
    print(f"{args.seconds:g} s of rounds, 2 honest sites, {args.params * 4 / 1e6:.1f} MB model")
    header = (
        f"{'scenario':<30} {'honest rounds':>14} {'p95 round':>10} {'peak RSS':>9} {'audit':>6}"
    )
    print(header)
    print("-" * len(header))
    for o in outcomes:
        done = f"{o.rounds_completed}/{o.rounds_attempted}"
        print(
            f"{o.scenario:<30} {done:>14} {o.p95_round_seconds:>8.2f} s "
            f"{o.coordinator_peak_rss_mib:>5.0f} MiB {sum(o.hostile_audit_entries.values()):>6}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": multiprocessing.cpu_count(), "python": platform.python_version()}
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine}
    args.out.write_text(json.dumps(result | {"outcomes": [asdict(o) for o in outcomes]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
