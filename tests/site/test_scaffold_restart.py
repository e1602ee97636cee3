"""A deployed site (``fedpharma site``) keeps its SCAFFOLD control variate in its ``state_dir``:
the site built again after a restart answers the next round from the variate it kept."""

from __future__ import annotations

import numpy as np

from fedpharma.core.config import config_from_dict
from fedpharma.core.deploy_config import SiteConfig, SiteDataConfig, SiteSection
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import LocalTraining, TrainResult, TrainSettings, TrainTask
from fedpharma.core.protocol.control import attach_control, split_control
from fedpharma.site.deploy import build_site
from fedpharma.site.scaffold import VARIATES_FILE


def test_a_restarted_deployed_site_answers_from_the_variate_it_kept(molecules_csv, tmp_path):
    recipe = config_from_dict(
        {
            "dataset": {
                "path": str(molecules_csv),
                "label_columns": ["pIC50"],
                "task": "regression",
            },
            "features": {"n_bits": 128},
            "partition": {"n_sites": 3},
            "model": {"hidden": [16]},
            "strategy": {"name": "scaffold"},
        }
    )
    config = SiteConfig(
        state_dir=str(tmp_path / "state"),
        site=SiteSection(name="site-1", insecure=True),
        data=SiteDataConfig(
            path=str(molecules_csv), label_columns=("pIC50",), task="regression", partition_index=1
        ),
    )
    site = build_site("site-1", config, recipe)
    x = site.trainer.initial_parameters(0)
    c = Parameters(x.names, tuple(np.zeros_like(a) for a in x.arrays))

    def task(rnd: int) -> TrainTask:
        local = LocalTraining(seed=rnd, scaffold=True)
        return TrainTask("run-7", rnd, attach_control(x, c), TrainSettings(local))

    first = site.handle(task(1))
    assert isinstance(first, TrainResult)
    kept = split_control(first.update)[1]  # Δc_i from c_i = 0: the variate now kept
    assert (tmp_path / "state" / VARIATES_FILE).exists()

    restarted = build_site("site-1", config, recipe)
    second = restarted.handle(task(2))  # same x: c_i⁺ is the same gradient, so Δc_i = 0
    assert isinstance(second, TrainResult)
    assert np.abs(kept.flatten()).max() > 0
    np.testing.assert_allclose(split_control(second.update)[1].flatten(), 0.0, atol=1e-6)
