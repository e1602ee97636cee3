"""Over gRPC + mutual TLS: a site whose owner did not approve the recipe's plugin refuses it,
and the coordinator's audit log names the plugin; sites that approved its digest train.

The adversary and the weakened twin (a site without the check trains the unreviewed code) are
in tests/site/test_plugin_approval.py; here the refusal crosses the real transport.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from deploy_helpers import recipe_toml, write_deployment

from fedpharma.core.config import SitePolicyConfig, load_config, site_policy_toml
from fedpharma.core.deploy_config import load_server_config, load_site_config
from fedpharma.models.plugin_identity import plugin_identity
from fedpharma.server.audit import read_entries
from fedpharma.server.coordinator import run_coordinator
from fedpharma.site.deploy import serve
from tests.models.plugin_samples import TARGET


def test_a_site_refuses_an_unapproved_plugin_over_mtls_and_the_audit_names_it(
    acme_plugin, molecules_csv, pki_root, tmp_path
):
    identity = plugin_identity(TARGET)
    assert identity is not None
    recipe_text = recipe_toml(molecules_csv, rounds=1, min_sites=2).replace(
        "[model]\n", f'[model]\nplugin = "{TARGET}"\n'
    )
    files = write_deployment(tmp_path, pki_root, recipe_text, port=0, join_deadline=2.0)
    for site, approved in (("site-1", True), ("site-2", True), ("site-3", False)):
        policy = tmp_path / f"policy-{site}.toml"
        digests = (identity.digest,) if approved else ()
        policy.write_text(site_policy_toml(SitePolicyConfig(approved_plugins=digests)))
        files[site].write_text(f'policy = "{policy}"\n' + files[site].read_text())
    config = load_server_config(files["server"])
    recipe = load_config(config.run_config)
    lines: list[str] = []
    stop = threading.Event()
    ended: dict[str, str] = {}

    def serve_site(site: str, address: str) -> None:
        site_file = files[site]
        site_file.write_text(site_file.read_text().replace("127.0.0.1:0", address))
        site_config = load_site_config(site_file)
        thread = threading.Thread(
            target=lambda: ended.update({site: serve(site_config, recipe, stop=stop)}),
            daemon=True,
        )
        thread.start()

    def start_sites(address: str) -> None:
        for site in ("site-3", "site-1", "site-2"):
            serve_site(site, address)

    try:
        result = run_coordinator(config, recipe, on_status=lines.append, on_listening=start_sites)
    finally:
        stop.set()
    assert result.rounds_completed == 1, "\n".join(lines)
    entries = read_entries(result.run_dir / "audit.jsonl")
    about_site_3 = [e for e in entries if e.site == "site-3" and e.kind in ("denied", "refusal")]
    assert about_site_3, [(e.kind, e.site, e.reason) for e in entries]
    assert all(TARGET in e.reason and identity.digest in e.reason for e in about_site_3)
    assert "does not approve model plugin" in about_site_3[0].reason
    # the site's policy refusal, then the coordinator's denial at join, both audited
    assert [e.kind for e in about_site_3][:2] == ["refusal", "denied"]
    with sqlite3.connect(result.run_dir / "run.sqlite") as db:  # the approving sites trained
        assert db.execute("SELECT round, n_updates FROM rounds").fetchall() == [(1, 2)]
    deadline = time.monotonic() + 30
    while "site-3" not in ended and time.monotonic() < deadline:
        time.sleep(0.05)
