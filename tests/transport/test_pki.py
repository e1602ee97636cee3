"""Provisioning: folder layout, key permissions, certificate names, revocation list."""

import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from fedpharma.core.errors import ConfigError, CryptoError
from fedpharma.secure import ckks
from fedpharma.transport import pki


def test_provision_writes_one_folder_per_party_with_private_keys_0600(tmp_path):
    made = pki.provision("trial", ["hospital-a", "pharma-c"], tmp_path / "pki")
    for name, files in made.sites.items():
        assert sorted(p.name for p in files.folder.iterdir()) == [
            "ca.pem",
            "cert.pem",
            "ckks.secret",
            "key.pem",
        ]
        cert = pki.load_certificate(files.cert)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert f"urn:fedpharma:trial:site:{name}" in sans.get_values_for_type(
            x509.UniformResourceIdentifier
        )
        assert pki.check_party_files(files, expect_client=True).common_name == name
    ckks_keys = [f.folder / pki.CKKS_SECRET_FILE for f in made.sites.values()]
    for key in [
        made.ca_key,
        made.coordinator.key,
        *(f.key for f in made.sites.values()),
        *ckks_keys,
    ]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # Every site holds the same CKKS key; the coordinator only the keyless public context.
    site_keys = [ckks.load_secret_context(path) for path in ckks_keys]
    public = ckks.load_public_context(made.ckks_public)
    assert {k.key_id for k in site_keys} == {public.key_id}
    assert not (made.coordinator.folder / pki.CKKS_SECRET_FILE).exists()
    server = pki.load_certificate(made.coordinator.cert)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert pki.read_revoked(made.revoked) == frozenset()


def test_provision_reports_every_bad_name_and_refuses_to_overwrite_a_ca(tmp_path):
    with pytest.raises(ConfigError) as caught:
        pki.provision("Trial!", ["ok", "Bad_Name", "ok"], tmp_path)
    assert len(caught.value.problems) == 3
    pki.provision("trial", ["a"], tmp_path)
    with pytest.raises(ConfigError, match="already holds a CA"):
        pki.provision("trial", ["a"], tmp_path)


def test_a_server_certificate_is_not_accepted_as_a_site_certificate(tmp_path):
    made = pki.provision("trial", ["a"], tmp_path)
    with pytest.raises(CryptoError, match="not made for a site"):
        pki.check_party_files(made.coordinator, expect_client=True)


def test_revoke_appends_the_serial_and_read_revoked_reads_it_back(tmp_path):
    made = pki.provision("trial", ["a", "b"], tmp_path)
    serial = pki.revoke(made.revoked, made.sites["a"].cert)
    assert pki.read_revoked(made.revoked) == {serial}
    made.revoked.write_text("not-hex\n")
    with pytest.raises(ConfigError, match="hex serial"):
        pki.read_revoked(made.revoked)
