"""Summary dicts shaped like the simulation engine's ``summary.json``, built in code.

A uniquely named module (not ``conftest``) so tests can import it without clashing with other
packages' conftest files.
"""

from __future__ import annotations

from typing import Any

Summary = dict[str, Any]


def _scores(local: float | None, federated: float, centralized: float | None) -> dict[str, Any]:
    """One partner's headline scores plus a full regression metrics block derived from them."""

    def block(rmse: float | None) -> dict[str, float] | None:
        if rmse is None:
            return None
        return {"rmse": rmse, "mae": rmse * 0.75, "r2": 1 - rmse / 2, "spearman": 1 - rmse / 3}

    return {
        "local": local,
        "federated": federated,
        "centralized": centralized,
        "metrics": {
            "local": block(local),
            "federated": block(federated),
            "centralized": block(centralized),
        },
    }


def make_regression_summary() -> Summary:
    """Four sites, 20 rounds, all three models, plus an unknown future key."""
    rounds = list(range(1, 21))
    sites = {}
    site_curves = {}
    for i in range(4):
        name = f"site-{i + 1}"
        local = 0.78 + 0.05 * i
        scores = _scores(local, 0.64 + 0.02 * i, 0.6)
        sites[name] = {"n_train": 200 + 10 * i, "n_test": 50, **scores}
        site_curves[name] = [0.64 + 0.02 * i + 0.5 / r + 0.01 * (-1) ** r for r in rounds]
    return {
        "format": 1,
        "run_id": "20261127-203000-ab12",
        "created": "2026-11-27T20:30:00Z",
        "title": "chembl2321810 · 4 sites · fedavg",
        "dataset": {
            "name": "chembl2321810",
            "task": "regression",
            "task_names": ["pIC50"],
            "n_rows": 1017,
            "invalid_molecules": 0,
        },
        "metric": {"name": "rmse", "higher_is_better": False},
        "strategy": "fedavg",
        "rounds": 20,
        "sites": sites,
        "pooled": {"n_test": 200, **_scores(0.83, 0.67, 0.63)},
        "curves": {
            "round": rounds,
            "train_loss": [0.9 / r**0.5 for r in rounds],
            "pooled": [0.67 + 0.5 / r for r in rounds],
            "sites": site_curves,
        },
        "timings": {"total_seconds": 42.0, "federated_seconds": 20.0, "baseline_seconds": 15.0},
        "config": {"strategy": {"name": "fedavg", "rounds": 20}, "seed": 7},
        "fairness": {"site-1": [0.1, 0.2]},
    }


def make_classification_summary() -> Summary:
    """Three sites, ROC AUC (higher is better), one metric undefined (null)."""
    metrics = {"roc_auc": 0.8, "pr_auc": 0.6, "accuracy": 0.75}
    partner = {
        "local": 0.72,
        "federated": 0.81,
        "centralized": 0.84,
        "metrics": {
            "local": {**metrics, "roc_auc": 0.72},
            "federated": {**metrics, "roc_auc": 0.81, "pr_auc": None},
            "centralized": {**metrics, "roc_auc": 0.84},
        },
    }
    summary = make_regression_summary()
    summary.update(
        title="tox21 · 3 sites · fedprox",
        dataset={"name": "tox21", "task": "classification", "task_names": ["NR-AR"]},
        metric={"name": "roc_auc", "higher_is_better": True},
        strategy="fedprox",
        rounds=3,
        sites={f"hospital-{c}": {"n_train": 90, "n_test": 30, **partner} for c in "ABC"},
        pooled={"n_test": 90, **partner},
        curves={
            "round": [1, 2, 3],
            "train_loss": [0.69, 0.5, 0.4],
            "pooled": [0.7, 0.78, 0.81],
            "sites": {f"hospital-{c}": [0.7, 0.77, 0.8] for c in "ABC"},
        },
    )
    return summary


def make_no_baselines_summary() -> Summary:
    """A 0-round run with baselines switched off: null local/centralized, empty curves."""
    summary = make_regression_summary()
    for partner in [*summary["sites"].values(), summary["pooled"]]:
        partner["local"] = None
        partner["centralized"] = None
        partner["metrics"] = {"federated": partner["metrics"]["federated"]}
    summary["rounds"] = 0
    summary["curves"] = {"round": [], "train_loss": [], "pooled": [], "sites": {}}
    return summary


def make_privacy_summary() -> Summary:
    """Three rounds of record-level DP; site-2 refuses round 3 (budget), site-4 skips round 1."""
    summary = make_regression_summary()
    summary["privacy"] = {
        "record_level": True,
        "site_level": False,
        "accountant": "rdp (improved conversion)",
        "delta": {"record": 1e-05, "site": 1e-05},
        "budget": {"record": 5.0, "site": None},
        "round": [1, 2, 3],
        "epsilon": {
            "site-1": {"record": [2.19, 2.77, 3.23]},
            "site-2": {"record": [2.19, 2.77, None]},
            "site-3": {"record": [1.5, 2.0, 2.4]},
            "site-4": {"record": [None, 1.1, 1.6]},
        },
        "final": {
            "site-1": {"record": 3.23},
            "site-2": {"record": 2.77},
            "site-3": {"record": 2.4},
            "site-4": {"record": 1.6},
        },
        "refusals": [
            {
                "round": 3,
                "site": "site-2",
                "kind": "privacy-budget",
                "reason": "ε would reach 5.31 > budget 5",
            }
        ],
    }
    return summary


def _attacks(auc: float, advantage: float, n: int) -> dict[str, Any]:
    scores = {"auc": auc, "advantage": advantage, "n_members": n, "n_nonmembers": n}
    return {"loss_threshold": scores, "calibrated": {**scores, "auc": auc + 0.01}}


def make_audit_summary(secure: str = "none") -> Summary:
    """The regression summary plus a membership-inference audit (site-3's update could not be
    audited; site-1 and site-2 were split by scaffold) and a cross-site matrix in which site-4
    does not allow cross evaluation."""
    summary = make_regression_summary()
    sites = list(summary["sites"])
    summary["privacy_audit"] = {
        "secure_aggregation": secure,
        "sites": {
            site: {
                "nonmember_shift": i < 2,
                "final_model": _attacks(0.52 + 0.01 * i, 0.08, 40),
                "site_update": _attacks(0.71, 0.4, 40)
                if i != 2
                else {"unavailable": "the site refused the audit round (policy): <no>"},
            }
            for i, site in enumerate(sites)
        },
    }
    allowed = {site: site != "site-4" for site in sites}
    rows = [
        {
            "model": "federated",
            "trained_at": None,
            "scores": {s: summary["sites"][s]["federated"] for s in sites},
        }
    ]
    for owner in sites:
        scores: dict[str, float | None] = {
            s: summary["sites"][owner]["local"] + (0.0 if s == owner else 0.2)
            for s in sites
            if s == owner or (allowed[owner] and allowed[s])
        }
        rows.append({"model": "local", "trained_at": owner, "scores": scores})
    rows[1]["scores"]["site-2"] = None  # a metric undefined on that test set
    summary["cross_evaluation"] = {
        "test_sites": sites,
        "allow_cross_evaluation": allowed,
        "rows": rows,
    }
    return summary
