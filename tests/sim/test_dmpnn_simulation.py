"""chemprop's D-MPNN federated end to end from a molecule CSV (skipped without chemprop)."""

from __future__ import annotations

import pytest

from fedpharma.core.config import config_from_dict
from fedpharma.models.plugin_identity import plugin_identity

pytest.importorskip("chemprop", reason="the fedpharma[chemprop] extra is not installed")


def test_the_dmpnn_federates_with_private_heads_over_its_message_passing_trunk(
    molecules_csv, tmp_path
):
    from fedpharma.sim.engine import simulate

    identity = plugin_identity("dmpnn")
    assert identity is not None
    config = config_from_dict(
        {
            "rounds": 2,
            "baselines": False,
            "privacy_audit": False,
            "dataset": {
                "path": str(molecules_csv),
                "label_columns": ["pIC50"],
                "task": "regression",
            },
            "features": {"n_bits": 64},
            "partition": {"n_sites": 3},
            "model": {"plugin": "dmpnn", "hidden": [32, 16], "private_heads": True},
            "training": {"batch_size": 16, "learning_rate": 0.003},
            "site_policy": {"approved_plugins": [identity.digest]},
        }
    )
    result = simulate(config, tmp_path / "run")
    assert result.summary.curves.rounds == (1, 2)
    names = result.parameters.names
    assert any(n.startswith("trunk.message_passing.") for n in names)
    assert not any(n.startswith("head.") for n in names)  # each site kept its head
