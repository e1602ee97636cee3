"""A plugin's identity is the digest of its installed files, computed without importing it."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from fedpharma.core.config import BUILTIN_PLUGINS, ModelConfig, config_from_dict
from fedpharma.core.errors import ConfigError
from fedpharma.models.plugin import FeedForwardPlugin, load_plugin
from fedpharma.models.plugin_identity import BUILTINS, plugin_identity
from tests.models.plugin_samples import DISTRIBUTION, PACKAGE, TARGET, forget_plugin


def test_an_installed_plugin_is_named_by_distribution_version_and_digest(acme_plugin):
    identity = plugin_identity(TARGET)
    assert identity is not None
    assert (identity.name, identity.distribution, identity.version) == (TARGET, DISTRIBUTION, "1.0")
    assert identity.digest.startswith("sha256:") and len(identity.digest) == 7 + 64
    assert plugin_identity(TARGET) == identity  # a function of the files alone
    assert PACKAGE not in sys.modules  # computed without running the plugin's code


def test_changed_code_has_another_digest(acme_plugin):
    before = plugin_identity(TARGET)
    code = acme_plugin / PACKAGE / "model.py"
    code.write_text(code.read_text().replace("nn.Tanh()", "nn.ReLU()"))
    after = plugin_identity(TARGET)
    assert before is not None and after is not None
    assert after.digest != before.digest and after.version == before.version


def test_compiled_caches_and_installer_bookkeeping_do_not_change_the_digest(acme_plugin):
    before = plugin_identity(TARGET)
    info = next(acme_plugin.glob("*.dist-info"))
    (info / "INSTALLER").write_text("uv\n")
    cache = acme_plugin / PACKAGE / "__pycache__"
    cache.mkdir()
    (cache / "model.cpython-311.pyc").write_bytes(b"\x00compiled")
    record = info / "RECORD"
    record.write_text(record.read_text() + f"{PACKAGE}/__pycache__/model.cpython-311.pyc,,\n")
    assert plugin_identity(TARGET) == before


def test_an_editable_install_is_refused_it_pins_no_code(acme_plugin):
    info = next(acme_plugin.glob("*.dist-info"))
    (info / "direct_url.json").write_text(
        json.dumps({"url": "file:///src/acme", "dir_info": {"editable": True}})
    )
    with pytest.raises(ConfigError, match="editable install"):
        plugin_identity(TARGET)


def test_a_plugin_that_is_not_installed_says_what_to_install():
    with pytest.raises(ConfigError, match="no installed distribution provides the package"):
        plugin_identity("nobody_ships_this.model:Plugin")


def test_fedpharmas_own_networks_have_no_identity_to_approve():
    for name in (None, "mlp", "linear", "emr-signal", "fedpharma.models.plugin:FeedForwardPlugin"):
        assert plugin_identity(name) is None


@pytest.mark.skipif(
    importlib.util.find_spec("chemprop") is None,
    reason="the fedpharma[chemprop] extra is not installed",
)
def test_the_dmpnn_plugin_is_chemprops_code():
    identity = plugin_identity("dmpnn")
    assert identity is not None and identity.distribution == "chemprop"
    assert identity.version == "2.3.1"


def test_the_builtin_names_are_the_ones_the_config_accepts():
    assert tuple(BUILTINS) == BUILTIN_PLUGINS


def test_a_mistyped_plugin_gets_a_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean 'dmpnn'"):
        plugin_identity("dmpn")
    with pytest.raises(ConfigError, match="did you mean 'dmpnn'"):
        config_from_dict({"model": {"plugin": "dmpn"}})
    with pytest.raises(ConfigError, match=r"package\.module:Class"):
        config_from_dict({"model": {"plugin": "acme qsar"}})
    assert config_from_dict({"model": {"plugin": TARGET}}).model.plugin == TARGET


def test_load_plugin_imports_an_installed_plugin_and_refuses_other_classes(acme_plugin):
    plugin = load_plugin(TARGET)
    assert type(plugin).__module__ == f"{PACKAGE}.model"
    forget_plugin()
    with pytest.raises(ConfigError, match="not a model plugin class"):
        load_plugin(f"{PACKAGE}.model:NotAPlugin")
    with pytest.raises(ConfigError, match="cannot import"):
        load_plugin("nobody_ships_this.model:Plugin")
    assert isinstance(load_plugin(None), FeedForwardPlugin)
    assert load_plugin("linear").build(ModelConfig(), _Shape(), 0).trunk.__len__() == 0


class _Shape:
    task = "regression"
    n_features = 8
    n_tasks = 2


def test_the_cli_prints_the_digest_to_approve(acme_plugin):
    from typer.testing import CliRunner

    from fedpharma.cli.main import app

    identity = plugin_identity(TARGET)
    assert identity is not None
    printed = CliRunner().invoke(app, ["plugin-digest", TARGET])
    assert printed.exit_code == 0
    assert f'approved_plugins = ["{identity.digest}"]' in printed.output
    assert "acme-qsar 1.0" in printed.output
    own = CliRunner().invoke(app, ["plugin-digest", "emr-signal"])
    assert own.exit_code == 0 and "approved without a digest" in own.output
