"""A model plugin installed the way pip installs a wheel: a package and its ``.dist-info``
(METADATA, RECORD, top_level.txt) in a folder on ``sys.path``. Its code is a small MLP whose
first layer is named differently from fedpharma's, so it is visibly not the built-in."""

from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path

PACKAGE = "acme_qsar"
DISTRIBUTION = "acme-qsar"
TARGET = f"{PACKAGE}.model:AcmePlugin"

PLUGIN_CODE = """
import torch
from torch import nn


class AcmeNetwork(nn.Module):
    def __init__(self, n_features, width, n_tasks):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(n_features, width), nn.Tanh())
        self.head = nn.Linear(width, n_tasks)

    def forward(self, features):
        rows = features.dense() if hasattr(features, "dense") else features
        return self.head(self.trunk(rows))


class AcmePlugin:
    def build(self, model, shape, seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return AcmeNetwork(shape.n_features, model.hidden[0], shape.n_tasks)

    def inputs(self, data, tensors):
        return tensors

    def dp_sgd_problems(self, network):
        return []


class NotAPlugin:
    pass
"""

HEADLESS_CODE = PLUGIN_CODE.replace("self.head", "self.out")
"""The same plugin with its output layer named ``out``: it has no ``head`` to keep private."""


def install_plugin(folder: Path, *, version: str = "1.0", code: str = PLUGIN_CODE) -> Path:
    """Write the plugin's package and dist-info under ``folder``; returns ``folder`` (put it on
    ``sys.path``)."""
    files = {
        f"{PACKAGE}/__init__.py": "",
        f"{PACKAGE}/model.py": code,
    }
    info = f"{PACKAGE}-{version}.dist-info"
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {version}\n"
    files[f"{info}/top_level.txt"] = f"{PACKAGE}\n"
    files[f"{info}/INSTALLER"] = "pip\n"
    record = []
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        hashed = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={hashed.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    (folder / info / "RECORD").write_text("\n".join(record) + "\n")
    return folder


def forget_plugin() -> None:
    """Drop the plugin's modules, so the next import reads the files again."""
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
