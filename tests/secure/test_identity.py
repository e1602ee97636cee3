"""Site identities bound to the consortium PKI: what a site endorses, others can check."""

import pytest

from fedpharma.core.errors import CryptoError
from fedpharma.secure.identity import ephemeral_consortium, load_identity
from fedpharma.transport import pki


def _identity(files, name):
    return load_identity(
        name, files.ca.read_bytes(), files.cert.read_bytes(), files.key.read_bytes()
    )


def test_provisioned_sites_endorse_and_check_each_other(tmp_path):
    made = pki.provision("trial", ["site-a", "site-b"], tmp_path / "pki")
    consortium_a, site_a = _identity(made.sites["site-a"], "site-a")
    consortium_b, _ = _identity(made.sites["site-b"], "site-b")
    endorsement = site_a.endorse(b"round keys")
    consortium_b.check("site-a", b"round keys", endorsement)
    with pytest.raises(CryptoError, match="not signed by 'site-a'"):
        consortium_b.check("site-a", b"other keys", endorsement)
    with pytest.raises(CryptoError, match="certificate of 'site-a'"):
        consortium_a.check("site-b", b"round keys", endorsement)
    # a coordinator's own CA cannot vouch for a site of this consortium
    _, forged = ephemeral_consortium(["site-a"])
    with pytest.raises(CryptoError, match="CA did not issue"):
        consortium_b.check("site-a", b"round keys", forged["site-a"].endorse(b"round keys"))
    with pytest.raises(CryptoError, match="names 'site-b'"):
        _identity(made.sites["site-b"], "site-a")
