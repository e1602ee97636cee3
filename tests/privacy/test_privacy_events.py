"""Privacy events: validation, JSON round trip, mapping to dp-accounting, composition."""

import json
import subprocess
import sys

import dp_accounting
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedpharma.core.errors import ConfigError, ProtocolError
from fedpharma.privacy import (
    ComposedEvent,
    GaussianEvent,
    PoissonSampledEvent,
    RdpAccountant,
    SelfComposedEvent,
    compose,
    dp_sgd_event,
    event_from_dict,
    record_level_bound,
)

gaussians = st.floats(0.1, 100).map(GaussianEvent)
events = st.recursive(
    gaussians,
    lambda inner: st.one_of(
        st.builds(PoissonSampledEvent, st.floats(1e-6, 1.0), inner),
        st.builds(SelfComposedEvent, inner, st.integers(1, 10**6)),
        st.lists(inner, max_size=4).map(lambda es: ComposedEvent(tuple(es))),
    ),
    max_leaves=8,
)


@given(events)
def test_every_event_survives_a_json_round_trip(event):
    assert event_from_dict(json.loads(json.dumps(event.to_dict()))) == event


@given(events)
def test_events_map_onto_the_equivalent_dp_accounting_event(event):
    def mirror(e):
        if isinstance(e, GaussianEvent):
            return dp_accounting.GaussianDpEvent(e.noise_multiplier)
        if isinstance(e, PoissonSampledEvent):
            return dp_accounting.PoissonSampledDpEvent(e.sampling_probability, mirror(e.event))
        if isinstance(e, SelfComposedEvent):
            return dp_accounting.SelfComposedDpEvent(mirror(e.event), e.count)
        return dp_accounting.ComposedDpEvent([mirror(x) for x in e.events])

    assert event.to_dp_accounting() == mirror(event)


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: GaussianEvent(0.0), "noise_multiplier"),
        (lambda: GaussianEvent(float("nan")), "noise_multiplier"),
        (lambda: PoissonSampledEvent(0.0, GaussianEvent(1.0)), "sampling_probability"),
        (lambda: PoissonSampledEvent(1.5, GaussianEvent(1.0)), "sampling_probability"),
        (lambda: SelfComposedEvent(GaussianEvent(1.0), 0), "count"),
        (lambda: SelfComposedEvent(GaussianEvent(1.0), True), "count"),
        (lambda: SelfComposedEvent(1.0, 3), "privacy event"),
        (lambda: ComposedEvent([GaussianEvent(1.0)]), "tuple"),
    ],
)
def test_invalid_parameters_are_refused_with_a_typed_error(build, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build()


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"type": "laplace", "noise_multiplier": 1.0},
        {"type": "gaussian"},
        {"type": "gaussian", "noise_multiplier": "1.0"},
        {"type": "gaussian", "noise_multiplier": -1.0},
        {
            "type": "self_composed",
            "count": 2.5,
            "event": {"type": "gaussian", "noise_multiplier": 1},
        },
        {"type": "composed", "events": "gaussian"},
        {"type": "poisson_sampled", "sampling_probability": 0.1, "event": []},
    ],
)
def test_malformed_encodings_raise_protocol_error(data):
    with pytest.raises(ProtocolError):
        event_from_dict(data)


def test_dp_sgd_event_is_steps_of_a_poisson_sampled_gaussian():
    assert dp_sgd_event(1.1, 0.01, 100) == SelfComposedEvent(
        PoissonSampledEvent(0.01, GaussianEvent(1.1)), 100
    )


def test_compose_flattens_and_merges_equal_events_without_changing_epsilon():
    step = dp_sgd_event(1.0, 0.02, 50)
    site = GaussianEvent(5.0)
    charged = [step, site, ComposedEvent((step, SelfComposedEvent(site, 3))), step]
    merged = compose(charged)
    assert merged == ComposedEvent(
        (
            SelfComposedEvent(PoissonSampledEvent(0.02, GaussianEvent(1.0)), 150),
            SelfComposedEvent(site, 4),
        )
    )
    accountant = RdpAccountant()
    assert accountant.epsilon(merged, 1e-5) == pytest.approx(
        accountant.epsilon(ComposedEvent(tuple(charged)), 1e-5), rel=1e-12
    )


def test_record_level_bound_of_a_site_event_halves_every_noise_multiplier():
    site = ComposedEvent(
        (SelfComposedEvent(GaussianEvent(4.0), 10), PoissonSampledEvent(0.5, GaussianEvent(2.0)))
    )
    assert record_level_bound(site) == ComposedEvent(
        (SelfComposedEvent(GaussianEvent(2.0), 10), PoissonSampledEvent(0.5, GaussianEvent(1.0)))
    )


def test_importing_the_privacy_package_loads_neither_torch_nor_dp_accounting():
    code = (
        "import sys, fedpharma.privacy;"
        " print(','.join(m for m in ('torch', 'dp_accounting', 'opacus') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
