"""get_parameters / set_parameters: round trip and mismatch errors."""

import numpy as np
import pytest

from fedpharma.core.config import ModelConfig
from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters
from fedpharma.models.networks import build_model
from fedpharma.models.parameters import get_parameters, set_parameters

CONFIG = ModelConfig(kind="mlp", hidden=(8,), dropout=0.1)


def test_round_trip_copies_in_state_dict_order() -> None:
    source, target = build_model(CONFIG, 5, 2, seed=0), build_model(CONFIG, 5, 2, seed=1)
    params = get_parameters(source)
    assert params.names == tuple(source.state_dict())
    assert all(a.dtype == np.float32 for a in params.arrays)
    set_parameters(target, params)
    np.testing.assert_array_equal(get_parameters(target).flatten(), params.flatten())
    # Copies, not views: changing the module afterwards leaves params untouched.
    before = params.flatten()
    set_parameters(source, params.unflatten(before + 1.0))
    np.testing.assert_array_equal(params.flatten(), before)


def test_float64_parameters_are_accepted() -> None:
    net = build_model(CONFIG, 5, 2)
    params = get_parameters(net)
    doubled = Parameters(params.names, tuple(a.astype(np.float64) * 2 for a in params.arrays))
    set_parameters(net, doubled)
    np.testing.assert_allclose(get_parameters(net).flatten(), params.flatten() * 2, rtol=1e-6)


def test_frozen_parameters_do_not_travel() -> None:
    net = build_model(CONFIG, 5, 2)
    net.head.bias.requires_grad_(False)
    assert "head.bias" not in get_parameters(net).names


def test_name_mismatch_names_the_culprits() -> None:
    net = build_model(CONFIG, 5, 2)
    params = get_parameters(net).to_dict()
    params["head.weights"] = params.pop("head.weight")
    with pytest.raises(
        ProtocolError, match=r"missing \['head.weight'\].*unexpected \['head.weights'\]"
    ):
        set_parameters(net, Parameters.from_dict(params))


def test_shape_mismatch_names_the_parameter_and_writes_nothing() -> None:
    net = build_model(CONFIG, 5, 2)
    original = get_parameters(net)
    wider = get_parameters(build_model(CONFIG, 6, 2)).to_dict()
    bad = Parameters.from_dict(
        {**original.to_dict(), "trunk.hidden1.weight": wider["trunk.hidden1.weight"]}
    )
    zeros = bad.unflatten(np.zeros(bad.size))
    with pytest.raises(ProtocolError, match=r"'trunk.hidden1.weight' has shape \(8, 6\).*\(8, 5\)"):
        set_parameters(net, zeros)
    np.testing.assert_array_equal(get_parameters(net).flatten(), original.flatten())
