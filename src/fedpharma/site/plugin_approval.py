"""A site runs model plugin code only if its owner approved that code, by digest.

Code is part of what a data owner approves (as Fed-BioMed's nodes approve training plans): a
plugin's network and batching run on the site's records. The site works out the identity of the
plugin its recipe names from its own installed files (:mod:`fedpharma.models.plugin_identity`),
before importing it, and refuses every task — a typed :class:`PolicyRefused` the coordinator
records and audits, naming the plugin — unless its policy's ``approved_plugins`` lists that
digest and the task asks for that very code. fedpharma's own networks are approved implicitly
(they are the code the site already runs).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedpharma.core.errors import PolicyRefused, ProtocolError
from fedpharma.core.protocol import PluginIdentity, Refusal, Task
from fedpharma.core.protocol.codec import EncodedMessage, decode_message, encode_message_parts


def describe(plugin: PluginIdentity | None) -> str:
    """``plugin`` as a site, a log and the audit trail name it."""
    if plugin is None:
        return "fedpharma's own network"
    return f"{plugin.name} ({plugin.distribution} {plugin.version}, {plugin.digest})"


@dataclass(frozen=True)
class PluginApproval:
    """This site's installed plugin (``None``: fedpharma's own network) and the plugin digests
    its owner approved."""

    installed: PluginIdentity | None
    approved: tuple[str, ...] = ()

    def refusal(self) -> str | None:
        """Why this site must not run its installed plugin at all, or ``None``."""
        plugin = self.installed
        if plugin is None or plugin.digest in self.approved:
            return None
        return (
            f"this site's policy does not approve model plugin {describe(plugin)}; its owner "
            f'may review that code and add "{plugin.digest}" to approved_plugins'
        )

    def check(self, requested: PluginIdentity | None) -> None:
        """Refuse a task unless it runs the installed, approved plugin (before any record is
        read)."""
        reason = self.refusal()
        if reason is not None:
            raise PolicyRefused(reason)
        if requested != self.installed:
            raise PolicyRefused(
                f"the task runs {describe(requested)}, but this site has "
                f"{describe(self.installed)}; install the code the consortium approved"
            )


class RefusingSite:
    """A deployed site whose policy refuses the recipe's plugin: it loads no data and imports
    no plugin code, and answers every task with that refusal (which the coordinator audits)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def handle_encoded(self, request: bytes | memoryview) -> EncodedMessage:
        try:
            task = decode_message(request)
        except ProtocolError:
            task = None
        run_id, round = (task.run_id, task.round) if isinstance(task, Task) else ("", 0)
        return encode_message_parts(Refusal(run_id, round, self.name, "policy", self.reason))
