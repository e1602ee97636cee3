"""chemprop's directed message-passing neural network (D-MPNN) as a model plugin.

Yang et al. 2019, "Analyzing Learned Molecular Representations for Property Prediction"
(J. Chem. Inf. Model. 59(8)): messages pass along directed bonds for ``depth`` steps, atom
states are averaged into one vector per molecule, and a feed-forward network predicts every
task. ``[model] plugin = "dmpnn"`` (the ``fedpharma[chemprop]`` extra, chemprop 2.3.1): each
site builds the molecular graphs from its own SMILES (``Dataset.smiles``) with chemprop's
default featurizer; ``[model] hidden`` gives the message width, then the FFN's hidden widths.

Parameter names: ``trunk.message_passing.*`` and ``trunk.ffn.*`` (shared), ``head.*`` (one
output per task, kept at the site with private heads). The multitask loss with missing labels
is fedpharma's masked loss. DP-SGD is refused: the message-passing layers' rows are bonds and
atoms, not molecules, so Opacus would bound each bond's gradient, not each molecule's.
Only chemprop's ``nn``, ``featurizers`` and ``data`` modules are used (no Lightning trainer).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from chemprop.data import BatchMolGraph, MolGraph
from chemprop.featurizers import SimpleMoleculeMolGraphFeaturizer
from chemprop.nn import BondMessagePassing, MeanAggregation
from rdkit import Chem
from torch import nn

from fedpharma.core.config import ModelConfig
from fedpharma.core.dataset import Dataset
from fedpharma.core.errors import DataError
from fedpharma.models.batches import TensorData
from fedpharma.models.plugin import ModelShape, PluginInputs

DEPTH = 3  # message-passing steps (chemprop's default)
_FEATURIZER = SimpleMoleculeMolGraphFeaturizer()


class DMPNNNetwork(nn.Module):
    """``head(ffn(mean over atoms(message_passing(graph))))``."""

    def __init__(self, hidden: Sequence[int], dropout: float, n_tasks: int) -> None:
        super().__init__()
        width = hidden[0]
        ffn: OrderedDict[str, nn.Module] = OrderedDict()
        for i, out_width in enumerate(hidden[1:], start=1):
            ffn[f"hidden{i}"] = nn.Linear(width, out_width)
            ffn[f"relu{i}"] = nn.ReLU()
            ffn[f"dropout{i}"] = nn.Dropout(dropout)
            width = out_width
        self.trunk = nn.ModuleDict(
            {
                "message_passing": BondMessagePassing(
                    d_v=_FEATURIZER.atom_fdim,
                    d_e=_FEATURIZER.bond_fdim,
                    d_h=hidden[0],
                    depth=DEPTH,
                    dropout=dropout,
                ),
                "ffn": nn.Sequential(ffn),
            }
        )
        self.aggregation = MeanAggregation()
        self.head = nn.Linear(width, n_tasks)

    def forward(self, graphs: BatchMolGraph) -> torch.Tensor:
        atoms = self.trunk["message_passing"](graphs)
        molecules = self.aggregation(atoms, graphs.batch)
        return self.head(self.trunk["ffn"](molecules))  # type: ignore[no-any-return]


class MolecularGraphs:
    """A site's molecules as chemprop graphs, featurized once; a minibatch is their batch."""

    def __init__(self, data: Dataset, device: torch.device) -> None:
        if len(data.smiles) != len(data):
            raise DataError(
                f'[model] plugin = "dmpnn" builds graphs from each row\'s SMILES; {data.name!r} '
                "carries none (load the molecules with their SMILES: Dataset.smiles)"
            )
        self.device = device
        self.graphs = molecular_graphs(data.smiles, data.name)

    def features(self, rows: torch.Tensor) -> BatchMolGraph:
        batch = BatchMolGraph([self.graphs[i] for i in rows.tolist()])
        batch.to(self.device)
        return batch


def molecular_graphs(smiles: Sequence[str], source: str) -> list[MolGraph]:
    """chemprop's graph of each SMILES; a :class:`DataError` counts those RDKit cannot read
    (by row number, never by structure)."""
    molecules = [Chem.MolFromSmiles(s) for s in smiles]
    unreadable = [i for i, m in enumerate(molecules) if m is None]
    if unreadable:
        raise DataError(
            f"{source}: {len(unreadable)} SMILES cannot be read (first rows: "
            f"{unreadable[:5]}); remove or fix them"
        )
    return [_FEATURIZER(m) for m in molecules]


class DMPNNPlugin:
    """The D-MPNN over each site's molecular graphs (module docstring)."""

    def build(self, model: ModelConfig, shape: ModelShape, seed: int) -> nn.Module:
        hidden = model.hidden or (300,)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # chemprop's layers initialise from the global generator
            return DMPNNNetwork(hidden, model.dropout, shape.n_tasks)

    def inputs(self, data: Dataset, tensors: TensorData) -> PluginInputs:
        return MolecularGraphs(data, tensors.device)

    def dp_sgd_problems(self, network: nn.Module) -> list[str]:
        return [
            "the D-MPNN's message-passing rows are bonds and atoms, not molecules: DP-SGD would "
            "clip each bond's gradient, which bounds no molecule's influence",
            'fix: use site-level DP ([privacy] site_level) with plugin = "dmpnn", or a '
            "fingerprint model for record-level DP",
        ]

    def featurization(self, reference: Sequence[str]) -> dict[str, str | int]:
        """How this site turns molecules into graphs, for the join check: chemprop's version,
        the featurizer, its feature sizes and the SHA-256 of the graphs of ``reference``
        (public SMILES), which differ if any of them does."""
        digest = hashlib.sha256(b"fedpharma dmpnn graphs v1\x00")
        for graph in molecular_graphs(reference, "reference molecules"):
            for array in (graph.V, graph.E, graph.edge_index, graph.rev_edge_index):
                contiguous = np.ascontiguousarray(array)
                digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
                digest.update(contiguous.tobytes())
        return {
            "graph_featurizer": type(_FEATURIZER).__name__,
            "chemprop_version": importlib.metadata.version("chemprop"),
            "atom_features": _FEATURIZER.atom_fdim,
            "bond_features": _FEATURIZER.bond_fdim,
            "graph_reference_digest": digest.hexdigest(),
        }
