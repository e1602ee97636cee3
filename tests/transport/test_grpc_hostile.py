"""Hostile results: malformed, truncated, oversized, replayed or stale pushes are rejected with a
typed error, recorded in the audit log, and the coordinator keeps serving the other sites."""

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from grpc_fakes import EchoHandler, SiteThread, parameters, pull_task, serving

from fedpharma.core.protocol import Failure, TrainResult, TrainTask
from fedpharma.server.audit import AuditLog, read_entries, verify
from fedpharma.transport.grpc import (
    PayloadTooLarge,
    ResultRejected,
    SiteConnection,
    SiteTls,
    WireLimits,
)
from fedpharma.transport.grpc.wire import OutgoingPayload, payload_header


def _header(task, payload, **changes):
    header = payload_header(
        OutgoingPayload.of((payload,)),
        run_id=task.header.run_id,
        round=task.header.round,
        task_id=task.header.task_id,
        site="site-b",
    )
    for name, value in changes.items():
        setattr(header, name, value)
    return header


def _answer(task):
    """An honest site's encoded answer to ``task``, as one bytes object an attack can cut."""
    return b"".join(EchoHandler("site-b").handle_encoded(task.payload))


def _chunks(payload, chunk_bytes):
    return OutgoingPayload.of((payload,)).chunks(chunk_bytes)


def _round_with_a_hostile_site(pki_root, tmp_path, attack, **server_overrides):
    """One round: site-a honest (a real site loop), site-b driven by ``attack(connection, task)``.

    Returns what the attack returns, the exchange's replies and the audit (kind, site) pairs.
    """
    audit = AuditLog(tmp_path / "audit.jsonl")
    with serving(pki_root, audit=audit, **server_overrides) as server:
        honest = SiteThread(server.address, pki_root / "sites" / "site-a", EchoHandler("site-a"))
        tls = SiteTls.from_folder(pki_root / "sites" / "site-b")
        with SiteConnection(server.address, tls, "site-b") as hostile:
            hostile.join()
            server.channel.wait_for_sites(2, timeout=10)
            tasks = {s: TrainTask("run-1", 3, parameters(1000)) for s in ("site-a", "site-b")}
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(server.channel.exchange, tasks, 5)
                task = pull_task(hostile)
                error = attack(hostile, task)
                replies = pending.result(timeout=60)
            # the coordinator still serves: the next round works for both
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(
                    server.channel.exchange,
                    {s: TrainTask("run-1", 4, parameters(10)) for s in tasks},
                    5,
                )
                task = pull_task(hostile)
                hostile.push(task, (_answer(task),))
                assert all(isinstance(r, TrainResult) for r in pending.result(timeout=60).values())
            hostile.leave("done")
        server.finish(wait=5)
        honest.join()
    audit.close()
    assert verify(tmp_path / "audit.jsonl").ok
    assert isinstance(replies["site-a"], TrainResult)
    return error, replies, [(e.kind, e.site) for e in read_entries(tmp_path / "audit.jsonl")]


def test_a_malformed_result_is_rejected_and_recorded(pki_root, tmp_path):
    def attack(connection, task):
        garbage = b"FPM1 this is not a message" * 100
        with pytest.raises(ResultRejected) as caught:
            connection.push_raw(_header(task, garbage), _chunks(garbage, 1024))
        return caught.value

    error, replies, kinds = _round_with_a_hostile_site(pki_root, tmp_path, attack)
    assert "header" in str(error)
    assert isinstance(replies["site-b"], Failure) and "rejected" in replies["site-b"].reason
    assert ("result_rejected", "site-b") in kinds


def test_a_truncated_result_is_rejected_and_may_be_sent_again(pki_root, tmp_path):
    def attack(connection, task):
        answer = _answer(task)
        with pytest.raises(ResultRejected, match="truncated") as caught:
            connection.push_raw(_header(task, answer), _chunks(answer[:-100], 1024))
        connection.push(task, (answer,))  # the task stayed open: the whole result is accepted
        return caught.value

    _, replies, kinds = _round_with_a_hostile_site(pki_root, tmp_path, attack)
    assert isinstance(replies["site-b"], TrainResult)
    assert kinds.count(("result_rejected", "site-b")) == 1


def test_a_corrupted_result_fails_its_digest(pki_root, tmp_path):
    def attack(connection, task):
        answer = _answer(task)
        header = _header(task, answer, sha256=hashlib.sha256(b"other").digest())
        with pytest.raises(ResultRejected) as caught:
            connection.push_raw(header, _chunks(answer, 4096))
        return caught.value

    error, _, _ = _round_with_a_hostile_site(pki_root, tmp_path, attack)
    assert "sha256" in str(error)


def test_an_oversized_result_is_refused_before_it_is_read(pki_root, tmp_path):
    limits = WireLimits(chunk_bytes=16 * 1024, max_payload_bytes=64 * 1024)

    def attack(connection, task):
        answer = _answer(task)
        with pytest.raises(PayloadTooLarge) as caught:
            connection.push_raw(_header(task, answer, total_bytes=10 * 1024**3), iter(()))
        return caught.value

    error, replies, _ = _round_with_a_hostile_site(pki_root, tmp_path, attack, limits=limits)
    assert isinstance(error, PayloadTooLarge) and "limit" in str(error)
    assert "limit" in replies["site-b"].reason


def test_a_message_above_the_grpc_limit_is_refused_and_the_site_may_answer_again(pki_root):
    limits = WireLimits(chunk_bytes=16 * 1024)
    with serving(pki_root, limits=limits) as server:
        tls = SiteTls.from_folder(pki_root / "sites" / "site-b")
        with SiteConnection(server.address, tls, "site-b") as site:
            site.join()
            with ThreadPoolExecutor(1) as pool:
                task_sent = TrainTask("run-1", 1, parameters(10))
                pending = pool.submit(server.channel.exchange, {"site-b": task_sent}, 5)
                task = pull_task(site)
                big = b"\0" * (1024 * 1024)  # one message 16x the coordinator's limit
                with pytest.raises(PayloadTooLarge, match="too large"):
                    site.push_raw(_header(task, big), [(big,)])
                site.push(task, (_answer(task),))
                assert isinstance(pending.result(timeout=60)["site-b"], TrainResult)
            site.leave("done")


def test_replayed_and_stale_results_are_rejected(pki_root, tmp_path):
    def attack(connection, task):
        answer = _answer(task)
        with pytest.raises(ResultRejected, match="stale"):
            stale = _header(task, answer, round=task.header.round - 1)
            connection.push_raw(stale, _chunks(answer, 4096))
        connection.push(task, (answer,))  # accepted
        with pytest.raises(ResultRejected) as caught:
            connection.push(task, (answer,))  # replayed: no outstanding task any more
        return caught.value

    error, replies, kinds = _round_with_a_hostile_site(pki_root, tmp_path, attack)
    assert "replayed" in str(error)
    assert isinstance(replies["site-b"], TrainResult)
    assert kinds.count(("result_rejected", "site-b")) == 2
