import datetime as dt

import pytest

from fedpharma.transport import pki

SITES = ("site-a", "site-b", "site-c")


@pytest.fixture(scope="session")
def pki_root(tmp_path_factory):
    """One consortium's PKI (3 sites, plus an expired one), shared by the whole session."""
    root = tmp_path_factory.mktemp("pki")
    pki.provision("trial", SITES, root, days=30)
    three_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    pki.issue_site_certificate(root, "site-old", days=1, not_before=three_days_ago)
    return root


@pytest.fixture(scope="session")
def foreign_pki(tmp_path_factory):
    """Another consortium's PKI: its site certificates must not open our coordinator."""
    root = tmp_path_factory.mktemp("foreign-pki")
    pki.provision("other", ["site-a"], root)
    return root
