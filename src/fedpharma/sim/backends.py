"""Where a simulation's sites run: the execution backends of ``[simulation] backend``.

- ``"sequential"``: the sites' runtimes in this process, trained one after another over the
  in-process channel (the default; no extra dependency).
- ``"processes"``: a pool of local worker processes (one per core by default). Each worker
  loads the dataset itself (through the feature cache, so a molecule file is featurized once,
  not once per worker), keeps only the sites it hosts (their data never reaches the
  driver) and answers their tasks; sites are dealt to workers in name order.
- ``"ray"``: the same workers as Ray actors (:mod:`fedpharma.sim.ray_backend`).

Every backend carries the same codec bytes as the in-process channel and a deployment — a task
is encoded by the driver and decoded by the site, the reply likewise; nothing but bytes crosses
a process boundary (multiprocessing moves them, never a pickled update) — so the same seed gives
the same model on every backend. A worker trains its sites in turn with one thread of its own.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from fedpharma.core.config import RunConfig, config_from_dict
from fedpharma.core.errors import FedPharmaError
from fedpharma.core.protocol import Channel
from fedpharma.core.protocol.codec import encode_message
from fedpharma.core.protocol.messages import Failure, Reply, Task
from fedpharma.sim.hosting import (
    ERROR,
    OK,
    RUN_FEATURE_CACHE,
    answer,
    deal,
    decode_answer,
    frame,
    host_sites,
    through_cache,
    worker_count,
)
from fedpharma.transport.inprocess import InProcessChannel, MessageHandler


def _serve(connection: Connection, config: dict[str, Any], names: list[str], run_dir: str) -> None:
    """A worker process: load its sites, say so, then answer framed tasks until told to stop."""
    import torch

    torch.set_num_threads(1)
    try:
        handlers = host_sites(config_from_dict(config), names, Path(run_dir))
    except Exception as exc:  # the driver reports it; nothing else can
        connection.send_bytes(ERROR + f"{type(exc).__name__}: {exc}".encode())
        return
    connection.send_bytes(OK)
    while True:
        try:
            data = connection.recv_bytes()
        except EOFError:
            return
        if not data:
            return
        connection.send_bytes(answer(handlers, data))


class ProcessChannel:
    """A :class:`~fedpharma.core.protocol.Channel` to sites hosted by local worker processes.

    An exchange gives each worker one task at a time and the next as soon as it answers, so
    the workers train in parallel and no pipe fills while its worker is busy.
    """

    def __init__(self, config: RunConfig, names: Sequence[str], run_dir: Path) -> None:
        context = multiprocessing.get_context("spawn")  # no forked torch or rdkit state
        self._sites: dict[str, int] = {}
        self._connections: list[Connection] = []
        self._processes: list[Any] = []
        for index, group in enumerate(deal(names, worker_count(config, len(names)))):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_serve,
                args=(theirs, config.to_dict(), group, str(run_dir)),
                name=f"fedpharma-sites-{index}",
                daemon=True,
            )
            process.start()
            theirs.close()
            self._connections.append(ours)
            self._processes.append(process)
            self._sites |= dict.fromkeys(group, index)
        for index, connection in enumerate(self._connections):
            ready = self._receive(connection)
            if ready != OK:
                self.close()
                raise FedPharmaError(
                    f"simulation worker {index} could not load its sites: "
                    + ready[1:].decode(errors="replace")
                )

    @staticmethod
    def _receive(connection: Connection) -> bytes:
        try:
            return connection.recv_bytes()
        except (EOFError, OSError):
            return ERROR + b"the worker process ended"

    def available_sites(self) -> tuple[str, ...]:
        return tuple(sorted(self._sites))

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        replies: dict[str, Reply | Failure] = {}
        queues: dict[int, list[str]] = {}
        for site in tasks:
            if site in self._sites:
                queues.setdefault(self._sites[site], []).append(site)
            else:
                replies[site] = Failure(site, "site is not connected")
        busy: dict[Connection, str] = {}

        def feed(worker: int) -> None:
            while queues.get(worker):
                site = queues[worker].pop(0)
                connection = self._connections[worker]
                try:
                    connection.send_bytes(frame(site, encode_message(tasks[site])))
                except OSError:
                    replies[site] = Failure(site, "the site's worker process ended")
                    continue
                busy[connection] = site
                return

        for worker in list(queues):
            feed(worker)
        deadline = None if timeout is None else time.monotonic() + timeout
        while busy:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait(list(busy), left)
            if not ready:  # late workers are stopped: a late answer must not meet a later task
                for late, site in busy.items():
                    self._stop(self._connections.index(late))
                    replies[site] = Failure(site, f"no answer within {timeout:g} s")
                for site in (s for q in queues.values() for s in q):
                    replies[site] = Failure(site, f"no answer within {timeout:g} s")
                break
            for answered in ready:
                assert isinstance(answered, Connection)
                site = busy.pop(answered)
                replies[site] = decode_answer(site, self._receive(answered))
                feed(self._connections.index(answered))
        return {site: replies[site] for site in tasks}

    def _stop(self, worker: int) -> None:
        """End a worker and disconnect its sites."""
        self._processes[worker].terminate()
        self._sites = {s: w for s, w in self._sites.items() if w != worker}

    def close(self) -> None:
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.send_bytes(b"")
            connection.close()
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]


@contextlib.contextmanager
def open_sites(
    config: RunConfig,
    names: Sequence[str],
    run_dir: Path,
    local: Mapping[str, MessageHandler] | None = None,
) -> Iterator[Channel]:
    """A channel to the simulation's sites on ``[simulation] backend``. ``local`` are the
    sequential backend's runtimes, built by the caller (who already holds the data)."""
    backend = config.simulation.backend
    if backend == "sequential":
        yield InProcessChannel(local if local is not None else host_sites(config, names, run_dir))
        return
    workers = through_cache(config, run_dir)
    try:
        channel: Any
        if backend == "processes":
            channel = ProcessChannel(workers, names, run_dir)
        else:
            from fedpharma.sim.ray_backend import RayChannel

            channel = RayChannel(workers, names, run_dir)
        try:
            yield channel
        finally:
            channel.close()
    finally:
        if workers is not config:  # the run-private cache holds the sites' features: removed
            shutil.rmtree(run_dir / RUN_FEATURE_CACHE, ignore_errors=True)
