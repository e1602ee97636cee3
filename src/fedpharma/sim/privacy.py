"""Differential privacy in a simulation: each simulated site's policy and ledger, the
coordinator's site-level DP aggregator, and the ε every site spent, round by round."""

from __future__ import annotations

from pathlib import Path

from fedpharma.core.config import RunConfig, site_policy_toml
from fedpharma.report.summary import Privacy, Refusal, Relation
from fedpharma.server.round import RoundRecord
from fedpharma.site.policy import SitePolicy

RELATION_METRICS: dict[Relation, str] = {"record": "epsilon_record", "site": "epsilon_site"}


def site_policy(config: RunConfig, site_dir: Path) -> SitePolicy:
    """The simulated site's policy file (the run's ``[site_policy]``) and its ledger, on the
    site's own 'disk' ``site_dir`` — what ``fedpharma privacy SITE_DIR`` reads back."""
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / "policy.toml").write_text(site_policy_toml(config.site_policy), encoding="utf-8")
    return SitePolicy(config.site_policy, site_dir / "privacy.sqlite")


class PrivacyRecorder:
    """Per site and relation, the cumulative ε the site reported after each round it trained."""

    def __init__(self) -> None:
        self.rounds: list[int] = []
        self.spent: dict[str, dict[Relation, list[float | None]]] = {}
        self.refusals: list[Refusal] = []

    def on_round(self, record: RoundRecord) -> None:
        self.rounds.append(record.round)
        for site, result in record.train_results.items():
            for relation, metric in RELATION_METRICS.items():
                if metric in result.metrics:
                    series = self.spent.setdefault(site, {}).setdefault(relation, [])
                    series.extend([None] * (len(self.rounds) - 1 - len(series)))
                    series.append(result.metrics[metric])
        self.refusals += [
            Refusal(record.round, site, r.kind, r.reason) for site, r in record.refusals.items()
        ]

    def summary(self, config: RunConfig) -> Privacy:
        policy = config.site_policy
        conversion = f" ({policy.conversion} conversion)" if policy.accountant == "rdp" else ""
        return Privacy(
            record_level=config.privacy.record_level,
            site_level=config.privacy.site_level,
            accountant=f"{policy.accountant}{conversion}",
            delta={"record": policy.record_delta, "site": policy.site_delta},
            budget={"record": policy.record_epsilon, "site": policy.site_epsilon},
            rounds=tuple(self.rounds),
            epsilon={
                site: {rel: tuple(s) for rel, s in by.items()} for site, by in self.spent.items()
            },
            final={
                site: {
                    rel: next((v for v in reversed(s) if v is not None), None)
                    for rel, s in by.items()
                }
                for site, by in self.spent.items()
            },
            refusals=tuple(self.refusals),
        )
