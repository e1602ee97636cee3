"""Every pillar with a model plugin: the EMR-signal example (tabular EMR values and a 1-D signal
per patient, three hospitals) simulated end to end under each strategy, private heads, DP-SGD,
site-level DP, SecAgg and CKKS. The plugin's parameters are just Parameters to all of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedpharma.core.config import config_from_dict
from fedpharma.models.plugins.emr_signal import SIGNAL_LENGTH
from fedpharma.sim.engine import simulate

EMR = ("age", "lactate", "heart_rate", "systolic_bp", "creatinine", "male")


def write_ward(folder: Path, n: int = 180) -> Path:
    """Patients of three hospitals: EMR values, a signal whose rhythm is irregular before a
    deterioration, and whether they deteriorated."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 4 * np.pi, SIGNAL_LENGTH)
    header = ["hospital", *EMR, *(f"signal_{i:02d}" for i in range(SIGNAL_LENGTH)), "deteriorated"]
    lines = [",".join(header)]
    for i in range(n):
        hospital = ("north", "south", "east")[i % 3]
        risk = rng.random() < 0.35
        emr = [
            rng.integers(30, 90),
            rng.normal(2.0 + 1.5 * risk, 0.7),
            rng.normal(80 + 15 * risk, 10),
            rng.normal(125 - 10 * risk, 12),
            rng.normal(1.0, 0.3),
            rng.integers(0, 2),
        ]
        signal = np.sin(t * (1 + 0.6 * risk * rng.random())) + rng.normal(0, 0.2, SIGNAL_LENGTH)
        values = [f"{v:.3f}" for v in (*emr, *signal)]
        lines.append(",".join([hospital, *values, str(int(risk))]))
    path = folder / "ward.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


PILLARS: dict[str, dict[str, object]] = {
    "fedavg": {},
    "fedprox": {"strategy": {"name": "fedprox", "proximal_mu": 0.1}},
    "fedadam": {"strategy": {"name": "fedadam", "server_learning_rate": 0.01}},
    "scaffold": {"strategy": {"name": "scaffold"}},
    "private-heads": {"model": {"private_heads": True}},
    "dp-sgd": {
        "privacy": {"record_level": True, "noise_multiplier": 1.0},
        "site_policy": {"record_epsilon": 50.0},
    },
    "site-level-dp": {
        "privacy": {"site_level": True, "site_noise_multiplier": 0.5},
        "site_policy": {"site_epsilon": 50.0},
    },
    "secagg": {"secure": {"mode": "secagg"}},
    "ckks": {"secure": {"mode": "ckks"}},
}


@pytest.fixture(scope="module")
def ward(tmp_path_factory) -> Path:
    return write_ward(tmp_path_factory.mktemp("ward"))


@pytest.mark.parametrize("pillar", sorted(PILLARS))
def test_the_emr_signal_plugin_federates_under(pillar, ward, tmp_path):
    raw: dict[str, dict[str, object]] = {
        "dataset": {
            "path": str(ward),
            "kind": "tabular",
            "label_columns": ["deteriorated"],
            "task": "classification",
            "site_column": "hospital",
        },
        "partition": {"method": "natural"},
        "model": {"plugin": "emr-signal", "hidden": [16]},
        "training": {"learning_rate": 0.01, "batch_size": 16, "calibrate_output": False},
        "strategy": {"min_sites": 3},
    }
    for table, values in PILLARS[pillar].items():
        raw[table] = {**raw.get(table, {}), **values}  # type: ignore[dict-item]
    config = config_from_dict({"rounds": 2, "baselines": False, "privacy_audit": False, **raw})
    result = simulate(config, tmp_path / "run")
    assert result.summary.curves.rounds == (1, 2)
    assert set(result.summary.sites) == {"north", "south", "east"}
    names = result.parameters.names
    assert any(n.startswith("trunk.signal.") for n in names)  # the plugin's network was trained
    assert any(n.startswith("head.") for n in names) == (pillar != "private-heads")


def test_a_plugin_without_a_head_layer_federates_with_its_output_layer_as_initialised(
    ward, tmp_path, monkeypatch
):
    # Output calibration sets `head` by name; a plugin free to name its output layer otherwise
    # used to crash the run with a raw KeyError. Now the layer starts as the plugin built it.
    from fedpharma.models.plugin_identity import plugin_identity
    from tests.models.plugin_samples import HEADLESS_CODE, TARGET, forget_plugin, install_plugin

    monkeypatch.syspath_prepend(str(install_plugin(tmp_path / "headless", code=HEADLESS_CODE)))
    forget_plugin()
    try:
        identity = plugin_identity(TARGET)
        assert identity is not None
        raw: dict[str, object] = {
            "dataset": {
                "path": str(ward),
                "kind": "tabular",
                "label_columns": ["deteriorated"],
                "task": "classification",
                "site_column": "hospital",
            },
            "partition": {"method": "natural"},
            "model": {"plugin": TARGET, "hidden": [16]},
            "training": {"learning_rate": 0.01, "batch_size": 16, "calibrate_output": True},
            "site_policy": {"approved_plugins": [identity.digest]},
        }
        config = config_from_dict({"rounds": 1, "baselines": False, "privacy_audit": False, **raw})
        result = simulate(config, tmp_path / "run")
    finally:
        forget_plugin()
    assert "out.weight" in result.parameters.names
    assert result.summary.curves.rounds == (1,)
