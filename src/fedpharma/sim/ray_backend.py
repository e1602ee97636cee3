"""The Ray backend (``[simulation] backend = "ray"``, the ``fedpharma[ray]`` extra; Ray 2.x).

Sites are dealt to actors (one CPU each, ``[simulation] workers`` of them, one per CPU of the
cluster by default); each actor loads the dataset itself and keeps only its sites' rows, as the
process backend's workers do (:func:`fedpharma.sim.hosting.host_sites`). A round's model is
encoded once and put in Ray's object store; each task then travels as its own small header and
a reference to those bytes, so a model is shipped once per node, not once per site. Only codec
bytes cross to the actors. ``[simulation] address`` joins a running cluster; unset, a local
one is started for the run and shut down after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedpharma.core.config import RunConfig
from fedpharma.core.errors import ConfigError, FedPharmaError
from fedpharma.core.protocol.codec import encode_message_parts
from fedpharma.core.protocol.messages import Failure, Reply, Task
from fedpharma.sim.hosting import answer, deal, decode_answer, frame


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            [
                '[simulation] backend = "ray" needs Ray: pip install "fedpharma[ray]" '
                '(or use backend = "processes" on one machine)'
            ],
            "[simulation]",
        ) from exc
    return ray


LOCAL_START_TRIES = 2
"""How often a local Ray cluster is started before the run gives up: Ray 2.x waits a fixed 30 s
for its node to register and raises a bare ``Exception`` past it, which a loaded machine can
hit once (seen on a 2-core CI runner)."""


def start_ray(ray: Any, address: str | None) -> None:
    """``ray.init``: joins ``address``, or starts a local cluster (tried again once when its
    start times out); a failure is a :class:`FedPharmaError` that says what to do."""
    tries = 1 if address else LOCAL_START_TRIES
    for attempt in range(1, tries + 1):
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
            return
        except Exception as exc:  # Ray's own startup errors are bare Exceptions
            ray.shutdown()
            if attempt == tries:
                where = f"join the Ray cluster at {address}" if address else "start a local Ray"
                raise FedPharmaError(
                    f"could not {where} ({type(exc).__name__}: {str(exc)[:200]}); retry on a "
                    'less loaded machine, or use [simulation] backend = "processes"'
                ) from exc


class _SiteHost:
    """An actor's body: the runtimes of its sites, answering framed tasks."""

    def __init__(self, config: dict[str, Any], names: list[str], run_dir: str) -> None:
        import torch

        from fedpharma.core.config import config_from_dict
        from fedpharma.sim.hosting import host_sites

        torch.set_num_threads(1)
        self.handlers = host_sites(config_from_dict(config), names, Path(run_dir))

    def handle(self, site: str, header: bytes, body: bytes) -> bytes:
        return answer(self.handlers, frame(site, header + body))


class RayChannel:
    """A :class:`~fedpharma.core.protocol.Channel` to sites hosted by Ray actors."""

    def __init__(self, config: RunConfig, names: Sequence[str], run_dir: Path) -> None:
        ray = self._ray = _ray()
        self._started = not ray.is_initialized()
        if self._started:
            start_ray(ray, config.simulation.address)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = min(config.simulation.workers or cpus, len(names))
        host = ray.remote(num_cpus=1)(_SiteHost)
        self._actors = [
            host.remote(config.to_dict(), group, str(run_dir)) for group in deal(names, workers)
        ]
        self._sites = {
            site: actor
            for actor, group in zip(self._actors, deal(names, workers), strict=True)
            for site in group
        }
        try:  # every actor has loaded its sites before the first task
            ray.get([actor.__ray_ready__.remote() for actor in self._actors])
        except Exception as exc:
            self.close()
            raise FedPharmaError(f"a Ray site actor could not load its sites: {exc}") from exc

    def available_sites(self) -> tuple[str, ...]:
        return tuple(sorted(self._sites))

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        ray = self._ray
        shared: dict[int, Any] = {}  # one object-store copy per distinct model
        pending: dict[Any, str] = {}
        replies: dict[str, Reply | Failure] = {}
        for site, task in tasks.items():
            actor = self._sites.get(site)
            if actor is None:
                replies[site] = Failure(site, "site is not connected")
                continue
            header, *body = encode_message_parts(task)
            model = getattr(task, "parameters", None)
            key = id(model) if model is not None else -len(pending) - 1
            if key not in shared:
                shared[key] = ray.put(b"".join(body))
            pending[actor.handle.remote(site, bytes(header), shared[key])] = site
        done, late = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for ref in done:
            site = pending[ref]
            try:
                replies[site] = decode_answer(site, ray.get(ref))
            except Exception as exc:  # an actor that died
                replies[site] = Failure(site, f"the site's actor failed: {type(exc).__name__}")
        for ref in late:
            replies[pending[ref]] = Failure(pending[ref], f"no answer within {timeout} s")
        return {site: replies[site] for site in tasks}

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        if self._started:
            self._ray.shutdown()
