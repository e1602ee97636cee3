"""What the SecAgg server takes once per site and once per round: a second roster, a repeated
share bundle, masked input, signature or unmasking response is refused naming the site; and the
secure sum it returns is labelled with its run and round.

Written against the survivors of `scripts/mutation.py secagg` (README, Development notes).
"""

from __future__ import annotations

import pytest

from fedpharma.core.errors import ProtocolError
from tests.secure.test_secagg import Round, wire


def test_each_phase_is_taken_once_and_a_repeated_message_is_refused_naming_the_site():
    rnd = Round()
    server, parties = rnd.server, rnd.parties
    ads = [wire(p.advertise_keys()) for p in parties.values()]
    roster = wire(server.roster(ads))
    with pytest.raises(ProtocolError, match=r"^the key roster of this round is already fixed$"):
        server.roster(ads)

    bundles = [wire(p.share_keys(roster)) for p in parties.values()]
    with pytest.raises(ProtocolError, match=r"^unexpected or repeated share bundle from 'site-a'$"):
        server.route_shares([bundles[0], *bundles])

    deliveries = server.route_shares(bundles)
    masked = [
        wire(parties[s].masked_input(wire(deliveries[s]), rnd.contributions[s])) for s in rnd.sites
    ]
    with pytest.raises(ProtocolError, match=r"^unexpected or repeated masked input from 'site-a'$"):
        server.collect_masked_inputs([masked[0], *masked])
    survivors = wire(server.collect_masked_inputs(masked))

    signatures = [wire(parties[s].consistency(survivors)) for s in rnd.sites]
    with pytest.raises(ProtocolError, match=r"^unexpected or repeated signature from 'site-a'$"):
        server.collect_signatures([signatures[0], *signatures])
    proof = wire(server.collect_signatures(signatures))
    with pytest.raises(ProtocolError, match=r"^signatures are collected once, after the survivor"):
        server.collect_signatures(signatures)

    responses = [wire(parties[s].unmask(proof)) for s in rnd.sites]
    with pytest.raises(
        ProtocolError, match=r"^unexpected or repeated unmasking shares from 'site-a'$"
    ):
        server.unmask([responses[0], *responses])
    total = server.unmask(responses)
    assert (total.run_id, total.round) == ("run-1", 4)
