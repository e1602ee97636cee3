"""What the simulation's worker processes and Ray actors share: the sites a worker hosts, the
feature cache they read them through, and the framing of their tasks and replies (codec bytes
behind the site's name and a status byte).
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fedpharma.core.config import RunConfig
from fedpharma.core.errors import FedPharmaError, ProtocolError
from fedpharma.core.protocol.codec import decode_message
from fedpharma.core.protocol.messages import Failure, Reply, Task
from fedpharma.models.factory import build_trainer
from fedpharma.sim.sites import build_site_runtimes, prepare_sites, site_trainers
from fedpharma.sim.tabular import apply_fit, hosted_fit, is_tabular_file, transformed
from fedpharma.transport.inprocess import MessageHandler

OK, ERROR = b"\x00", b"\x01"
RUN_FEATURE_CACHE = "feature-cache"  # under the run folder, where [dataset] cache = false


def worker_count(config: RunConfig, n_sites: int) -> int:
    """``[simulation] workers``, or one per core; never more than there are sites."""
    wanted = config.simulation.workers or (os.cpu_count() or 1)
    return max(1, min(wanted, n_sites))


def through_cache(config: RunConfig, run_dir: Path) -> RunConfig:
    """``config`` for the workers: molecule files are read through the feature cache, so only
    the first worker to start featurizes (under the entry's lock) and the others read its
    arrays. Where ``[dataset] cache = false`` the workers share a run-private cache under
    ``run_dir`` instead, which :func:`fedpharma.sim.backends.open_sites` removes afterwards."""
    if config.dataset.cache or config.dataset.path is None or config.dataset.kind != "molecules":
        return config
    private = dataclasses.replace(
        config.dataset, cache=True, cache_dir=str(run_dir / RUN_FEATURE_CACHE)
    )
    return dataclasses.replace(config, dataset=private)


def deal(names: Sequence[str], workers: int) -> list[list[str]]:
    """Sites dealt to ``workers`` in name order (site k to worker k mod workers)."""
    ordered = sorted(names)
    return [ordered[w::workers] for w in range(workers)]


def host_sites(config: RunConfig, names: Sequence[str], run_dir: Path) -> dict[str, MessageHandler]:
    """The runtimes of sites ``names``, built in this process from the data it loads itself:
    the dataset is partitioned as the driver would, and only these sites' rows are kept (a
    tabular file's through the fit the driver wrote to ``run_dir``)."""
    full = prepare_sites(config)
    mine = {name: full.sites[name] for name in names}
    # The whole dataset is dropped; a zero-row view keeps its task, shape and names.
    sim = dataclasses.replace(full, sites=mine, dataset=full.dataset.subset(np.arange(0)))
    del full
    if is_tabular_file(config):
        fitted = hosted_fit(config, run_dir)
        sim = dataclasses.replace(
            sim,
            sites=apply_fit(fitted, sim.sites),
            dataset=transformed(fitted, sim.dataset),
            targets=fitted.target_scaling,
        )
    trainer = build_trainer(config, sim.dataset, targets=sim.targets)
    runtimes = build_site_runtimes(config, sim, site_trainers(config, sim, trainer), run_dir)
    return dict(runtimes)


def frame(site: str, payload: bytes) -> bytes:
    """A task for one hosted site: the site's name (u16 length, UTF-8) then the task's bytes."""
    name = site.encode()
    return struct.pack("<H", len(name)) + name + payload


def unframe(data: bytes) -> tuple[str, memoryview]:
    view = memoryview(data)
    if len(view) < 2:
        raise ProtocolError("a worker frame needs the site's name")
    (length,) = struct.unpack_from("<H", view)
    return bytes(view[2 : 2 + length]).decode(), view[2 + length :]


def answer(handlers: Mapping[str, MessageHandler], data: bytes) -> bytes:
    """A hosted site's encoded reply to a framed task (an error status where it cannot)."""
    try:
        site, task = unframe(data)
        handler = handlers.get(site)
        if handler is None:
            return ERROR + f"site {site!r} is not hosted by this worker".encode()
        return OK + b"".join(handler.handle_encoded(task))
    except FedPharmaError as exc:
        return ERROR + f"{type(exc).__name__}: {exc}".encode()


def decode_answer(site: str, data: bytes) -> Reply | Failure:
    if data[:1] != OK:
        return Failure(site, data[1:].decode(errors="replace") or "the worker failed")
    try:
        reply = decode_message(memoryview(data)[1:])
    except FedPharmaError as exc:
        return Failure(site, f"{type(exc).__name__}: {exc}")
    if isinstance(reply, Task):
        return Failure(site, f"site answered with a {type(reply).__name__}")
    return reply
