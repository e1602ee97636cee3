"""chemprop's D-MPNN federated end to end from a molecule CSV (skipped without chemprop)."""

from __future__ import annotations

import numpy as np
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


def test_the_join_check_compares_how_sites_build_their_molecular_graphs():
    import dataclasses

    from fedpharma.core.config import FeaturesConfig
    from fedpharma.data.preprocessing import SiteDescription, reference_smiles
    from fedpharma.models.plugin import plugin_inputs
    from fedpharma.server.join import JoinCheck, PreprocessingMismatch

    def reference() -> tuple[str, ...]:
        return reference_smiles(16)

    features = FeaturesConfig(n_bits=64)
    graphs = plugin_inputs("dmpnn", reference)
    assert (
        graphs["chemprop_version"] == "2.3.1" and len(str(graphs["graph_reference_digest"])) == 64
    )
    assert plugin_inputs("mlp", reference) == {}  # fingerprints only: nothing more to compare
    check = JoinCheck(SiteDescription.expected(features, n_molecules=16, model_inputs=graphs))
    site = SiteDescription.of_site(features, n_molecules=16, model_inputs=graphs)
    check.check("site-1", site)  # the same graphs: admitted
    other = {**graphs, "graph_reference_digest": "0" * 64}  # e.g. another atom featurizer
    with pytest.raises(PreprocessingMismatch, match="graph_reference_digest"):
        check.check("site-2", dataclasses.replace(site, recipe={**site.recipe, **other}))


def test_the_dmpnn_federates_from_an_sdf_exactly_as_from_the_same_molecules_in_a_csv(
    molecules_csv, tmp_path
):
    # An SDF was refused: only a CSV kept the SMILES the D-MPNN builds its graphs from.
    import csv

    from rdkit import Chem

    from fedpharma.sim.engine import simulate

    identity = plugin_identity("dmpnn")
    assert identity is not None
    sdf = tmp_path / "series.sdf"
    with Chem.SDWriter(str(sdf)) as writer:
        for row in csv.DictReader(molecules_csv.open()):
            mol = Chem.MolFromSmiles(row["smiles"])
            mol.SetProp("pIC50", row["pIC50"])
            writer.write(mol)

    def federate(path, run):
        config = config_from_dict(
            {
                "rounds": 1,
                "baselines": False,
                "privacy_audit": False,
                "dataset": {"path": str(path), "label_columns": ["pIC50"], "task": "regression"},
                "features": {"n_bits": 64},
                "partition": {"n_sites": 2},
                "model": {"plugin": "dmpnn", "hidden": [16, 8]},
                "training": {"batch_size": 32, "learning_rate": 0.003},
                "site_policy": {"approved_plugins": [identity.digest]},
            }
        )
        return simulate(config, tmp_path / run).parameters

    from_sdf, from_csv = federate(sdf, "sdf"), federate(molecules_csv, "csv")
    assert any(n.startswith("trunk.message_passing.") for n in from_sdf.names)
    assert from_sdf.names == from_csv.names
    assert all(np.array_equal(a, b) for a, b in zip(from_sdf.arrays, from_csv.arrays, strict=True))
