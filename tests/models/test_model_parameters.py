"""get_parameters / set_parameters / HostCopies: round trip, mismatch errors, reused memory."""

import numpy as np
import pytest
import torch

from fedpharma.core.config import ModelConfig
from fedpharma.core.errors import ProtocolError
from fedpharma.core.params import Parameters, encode
from fedpharma.models.networks import build_model
from fedpharma.models.parameters import HostCopies, get_parameters, set_parameters

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


def test_the_column_major_first_layer_travels_row_major_and_keeps_its_layout() -> None:
    net = build_model(CONFIG, 5, 2)
    weight = net.first_layer().weight
    name = next(n for n, p in net.named_parameters() if p is weight)
    assert not weight.is_contiguous() and weight.t().is_contiguous()  # what build_model stores
    params = get_parameters(net)
    assert all(a.flags.c_contiguous for a in params.arrays)
    np.testing.assert_array_equal(params.to_dict()[name], weight.detach().numpy())
    storage = weight.data_ptr()
    for dtype in (np.float32, np.float64):
        distinct = params.unflatten(np.arange(params.size, dtype=np.float64)).to_dict()
        set_parameters(
            net, Parameters(tuple(distinct), tuple(a.astype(dtype) for a in distinct.values()))
        )
        np.testing.assert_array_equal(weight.detach().numpy(), distinct[name])
        assert weight.data_ptr() == storage and weight.t().is_contiguous()
    assert encode(get_parameters(net)) == encode(Parameters.from_dict(distinct))


def test_repeated_copies_reuse_only_the_memory_nobody_refers_to() -> None:
    net = build_model(CONFIG, 5, 2)
    copies = HostCopies()
    first = copies.copy(net)
    view = first.arrays[0][:2]  # a caller's view of the first array
    tensor = torch.from_numpy(first.arrays[1])  # and a tensor over the second
    seen = view.copy(), tensor.clone()
    addresses = [a.ctypes.data for a in first.arrays]
    del first
    set_parameters(net, get_parameters(net).unflatten(np.arange(get_parameters(net).size)))
    second = copies.copy(net)
    np.testing.assert_array_equal(second.flatten(), get_parameters(net).flatten())
    np.testing.assert_array_equal(view, seen[0])  # what a caller still holds is never written
    assert torch.equal(tensor, seen[1])
    reused = [a.ctypes.data == old for a, old in zip(second.arrays, addresses, strict=True)]
    assert reused == [False, False, True, True]
    assert not any(a.flags.writeable for a in second.arrays)
