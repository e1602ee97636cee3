"""Which code a model plugin is: its distribution, version and a digest of its installed files.

Computed from the installed distribution's file list (``importlib.metadata``, the wheel's
RECORD) without importing the plugin, so a site can refuse unapproved code before running any
of it. The digest is SHA-256 over each installed file's path and SHA-256, in path order;
compiled caches and the installer's own bookkeeping (``INSTALLER``, ``REQUESTED``,
``direct_url.json``, ``RECORD``) are left out, so the same wheel installed anywhere has the same
digest. fedpharma's own networks run no code beyond fedpharma's and have no identity (nothing
to approve); the D-MPNN plugin is chemprop's code, so its identity is chemprop's.
``docs/model-plugins.md`` has the threat model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fedpharma.core.config import plugin_problems
from fedpharma.core.errors import ConfigError
from fedpharma.core.protocol import PluginIdentity

_OWN_DISTRIBUTION = "fedpharma"
_BOOKKEEPING = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}
_DOMAIN = b"fedpharma plugin files v1\x00"


@dataclass(frozen=True)
class Builtin:
    """A plugin that ships with fedpharma: where its class lives, and the distribution whose
    code it runs besides fedpharma's (that is its identity; fedpharma's own needs no approval)."""

    target: str
    requires: str | None = None


BUILTINS: dict[str, Builtin] = {
    "mlp": Builtin("fedpharma.models.plugin:FeedForwardPlugin"),
    "linear": Builtin("fedpharma.models.plugin:FeedForwardPlugin"),
    "dmpnn": Builtin("fedpharma.models.plugins.dmpnn:DMPNNPlugin", requires="chemprop"),
    "emr-signal": Builtin("fedpharma.models.plugins.emr_signal:EMRSignalPlugin"),
}
"""The built-in plugins by name (``core.config.BUILTIN_PLUGINS`` lists the same names)."""


def reads_smiles(name: str | None) -> bool:
    """Whether the plugin may build its own inputs from the molecules' SMILES (so a molecule
    file's SMILES are loaded with it): not fedpharma's fingerprint or tabular networks."""
    return name not in (None, "mlp", "linear", "emr-signal")


def plugin_identity(name: str | None) -> PluginIdentity | None:
    """The identity of the plugin ``[model] plugin`` names, as installed here; ``None`` for
    code that is fedpharma's own (``kind``, ``"mlp"``, ``"linear"``, ``"emr-signal"``, or a
    ``fedpharma.…:Class``). Raises :class:`ConfigError` if its distribution is not installed,
    or installed in a form whose files do not hold its code (an editable install)."""
    if name is None:
        return None
    problems = plugin_problems(name)
    if problems:
        raise ConfigError(problems, source="model plugin")
    if name in BUILTINS:
        required = BUILTINS[name].requires
        return None if required is None else _identity(name, required)
    top_level = name.partition(":")[0].split(".")[0]
    if top_level == _OWN_DISTRIBUTION:
        return None
    owners = metadata.packages_distributions().get(top_level, [])
    if len(owners) != 1:
        found = "no installed distribution" if not owners else f"several ({', '.join(owners)})"
        raise ConfigError(
            [
                f"[model] plugin = {name!r}: {found} provides the package {top_level!r}; "
                "install the plugin's distribution (pip install DIST) so its code has a digest"
            ],
            source="model plugin",
        )
    return _identity(name, owners[0])


def _identity(name: str, distribution_name: str) -> PluginIdentity:
    try:
        distribution = metadata.distribution(distribution_name)
    except metadata.PackageNotFoundError as exc:
        raise ConfigError(
            [
                f"[model] plugin = {name!r} runs the code of {distribution_name!r}, which is not "
                f"installed here (pip install 'fedpharma[{distribution_name}]' or the plugin's "
                "distribution)"
            ],
            source="model plugin",
        ) from exc
    return PluginIdentity(
        name=name,
        distribution=distribution.metadata["Name"],
        version=distribution.version,
        digest="sha256:" + distribution_digest(distribution),
    )


def distribution_digest(distribution: metadata.Distribution) -> str:
    """SHA-256 (hex) over the installed files of ``distribution`` (see the module)."""
    direct_url = distribution.read_text("direct_url.json")
    if direct_url and json.loads(direct_url).get("dir_info", {}).get("editable"):
        raise ConfigError(
            [
                f"{distribution.metadata['Name']} is an editable install: its files are a link "
                "to a source folder, so no digest pins its code; install it from a wheel"
            ],
            source="model plugin",
        )
    files = distribution.files
    if not files:
        raise ConfigError(
            [f"{distribution.metadata['Name']} lists no installed files (no RECORD) to digest"],
            source="model plugin",
        )
    digest = hashlib.sha256(_DOMAIN)
    for path in sorted(files, key=str):
        posix = PurePosixPath(str(path))
        if "__pycache__" in posix.parts or posix.suffix == ".pyc" or posix.name in _BOOKKEEPING:
            continue
        located = distribution.locate_file(path)
        try:
            content = Path(str(located)).read_bytes()
        except OSError as exc:
            raise ConfigError(
                [f"{distribution.metadata['Name']}: installed file {posix} is missing ({exc})"],
                source="model plugin",
            ) from exc
        digest.update(f"{posix}\0{hashlib.sha256(content).hexdigest()}\n".encode())
    return digest.hexdigest()
