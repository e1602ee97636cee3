"""Over real gRPC + mTLS: every task carries the coordinator's audit head, the site keeps it in
its state_dir, and the coordinator's run store records which head went to which site."""

from __future__ import annotations

import threading

from grpc_fakes import FAST_SITE, EchoHandler, fast_coordinator, parameters

from fedpharma.core.protocol import EvaluateTask, TrainTask
from fedpharma.server.audit import AuditHead, AuditLog, verify
from fedpharma.server.store import RunStore
from fedpharma.site.witness import HeadWitness, read_heads
from fedpharma.transport.grpc import GrpcCoordinatorServer, ServerTls, SiteTls, run_site


def test_each_task_carries_the_audit_head_the_site_keeps_and_the_store_records(pki_root, tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl", durable=False)
    audit.record("run_started")
    store = RunStore.create(tmp_path / "run.sqlite", "run-1", {}, durable=False)
    server = GrpcCoordinatorServer(
        fast_coordinator(),
        ServerTls.from_folder(pki_root / "coordinator"),
        audit=audit,
        heads_sent=store.record_heads_sent,
    )
    state_dir = tmp_path / "site-a-state"
    stop = threading.Event()
    server.start()
    tls = SiteTls.from_folder(pki_root / "sites" / "site-a")
    site = threading.Thread(
        target=run_site,
        args=(server.address, tls, EchoHandler("site-a")),
        kwargs={"settings": FAST_SITE, "stop": stop, "witness": HeadWitness(state_dir)},
        daemon=True,
    )
    site.start()
    try:
        assert server.channel.wait_for_sites(1, timeout=10) == ("site-a",)
        first = audit.head
        server.channel.exchange({"site-a": TrainTask("run-1", 1, parameters(10))}, timeout=10)
        second = audit.head  # the train round added entries (task_sent, result_accepted)
        server.channel.exchange({"site-a": EvaluateTask("run-1", 1, parameters(10))}, timeout=10)
        server.finish(wait=5)
    finally:
        stop.set()
        server.stop(grace=0.5)
        site.join(10)
    assert second.seq > first.seq
    seen = [AuditHead(h.seq, h.hash) for h in read_heads(state_dir, "run-1")]
    assert seen == [first, second]
    assert store.heads_sent() == [
        ("site-a", 1, first.seq, first.hash),
        ("site-a", 1, second.seq, second.hash),
    ]
    store.close()
    audit.close()
    witnessed = {"site-a": seen}
    assert verify(tmp_path / "audit.jsonl", witnessed=witnessed).ok
