"""The privacy audit in the report: measured membership leakage beside each site's ε.

A formal (ε, δ) bounds what *any* attack can learn; the audit shows what two concrete attacks
did learn (loss threshold, Yeom et al. 2018; difficulty-calibrated, Watson et al. 2022), on the
final model and on one site's raw update — which secure aggregation, when on, keeps from the
coordinator. Without differential privacy the audit is the baseline a data owner compares with.
The markup is ``templates/audit.html.j2``.
"""

from __future__ import annotations

from fedpharma.report.comparison import audit_caveats
from fedpharma.report.formatting import format_epsilon, format_score
from fedpharma.report.summary import AuditTarget, PrivacyAudit, RunSummary
from fedpharma.report.templating import render

NO_DP_SENTENCE = (
    "No differential privacy was applied in this run: the audit below is the leakage without it."
)
FINAL_MODEL = "Final model"
RAW_UPDATE = "Raw update (the coordinator sees it)"
RAW_UPDATE_SECURE = "Raw update: what secure aggregation keeps from the coordinator"


def audit_sentence(audit: PrivacyAudit) -> str:
    """The strongest attack of the audit, in words."""
    found = [
        (target.best_auc(), name, what)
        for name, site in audit.sites.items()
        for what, target in (("final model", site.final_model), ("raw update", site.site_update))
        if isinstance(target, AuditTarget)
    ]
    if not found:
        return "No membership-inference attack could be run."
    auc, site, what = max(found, key=lambda item: item[0])
    return (
        f"The strongest membership-inference attack reaches AUC {format_score(auc)} "
        f"({site}, {what}); 0.5 means an attacker cannot tell training records from held-out ones."
    )


def privacy_audit_html(summary: RunSummary) -> str:
    """The audit table (two rows per site) with its explanation; '' when no audit was run."""
    audit = summary.privacy_audit
    if audit is None:
        return ""
    update_label = RAW_UPDATE if audit.secure_aggregation == "none" else RAW_UPDATE_SECURE
    rows = [
        (
            name,
            _epsilon_text(summary, name),
            ((FINAL_MODEL, site.final_model), (update_label, site.site_update)),
        )
        for name, site in audit.sites.items()
    ]
    shifted = [name for name, site in audit.sites.items() if site.nonmember_shift]
    notes = [
        "AUC: how often the attack ranks a random training record of the site above a random "
        "held-out one (0.5 = it learns nothing, 1 = it tells them apart every time). Advantage: "
        "the best threshold's TPR − FPR, biased upwards on few records. Loss threshold: Yeom et "
        "al. 2018; calibrated: Watson et al. 2022, against the model the federation started "
        "from (final model) or the global model the site started from (raw update)."
    ]
    if shifted:
        notes.append(
            f"At {', '.join(shifted)} the held-out records come from groups (chemical scaffolds) "
            "the site did not train on, so the attack also sees that shift: read those AUCs as "
            "upper bounds on the leakage."
        )
    notes += audit_caveats(audit)
    if summary.privacy is not None:
        notes.append(
            "ε: the site's cumulative final ε, the formal bound on all it released, the final "
            "model included. A raw update is one round before aggregation: site-level DP noise "
            "is added to the sum (central) or only in part by each site (distributed), so one "
            "update alone carries little or none of it; record-level DP-SGD bounds each update "
            "itself."
        )
    return render("audit.html.j2", sentence=audit_sentence(audit), rows=rows, notes=notes)


def _epsilon_text(summary: RunSummary, site: str) -> str:
    """The site's final ε per relation, shown beside both of its rows; "no DP" without DP."""
    privacy = summary.privacy
    relations = privacy.relations() if privacy is not None else ()
    if privacy is None or not relations:
        return "no DP"
    final = privacy.final.get(site, {})
    return ", ".join(f"{rel} {format_epsilon(final.get(rel))}" for rel in relations)
