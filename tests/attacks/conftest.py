"""One provisioned consortium for the whole attack suite: two honest sites and a hostile one,
each holding a valid certificate of the consortium's CA."""

import pytest

from fedpharma.transport import pki
from tests.attacks.arena import HONEST, HOSTILE


@pytest.fixture(scope="session")
def consortium(tmp_path_factory):
    root = tmp_path_factory.mktemp("attack-pki")
    pki.provision("attacked", (*HONEST, HOSTILE), root, days=30)
    return root
