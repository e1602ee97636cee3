"""Identity over mutual TLS: foreign, expired and revoked certificates, impersonation, versions."""

import pytest
from grpc_fakes import EchoHandler, SiteThread, fast_coordinator, parameters, serving

import fedpharma.transport.grpc.client as client_module
from fedpharma.core.errors import ConfigError, TransportError
from fedpharma.core.protocol import PROTOCOL_VERSION, TrainTask
from fedpharma.server.audit import AuditLog, read_entries
from fedpharma.transport import pki
from fedpharma.transport.grpc import (
    CertificateRefused,
    GrpcCoordinatorServer,
    SiteConnection,
    SiteTls,
    VersionMismatch,
    run_site,
)
from fedpharma.transport.pki import PartyFiles


def _connect(address, files, name):
    return SiteConnection(address, SiteTls(files), name)


def test_a_site_certificate_from_another_ca_is_refused(pki_root, foreign_pki):
    foreign = PartyFiles.in_folder(foreign_pki / "sites" / "site-a")
    ours = PartyFiles.in_folder(pki_root / "sites" / "site-a")
    # the foreign cert, with our CA so the site itself trusts the coordinator
    mixed = PartyFiles(foreign.folder, ours.ca, foreign.cert, foreign.key)
    with serving(pki_root) as server:
        with pytest.raises(CertificateRefused, match="not issued by the CA"):
            run_site(server.address, SiteTls(mixed), EchoHandler("site-a"))
        # without the local check the coordinator's TLS handshake itself refuses it
        with (
            _connect(server.address, mixed, "site-a") as connection,
            pytest.raises(TransportError, match="unknown CA"),
        ):
            connection.join()
        # and a site trusting another CA refuses our coordinator
        with (
            _connect(server.address, foreign, "site-a") as connection,
            pytest.raises(CertificateRefused, match="unknown CA"),
        ):
            connection.join()
        assert server.channel.available_sites() == ()


def test_an_expired_certificate_is_refused(pki_root):
    expired = PartyFiles.in_folder(pki_root / "sites" / "site-old")
    with serving(pki_root) as server:
        with pytest.raises(CertificateRefused, match="expired"):
            run_site(server.address, SiteTls(expired), EchoHandler("site-old"))
        with (
            _connect(server.address, expired, "site-old") as connection,
            pytest.raises(TransportError, match="expired"),
        ):
            connection.join()


def test_a_revoked_certificate_is_refused_naming_revocation(pki_root, tmp_path):
    files = pki.issue_site_certificate(pki_root, "site-r")
    audit = AuditLog(tmp_path / "audit.jsonl")
    with serving(pki_root, audit=audit) as server:
        with _connect(server.address, files, "site-r") as connection:
            connection.join()
            pki.revoke(pki_root / "coordinator" / "revoked.txt", files.cert)
            with pytest.raises(CertificateRefused, match="revoked"):
                connection.heartbeat()  # refused on the very next call, no restart needed
            with pytest.raises(CertificateRefused, match="revoked"):
                connection.join()
        assert "site-r" not in server.channel.available_sites()
    audit.close()
    denied = [e for e in read_entries(tmp_path / "audit.jsonl") if e.kind == "denied"]
    assert denied and "revoked" in denied[0].reason and denied[0].site == "site-r"


def test_site_a_certificate_cannot_speak_as_site_b(pki_root, tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    a_files = PartyFiles.in_folder(pki_root / "sites" / "site-a")
    with serving(pki_root, audit=audit) as server:
        with _connect(server.address, a_files, "site-b") as impostor:
            with pytest.raises(CertificateRefused, match="belongs to site 'site-a'"):
                impostor.join()
            with pytest.raises(CertificateRefused, match="belongs to site 'site-a'"):
                impostor.pull(0.1)
        assert server.channel.available_sites() == ()
        # a genuine site-a whose *payload* claims to be site-b is rejected too
        liar = SiteThread(server.address, a_files.folder, EchoHandler("site-b"))
        server.channel.wait_for_sites(1, timeout=10)
        reply = server.channel.exchange({"site-a": TrainTask("run-1", 1, parameters(4))}, 10)
        server.finish(wait=5)
        liar.join()
    assert "in the name of 'site-b'" in reply["site-a"].reason
    audit.close()
    kinds = [e.kind for e in read_entries(tmp_path / "audit.jsonl")]
    assert kinds.count("denied") == 2 and "result_rejected" in kinds


def test_a_protocol_version_mismatch_names_both_versions(pki_root, monkeypatch):
    monkeypatch.setattr(client_module, "PROTOCOL_VERSION", 99)
    with serving(pki_root) as server:
        folder = pki_root / "sites" / "site-a"
        with pytest.raises(VersionMismatch, match=rf"version 99.*version {PROTOCOL_VERSION}"):
            run_site(server.address, SiteTls.from_folder(folder), EchoHandler("site-a"))


def test_plaintext_needs_the_explicit_insecure_flag_and_warns(caplog):
    with pytest.raises(ConfigError, match="insecure=True"):
        GrpcCoordinatorServer(fast_coordinator(), None)
    status = []
    server = GrpcCoordinatorServer(fast_coordinator(), None, insecure=True, on_status=status.append)
    server.start()
    try:
        with SiteConnection(server.address, None, "site-a") as connection:
            assert connection.join().run_id == "run-1"
    finally:
        server.stop(0)
    assert any("INSECURE" in line for line in status)
    assert "INSECURE" in caplog.text
