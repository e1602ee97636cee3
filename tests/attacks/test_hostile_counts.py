"""A site that lies about its example count cannot take over FedAvg (issue 13: n_examples =
10^12 with a constant update moved R² from 0.58 to −992,698 in one round).

Real Federation, real codec (the in-process channel encodes every task and reply): two honest
sites and a hostile one whose reply claims 10^12 examples with a constant update of 1000. The
weakened twin weighs by the reply's claim, as before the agreed weights, and is taken over.
"""

import numpy as np
import pytest

from fedpharma.core.params import Parameters
from fedpharma.core.protocol import TrainResult, TrainTask
from fedpharma.core.protocol.codec import decode_message, encode_message_parts
from fedpharma.server import influence
from fedpharma.server.federation import Federation, FederationSettings
from fedpharma.strategy import FedAvg, SiteUpdate
from fedpharma.transport.inprocess import InProcessChannel

W0 = Parameters.from_dict({"w": np.zeros(4, dtype=np.float32)})
HONEST_STEP = 0.01


class Site:
    """Answers every train task with ``step`` added to each weight and ``n`` examples;
    ``n_by_round`` overrides the claim in given rounds."""

    def __init__(self, name, step, n, n_by_round=None):
        self.name, self.step, self.n, self.n_by_round = name, step, n, n_by_round or {}

    def handle_encoded(self, data):
        task = decode_message(data)
        assert isinstance(task, TrainTask)
        update = Parameters(
            task.parameters.names,
            tuple(np.full_like(a, self.step) for a in task.parameters.arrays),
        )
        n = self.n_by_round.get(task.round, self.n)
        return encode_message_parts(TrainResult(task.run_id, task.round, self.name, update, n))


def run(hostile, rounds=2):
    sites = {"a": Site("a", HONEST_STEP, 500), "b": Site("b", HONEST_STEP, 700), "m": hostile}
    settings = FederationSettings(evaluate_every=0, min_sites=2, max_site_examples=100_000)
    federation = Federation(FedAvg(), settings, observers=[records := Records()])
    # evaluation is skipped: evaluate only in the last round, answered by no one here
    federation.evaluate = lambda channel, parameters, rnd, run_id: ({}, {}, {})
    final = federation.run(InProcessChannel(sites), W0, rounds, run_id="run-1")
    return final.arrays[0], records.failures


class Records:
    def __init__(self):
        self.failures = {}

    def on_round(self, record):
        self.failures |= {(record.round, s): why for s, why in record.failures.items()}


def test_a_claim_of_10_to_the_12_examples_is_rejected_and_the_model_is_unharmed():
    weights, failures = run(Site("m", 1000.0, 10**12))
    np.testing.assert_allclose(weights, 2 * HONEST_STEP, rtol=1e-5)
    assert "site 'm' declares 1000000000000 training examples" in failures[(1, "m")]


def test_a_site_cannot_grow_its_weight_after_declaring_an_honest_count():
    weights, failures = run(Site("m", 1000.0, 10**12, n_by_round={1: 600}))
    assert "site 'm' claims 1000000000000 training examples in round 2" in failures[(2, "m")]
    # round 1 weighed m by the 600 it declared (its constant update, not its claim, moved it)
    expected_round_1 = (500 * HONEST_STEP + 700 * HONEST_STEP + 600 * 1000.0) / 1800
    np.testing.assert_allclose(weights, expected_round_1 + HONEST_STEP, rtol=1e-5)


@pytest.fixture
def weights_by_claim(monkeypatch):
    """The weakened twin: every reply weighs what it claims, unbounded."""

    def weigh(self, rnd, results):
        return [
            SiteUpdate(s, r.update, float(r.n_examples)) for s, r in sorted(results.items())
        ], {}

    monkeypatch.setattr(influence.AgreedWeights, "weigh", weigh)


def test_weakened_twin_weighing_by_the_claim_the_hostile_site_takes_over(weights_by_claim):
    weights, failures = run(Site("m", 1000.0, 10**12))
    assert not failures
    assert weights.min() > 1000  # the honest sites' 0.01 steps are gone
