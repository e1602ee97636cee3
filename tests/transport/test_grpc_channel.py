"""GrpcChannel behaves like InProcessChannel, over real gRPC with mutual TLS on 127.0.0.1."""

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from grpc_fakes import EchoHandler, SiteThread, parameters, pull_task, serving

from fedpharma.core.protocol import EvaluateResult, EvaluateTask, Failure, TrainResult, TrainTask
from fedpharma.server.audit import AuditLog, read_entries, verify
from fedpharma.server.federation import Federation, FederationSettings
from fedpharma.strategy import FedAvg
from fedpharma.transport.grpc import SiteConnection, SiteTls
from fedpharma.transport.inprocess import InProcessChannel

SITES = ("site-a", "site-b", "site-c")


def _start_sites(server, pki_root, names=SITES):
    handlers = {name: EchoHandler(name, offset=i + 1.0) for i, name in enumerate(names)}
    threads = [
        SiteThread(server.address, pki_root / "sites" / name, handlers[name]) for name in names
    ]
    assert server.channel.wait_for_sites(len(names), timeout=10) == tuple(sorted(names))
    return handlers, threads


def test_three_sites_answer_train_and_evaluate_tasks_like_the_in_process_channel(
    pki_root, tmp_path
):
    w0 = parameters(50)
    audit = AuditLog(tmp_path / "audit.jsonl")
    with serving(pki_root, audit=audit) as server:
        handlers, threads = _start_sites(server, pki_root)
        tasks = {s: TrainTask("run-1", 1, w0) for s in SITES}
        replies = server.channel.exchange(tasks, timeout=10)
        expected = InProcessChannel(handlers).exchange(tasks)
        evaluated = server.channel.exchange({s: EvaluateTask("run-1", 1, w0) for s in SITES}, 10)
        server.finish(wait=5)
        summaries = [t.join() for t in threads]
    assert set(replies) == set(SITES)
    for site in SITES:
        got, want = replies[site], expected[site]
        assert isinstance(got, TrainResult) and got.site == site
        assert got.update.names == want.update.names
        for a, b in zip(got.update.arrays, want.update.arrays, strict=True):
            np.testing.assert_array_equal(a, b)
        assert isinstance(evaluated[site], EvaluateResult)
    assert all(s.results_sent == 2 and "finished" in s.ended_because for s in summaries)
    audit.close()
    kinds = [e.kind for e in read_entries(tmp_path / "audit.jsonl")]
    assert kinds.count("join") == 3 and kinds.count("result_accepted") == 6
    assert kinds.count("task_sent") == 6 and kinds.count("leave") == 3
    assert verify(tmp_path / "audit.jsonl").ok


def test_a_federation_runs_rounds_over_grpc(pki_root):
    with serving(pki_root) as server:
        _, threads = _start_sites(server, pki_root)
        federation = Federation(FedAvg(), FederationSettings(min_sites=3, timeout=10))
        final = federation.run(server.channel, parameters(20), rounds=2, run_id="run-1")
        server.finish(wait=5)
        for t in threads:
            t.join()
    # the echo update is w + offset, so FedAvg gives w' = 2w + mean offset (2): 1 → 4 → 10
    np.testing.assert_allclose(final.to_dict()["b"], np.full(3, 10.0), rtol=1e-6)


def test_a_10_mb_parameter_payload_streams_in_chunks(pki_root):
    w0 = parameters(3_000_000)  # float32: 12 MB, far above gRPC's per-message limit
    with serving(pki_root) as server:
        _, threads = _start_sites(server, pki_root, names=("site-a",))
        replies = server.channel.exchange({"site-a": TrainTask("run-1", 1, w0)}, timeout=20)
        server.finish(wait=5)
        threads[0].join()
        limit = server.settings.limits.max_message_bytes
        assert server.channel.bytes_sent > 10 * limit
        assert server.channel.bytes_received > 10 * limit
    reply = replies["site-a"]
    assert isinstance(reply, TrainResult)
    np.testing.assert_array_equal(reply.update.to_dict()["w"], w0.to_dict()["w"] + 1.0)


def test_unconnected_and_silent_sites_get_failures_and_late_joiners_become_available(pki_root):
    with serving(pki_root) as server:
        _, threads = _start_sites(server, pki_root, names=("site-a",))
        silent = SiteConnection(
            server.address, SiteTls.from_folder(pki_root / "sites" / "site-b"), "site-b"
        )
        silent.join()  # joins, then never pulls: its task times out
        tasks = {s: TrainTask("run-1", 1, parameters(5)) for s in SITES}
        started = time.monotonic()
        replies = server.channel.exchange(tasks, timeout=1.5)
        assert time.monotonic() - started < 5
        assert isinstance(replies["site-a"], TrainResult)
        assert replies["site-b"] == Failure("site-b", "no answer within the 1.5 s deadline")
        assert replies["site-c"] == Failure("site-c", "site is not connected")
        late = SiteThread(server.address, pki_root / "sites" / "site-c", EchoHandler("site-c"))
        assert "site-c" in server.channel.wait_for_sites(3, timeout=10)
        silent.leave("test over")
        silent.close()
        server.finish(wait=5)
        for t in [*threads, late]:
            t.join()


def test_a_rejoining_site_gets_its_unanswered_task_again(pki_root):
    with serving(pki_root) as server:
        folder = pki_root / "sites" / "site-a"
        first = SiteConnection(server.address, SiteTls.from_folder(folder), "site-a")
        first.join()
        with ThreadPoolExecutor(1) as pool:
            task = TrainTask("run-1", 4, parameters(5))
            pending = pool.submit(server.channel.exchange, {"site-a": task}, 10)
            pull_task(first)
            first.close()  # crashes before answering
            site = SiteThread(server.address, folder, EchoHandler("site-a"))
            reply = pending.result(timeout=60)["site-a"]
        server.finish(wait=5)
        site.join()
    assert isinstance(reply, TrainResult) and reply.round == 4


def test_every_join_of_a_site_is_a_new_connection(pki_root):
    with serving(pki_root) as server:
        tls = SiteTls.from_folder(pki_root / "sites" / "site-a")
        assert server.channel.connection("site-a") == 0
        with SiteConnection(server.address, tls, "site-a") as site:
            site.join()
            assert server.channel.connection("site-a") == 1
            site.join()  # rejoins without ever leaving
            assert server.channel.connection("site-a") == 2


def test_a_site_in_its_own_process_serves_a_round(pki_root):
    script = Path(__file__).with_name("grpc_fakes.py")
    with serving(pki_root) as server:
        process = subprocess.Popen(
            [sys.executable, str(script), server.address, str(pki_root / "sites" / "site-b")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.channel.wait_for_sites(1, timeout=20) == ("site-b",)
            replies = server.channel.exchange({"site-b": TrainTask("run-1", 1, parameters(9))}, 20)
            server.finish(wait=10)
            out, err = process.communicate(timeout=20)
        finally:
            process.kill()
    assert isinstance(replies["site-b"], TrainResult)
    assert process.returncode == 0, err
    assert "joined run run-1" in out and "round 1: result sent" in out
    assert "summary: 1 results, run finished" in out


def test_a_site_reconnects_to_a_restarted_coordinator(pki_root):
    folder = pki_root / "sites" / "site-a"
    with serving(pki_root) as first:
        site = SiteThread(first.address, folder, EchoHandler("site-a"))
        first.channel.wait_for_sites(1, timeout=10)
        port = first.port
    # the coordinator is gone (e.g. killed); the site keeps retrying until it is back
    with serving(pki_root, address=f"127.0.0.1:{port}") as second:
        assert second.channel.wait_for_sites(1, timeout=10) == ("site-a",)
        replies = second.channel.exchange({"site-a": TrainTask("run-1", 2, parameters(5))}, 10)
        second.finish(wait=5)
        summary = site.join()
    assert isinstance(replies["site-a"], TrainResult)
    assert summary.results_sent == 1
    assert any(line.startswith("connection problem") for line in site.status)


def test_a_dismissed_site_is_told_why_and_unlisted_until_it_joins_again(pki_root):
    with serving(pki_root) as server:
        _, threads = _start_sites(server, pki_root, names=("site-a", "site-b"))
        server.channel.dismiss("site-b", "refused at join: radius 3, expected 2")
        assert server.channel.available_sites() == ("site-a",)
        summary = threads[1].join()
        assert summary.ended_because == "run finished (refused at join: radius 3, expected 2)"
        # Its operator fixes it and starts it again: a new join lifts the dismissal.
        again = SiteThread(server.address, pki_root / "sites" / "site-b", EchoHandler("site-b"))
        assert server.channel.wait_for_sites(2, timeout=10) == ("site-a", "site-b")
        server.finish(wait=5)
        threads[0].join()
        assert "run finished" in again.join().ended_because
