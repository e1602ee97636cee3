"""Architecture, parameter names and seeded initialisation of build_model."""

import numpy as np
import pytest
import torch
from torch import nn

from fedpharma.core.config import ModelConfig
from fedpharma.models.networks import build_model
from fedpharma.models.parameters import get_parameters


def test_mlp_has_readable_names_and_no_batchnorm() -> None:
    net = build_model(ModelConfig(kind="mlp", hidden=(16, 8), dropout=0.2), 10, 3)
    assert get_parameters(net).names == (
        "trunk.hidden1.weight",
        "trunk.hidden1.bias",
        "trunk.hidden2.weight",
        "trunk.hidden2.bias",
        "head.weight",
        "head.bias",
    )
    kinds = [type(m) for m in net.trunk]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout] * 2
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert list(net.buffers()) == []
    assert net(torch.zeros(5, 10)).shape == (5, 3)


def test_linear_is_a_single_layer() -> None:
    net = build_model(ModelConfig(kind="linear"), 7, 2)
    params = get_parameters(net)
    assert params.names == ("head.weight", "head.bias")
    assert params.shapes == ((2, 7), (2,))


def test_initialisation_depends_on_seed_only_and_leaves_global_rng_alone() -> None:
    config = ModelConfig(hidden=(32,))
    state = torch.get_rng_state()
    a, b, c = (get_parameters(build_model(config, 6, 2, seed=s)) for s in (1, 1, 2))
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(a.flatten(), b.flatten())
    assert not np.array_equal(a.flatten(), c.flatten())
    # PyTorch's default nn.Linear scale: U(±1/√fan_in).
    assert np.abs(a.to_dict()["trunk.hidden1.weight"]).max() <= 1 / np.sqrt(6)


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="n_tasks"):
        build_model(ModelConfig(), 4, 0)
