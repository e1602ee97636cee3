"""A deployed run under [secure] ends with the chemical-space overlap: each site's set sizes and
how many sites hold each bucket, exactly what the same sites' data give when their sets are
made directly (as a simulation makes them), and `fedpharma report` shows them."""

from __future__ import annotations

import numpy as np
import pytest
from deploy_helpers import SITES, recipe_toml, run_in_threads, write_deployment
from typer.testing import CliRunner

from fedpharma.cli.main import app
from fedpharma.core.config import load_config
from fedpharma.core.deploy_config import load_server_config, load_site_config
from fedpharma.data.overlap import DEPLOYED_BUCKETS, multiplicity_histogram, site_sets
from fedpharma.server.run_summary import summary_from_store

runner = CliRunner()
KEY = bytes(range(32, 64))


@pytest.fixture(scope="module")
def deployed(molecules_csv, pki_root, tmp_path_factory):
    """A finished 1-round SecAgg deployment over mutual TLS; every site holds the overlap key."""
    folder = tmp_path_factory.mktemp("deploy-overlap")
    recipe = recipe_toml(molecules_csv, rounds=1) + '[secure]\nmode = "secagg"\n'
    files = write_deployment(folder, pki_root, recipe, port=0)
    (folder / "overlap.key").write_text(KEY.hex() + "\n")
    for site in SITES:
        files[site].write_text('overlap_key = "overlap.key"\n' + files[site].read_text())
    result = run_in_threads(files)
    return folder, result


def test_the_overlap_counts_equal_what_the_sites_data_give(deployed):
    from fedpharma.sim.engine import prepare_sites

    folder, result = deployed
    recipe = load_config(load_server_config(folder / "server.toml").run_config)
    overlap = summary_from_store(result.run_dir).consortium_overlap
    assert overlap is not None and overlap.missing is None, overlap
    assert overlap.contributors == SITES and not overlap.declined
    sites = prepare_sites(recipe).sites  # the demo sites hold exactly these rows
    sets = {name: site_sets(data, KEY, DEPLOYED_BUCKETS) for name, data in sites.items()}
    for name, (scaffolds, bits) in sets.items():
        assert scaffolds.sum() > 0
        assert (overlap.sites[name].scaffolds, overlap.sites[name].bits) == (
            scaffolds.sum(),
            bits.sum(),
        )
    summed = sum(s.astype(np.int64) for s, _ in sets.values())
    assert overlap.scaffolds_held_by == multiplicity_histogram(summed, len(SITES))
    bits = sum(b.astype(np.int64) for _, b in sets.values())
    assert overlap.bits_held_by == multiplicity_histogram(bits, len(SITES))


def test_the_deployed_report_shows_the_overlap(deployed):
    _folder, result = deployed
    rendered = runner.invoke(app, ["report", str(result.run_dir)])
    assert rendered.exit_code == 0, rendered.output
    page = (result.run_dir / "report.html").read_text()
    assert "Chemical-space overlap" in page and "Held by exactly" in page
    assert f"Summed securely over {', '.join(SITES)}" in page
    audit = (result.run_dir / "audit.jsonl").read_text()
    assert "result_rejected" not in audit and "refusal" not in audit


@pytest.mark.parametrize("content", [None, "not hex", "ab" * 16])
def test_an_unreadable_overlap_key_is_a_config_error_before_any_data_is_read(tmp_path, content):
    import dataclasses
    from pathlib import Path

    from fedpharma.core.errors import ConfigError
    from fedpharma.site.deploy import build_site

    examples = Path(__file__).resolve().parents[2] / "examples" / "deploy"
    config = load_site_config(examples / "site-a.toml")
    key = tmp_path / "overlap.key"
    if content is not None:
        key.write_text(content)
    config = dataclasses.replace(config, state_dir=str(tmp_path / "state"), overlap_key=str(key))
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, path="/nowhere.csv"))
    with pytest.raises(ConfigError, match=r"overlap_key: .*chemical-overlap key"):
        build_site("hospital-a", config, load_config(config.run_config))
