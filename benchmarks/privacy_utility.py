"""Privacy–utility benchmark: what record-level DP costs in accuracy and in training time.

On ESOL and Tox21 (``../shared/data``), split into 4 partners by scaffold exactly as
``benchmarks/utility.py`` does and with its hyper-parameters, every partner trains with DP-SGD
(Opacus, ghost clipping, Poisson sampling; Abadi et al. 2016) at a record-level target
ε ∈ {1, 3, 8} (δ = 1e-5, RDP accountant with the improved conversion). Each site calibrates its
noise multiplier so the planned rounds together spend the target, charges its own ledger every
round, and refuses anything beyond its budget. ε = ∞ is the same federation without DP.

Prints, per dataset and ε: the pooled and per-partner metric of the federated model (FedAvg),
the largest ε any site spent, and the noise multiplier; then DP-SGD's time per epoch relative to
non-private training on one partner's data (target ≤ 4×). Writes JSON.

Run from the project root::

    .venv/bin/python benchmarks/privacy_utility.py            # ~15 min on 2 cores
    .venv/bin/python benchmarks/privacy_utility.py --quick    # 3 rounds, ε ∈ {3, ∞}
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import RESULTS_DIR, machine_info, print_table, require_shared_file, write_json
from utility import BENCHMARKS

from fedpharma.core.config import PrivacyConfig, SitePolicyConfig
from fedpharma.models.factory import build_private_trainer, build_trainer
from fedpharma.report.plots import privacy_utility_png
from fedpharma.sim.engine import prepare_sites, simulate

EPSILONS = (1.0, 3.0, 8.0, None)  # None: no DP
DELTA = 1e-5
MAX_GRAD_NORM = 1.0
TIME_TARGET = 4.0

# Under DP the sites release no label statistics (it would be unaccounted), so the output layer
# starts from a public prior instead (``[model] label_mean`` / ``label_std``, costs no privacy):
# drug-like aqueous solubility log S ≈ −3 ± 2 log(mol/L), a rounded textbook range, not computed
# from this data. Tox21's metric (ROC-AUC) does not depend on the output offset: no prior.
LABEL_PRIORS = {"esol": ((-3.0,), (2.0,))}


def run_dataset(key: str, epsilons: tuple[float | None, ...], quick: bool) -> dict[str, Any]:
    bench = BENCHMARKS[key]
    rounds = 3 if quick else bench.rounds
    base = replace(
        bench.config(require_shared_file(bench.file), seed=0, rounds=rounds), baselines=False
    )
    print(f"\n== {bench.title}: featurizing and splitting by scaffold …", flush=True)
    sim = prepare_sites(base)
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix=f"privacy-{key}-") as tmp:
        for eps in epsilons:
            config = base
            if eps is not None:
                config = replace(
                    base,
                    privacy=PrivacyConfig(
                        record_level=True,
                        target_epsilon=eps,
                        max_grad_norm=MAX_GRAD_NORM,
                        delta=DELTA,
                    ),
                    site_policy=SitePolicyConfig(record_epsilon=eps, record_delta=DELTA),
                )
            started = time.perf_counter()
            summary = simulate(config, Path(tmp) / f"eps{eps}", prepared=sim).summary
            seconds = time.perf_counter() - started
            privacy = summary.privacy
            spent = [
                value
                for by in (privacy.final.values() if privacy is not None else ())
                if (value := by.get("record")) is not None
            ]
            result = {
                "epsilon_target": eps,
                "epsilon_spent_max": max(spent) if spent else None,
                "pooled": summary.pooled.federated,
                "sites": {n: s.federated for n, s in summary.sites.items()},
                "refusals": len(privacy.refusals) if privacy is not None else 0,
                "seconds": seconds,
            }
            results.append(result)
            rows.append(
                [
                    "∞" if eps is None else f"{eps:g}",
                    "—" if not spent else f"{max(spent):.3f}",
                    f"{result['pooled']:.3f}",
                    *(f"{v:.3f}" for v in result["sites"].values()),
                    f"{seconds:.0f}",
                ]
            )
            print(
                f"   ε = {rows[-1][0]}: pooled {summary.metric.name} {rows[-1][2]}",
                flush=True,
            )
    metric = summary.metric
    arrow = "↑" if metric.higher_is_better else "↓"
    print(f"\n{bench.title}: federated (FedAvg) {metric.name} {arrow}")
    print(f"at record-level target ε (δ = {DELTA:g}); spent ε = the most any site spent")
    print_table(["target ε", "spent ε", "pooled", *summary.sites, "s"], rows)
    plot = RESULTS_DIR / f"privacy_utility_{key}.png"
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot.write_bytes(
        privacy_utility_png(
            [(r["epsilon_target"], r["pooled"]) for r in results],
            metric["name"],
            metric["higher_is_better"],
            f"{bench.title}: federated model vs record-level ε",
        )
    )
    print(f"   plot: {plot}")
    return {
        "title": bench.title,
        "plot": str(plot),
        "metric": metric,
        "rounds": rounds,
        "results": results,
        "epoch_timing": epoch_timing(base, sim),
    }


def epoch_timing(config: Any, sim: Any) -> dict[str, Any]:
    """DP-SGD vs non-private: median seconds of one local epoch on site-1's training data."""
    data = sim.sites["site-1"].train
    plain = build_trainer(config, sim.dataset)
    private = build_private_trainer(
        replace(config, privacy=PrivacyConfig(record_level=True, noise_multiplier=1.0)), sim.dataset
    )
    params = plain.initial_parameters(0)

    def median_seconds(fit: Any) -> float:
        fit()  # warm-up: first optimizer / Opacus hooks
        times = []
        for _ in range(3):
            started = time.perf_counter()
            fit()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    plain_s = median_seconds(lambda: plain.fit(params, data, epochs=1, seed=0))
    private_s = median_seconds(lambda: private.fit(params, data, epochs=1, seed=0))
    ratio = private_s / plain_s
    verdict = "PASS" if ratio <= TIME_TARGET else "FAIL"
    print(
        f"   one epoch on {len(data)} rows: non-private {plain_s * 1e3:.0f} ms, DP-SGD (ghost "
        f"clipping) {private_s * 1e3:.0f} ms → {ratio:.2f}× (target ≤ {TIME_TARGET:g}×) [{verdict}]"
    )
    return {"rows": len(data), "plain_seconds": plain_s, "dp_seconds": private_s, "ratio": ratio}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="esol,tox21")
    parser.add_argument("--quick", action="store_true", help="3 rounds, ε ∈ {3, ∞}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest here)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "privacy_utility.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    epsilons = (3.0, None) if args.quick else EPSILONS
    machine = machine_info()
    print(f"machine: {machine}")
    started = time.perf_counter()
    datasets = {key: run_dataset(key, epsilons, args.quick) for key in args.datasets.split(",")}
    total = time.perf_counter() - started
    print(f"\nwall time {total:.0f} s")
    write_json(
        args.out, {"machine": machine, "delta": DELTA, "datasets": datasets, "seconds": total}
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
