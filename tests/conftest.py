"""Suite-wide settings and fixtures: under CI, hypothesis explores the same examples on every
run, so a green main stays green (locally it keeps searching with fresh random examples)."""

import csv
import os
from pathlib import Path

import pytest
from hypothesis import settings

from fedpharma.data.datasets import rdkit_freewilson_dir

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def molecules_csv(tmp_path_factory) -> Path:
    """150 molecules of the bundled ChEMBL series as a CSV (smiles, pIC50): small and fast."""
    folder = Path(rdkit_freewilson_dir())
    with (folder / "CHEMBL2321810_act.csv").open(encoding="utf-8", newline="") as handle:
        activity = {row["Name"].strip(): row["Act"].strip() for row in csv.DictReader(handle)}
    rows = []
    for line in (folder / "CHEMBL2321810.smi").read_text().splitlines():
        fields = line.split()
        if len(fields) > 1 and activity.get(fields[1]):
            rows.append((fields[0], activity[fields[1]]))
    path = tmp_path_factory.mktemp("data") / "series.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles", "pIC50"])
        writer.writerows(rows[:150])
    return path


@pytest.fixture(autouse=True, scope="session")
def _feature_cache_in_a_temporary_folder(tmp_path_factory):
    """Featurized files are cached in a folder of this test session, never the user's."""
    patch = pytest.MonkeyPatch()
    patch.setenv("FEDPHARMA_CACHE_DIR", str(tmp_path_factory.mktemp("feature-cache")))
    yield
    patch.undo()


@pytest.fixture
def acme_plugin(tmp_path, monkeypatch):
    """An installed third-party model plugin (tests/models/plugin_samples.py) on sys.path."""
    from tests.models.plugin_samples import forget_plugin, install_plugin

    folder = install_plugin(tmp_path / "site-packages")
    monkeypatch.syspath_prepend(str(folder))
    forget_plugin()
    yield folder
    forget_plugin()
