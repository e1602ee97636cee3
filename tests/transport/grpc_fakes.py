"""Shared helpers for the gRPC transport tests: a fake site runtime, fast settings, threads.

Also runnable as a script (``python grpc_fakes.py ADDRESS SITE_FOLDER``) so a test can start a
site as a real, separate process.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fedpharma.core.params import Parameters
from fedpharma.core.protocol import EvaluateResult, EvaluateTask, TrainResult, TrainTask
from fedpharma.core.protocol.codec import decode_message, encode_message_parts
from fedpharma.transport.grpc import (
    CoordinatorSettings,
    GrpcCoordinatorServer,
    ServerTls,
    SiteConnection,
    SiteSettings,
    SiteTls,
    run_site,
)

FAST_SITE = SiteSettings(pull_wait=0.5, backoff_initial=0.05, backoff_max=0.2, give_up_after=5.0)


def fast_coordinator(run_id: str = "run-1", **overrides: object) -> CoordinatorSettings:
    values: dict[str, object] = {
        "run_id": run_id,
        "heartbeat_seconds": 0.2,
        "liveness_timeout": 3.0,
        "max_pull_wait": 0.5,
        "max_workers": 16,
    }
    values.update(overrides)
    return CoordinatorSettings(**values)  # type: ignore[arg-type]


class EchoHandler:
    """A site runtime stand-in: its update is the parameters plus a site-specific offset."""

    def __init__(self, name: str, offset: float = 1.0) -> None:
        self.name = name
        self.offset = offset
        self.tasks_seen = 0

    def handle_encoded(self, data):
        task = decode_message(data)
        self.tasks_seen += 1
        if isinstance(task, EvaluateTask):
            reply = EvaluateResult(task.run_id, task.round, self.name, 7, {"rmse": 0.5})
            return encode_message_parts(reply)
        assert isinstance(task, TrainTask)
        update = Parameters(
            task.parameters.names,
            tuple((a + self.offset).astype(a.dtype) for a in task.parameters.arrays),
        )
        return encode_message_parts(
            TrainResult(task.run_id, task.round, self.name, update, 10, {"loss": 1.0})
        )


def pull_task(connection: SiteConnection, within: float = 15.0) -> object:
    """The next task ``connection`` pulls; fails the test if none comes within ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        task = connection.pull(0.5)
        if task is not None:
            return task
    raise AssertionError(f"no task pulled within {within:g} s")


def parameters(n: int, seed: int = 0) -> Parameters:
    rng = np.random.default_rng(seed)
    return Parameters.from_dict({"w": rng.normal(size=n).astype(np.float32), "b": np.ones(3)})


@contextlib.contextmanager
def serving(pki_root: Path, **overrides: object) -> Iterator[GrpcCoordinatorServer]:
    audit = overrides.pop("audit", None)
    settings = fast_coordinator(**overrides)
    server = GrpcCoordinatorServer(
        settings,
        ServerTls.from_folder(pki_root / "coordinator"),
        audit=audit,  # type: ignore[arg-type]
    )
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=0.5)


class SiteThread:
    """``run_site`` in a background thread; ``stop()`` ends it and returns its summary."""

    def __init__(self, address: str, folder: Path, handler: object) -> None:
        self.stop_event = threading.Event()
        self.status: list[str] = []
        self.summary: object = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(address, folder, handler), daemon=True
        )
        self._thread.start()

    def _run(self, address: str, folder: Path, handler: object) -> None:
        try:
            self.summary = run_site(
                address,
                SiteTls.from_folder(folder),
                handler,  # type: ignore[arg-type]
                settings=FAST_SITE,
                stop=self.stop_event,
                on_status=self.status.append,
            )
        except BaseException as exc:  # surfaced to the test by join()
            self.error = exc

    def join(self, timeout: float = 10.0) -> object:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "site thread did not end"
        if self.error is not None:
            raise self.error
        return self.summary

    def stop(self) -> object:
        self.stop_event.set()
        return self.join()


def main(address: str, folder: str) -> int:
    """Run one site process against ``address`` until the coordinator finishes the run."""
    tls = SiteTls.from_folder(Path(folder))
    name = tls.check().common_name
    summary = run_site(
        address,
        tls,
        EchoHandler(name),
        settings=FAST_SITE,
        on_status=lambda s: print(s, flush=True),
    )
    print(f"summary: {summary.results_sent} results, {summary.ended_because}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
