"""Poisoning table: robust aggregation against one poisoning site of five, on Tox21.

Five sites (scaffold partition of Tox21, 12 assays, RDKit descriptors), one of which
(``site-1``) is a :class:`fedpharma.sim.poisoning.PoisoningSite`: a real site runtime whose
training is subverted, answering through the real codec and the join check. Attacks: its honest
update scaled by +``--factor`` (model replacement), by −``--factor`` (sign flip), or trained on
flipped labels. Rows: clean FedAvg, then per attack FedAvg and each robust rule of ``[robust]``
(norm bound, coordinate median, trimmed mean, Multi-Krum, all with byzantine = 1). Cell: the
final federated model's mean ROC-AUC over the 12 assays, the test-size-weighted mean over
the five sites' test sets (the poisoner's labels there are genuine), averaged over ``--seeds``
seeds. The target: each robust rule within 2 % of clean FedAvg where FedAvg is destroyed,
judged on the mean over the seeds. Beside it, a paired bootstrap of seed 0's test molecules
(``--bootstrap`` resamples, each site's test set resampled, the same rows for every model;
:mod:`fedpharma.evaluation.bootstrap`, as ``benchmarks/utility.py`` does) gives each cell's
ratio to the clean run as a 95 % interval: how far a verdict could have gone the other way on
test sets this small. It does not include training randomness, and it does not change a verdict.

Then it prints the flood table of ``benchmarks/flood.py`` (one hostile site flooding a deployed
coordinator; about a minute; ``--no-flood`` skips it, ``benchmarks/flood.py`` runs it alone).

    .venv/bin/python benchmarks/robustness.py                 # 3 seeds, one after the other
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/robustness.py --jobs 3   # 3 seeds at once
    .venv/bin/python benchmarks/robustness.py --seeds 1 --rounds 5   # a quick look

Writes ``benchmarks/results/robustness.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, machine_info, print_table, require_shared_file, write_json
from utility import resplit

from fedpharma.core.config import (
    DatasetConfig,
    FeaturesConfig,
    ModelConfig,
    PartitionConfig,
    RobustConfig,
    RunConfig,
    StrategyConfig,
    TrainingConfig,
)
from fedpharma.evaluation.bootstrap import paired_bootstrap, percentile_interval
from fedpharma.server.round import RoundRecord
from fedpharma.sim.engine import simulate
from fedpharma.sim.poisoning import ATTACKS, poison
from fedpharma.sim.sites import Simulation, prepare_sites

N_SITES = 5
POISONER = "site-1"
TOX21_TASKS = (
    "NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD",
    "NR-PPAR-gamma", "SR-ARE", "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53",
)  # fmt: skip
TARGET = 0.02  # a robust rule's final ROC-AUC within 2 % of the clean run


def rules(norm_bound: float | None) -> dict[str, RobustConfig]:
    return {
        "fedavg": RobustConfig(),
        "norm_bound": RobustConfig(norm_bound=norm_bound),
        "median": RobustConfig(rule="median"),
        "trimmed_mean": RobustConfig(rule="trimmed_mean"),
        "multi_krum": RobustConfig(rule="multi_krum"),
    }


def base_config(path: Path, seed: int, rounds: int) -> RunConfig:
    return RunConfig(
        dataset=DatasetConfig(path=str(path), label_columns=TOX21_TASKS, task="classification"),
        features=FeaturesConfig(fingerprint="none", descriptors=True),
        partition=PartitionConfig(method="scaffold", n_sites=N_SITES),
        model=ModelConfig(kind="mlp", hidden=(256, 64), dropout=0.3),
        training=TrainingConfig(local_epochs=1, batch_size=64, learning_rate=1e-3),
        strategy=StrategyConfig(name="fedavg", min_sites=N_SITES, evaluate_every=0),
        rounds=rounds,
        seed=seed,
        baselines=False,
        privacy_audit=False,
    )


def final_auc(
    config: RunConfig, sim: Simulation, workdir: Path, attack: str | None, factor: float
) -> tuple[float, list[float], dict[str, np.ndarray]]:
    """The final model's ROC-AUC, the norms of the updates it received, and its predictions
    on each site's test set."""
    adversary = None
    if attack is not None:

        def adversary(runtimes: dict[str, Any]) -> dict[str, Any]:
            return poison(runtimes, POISONER, attack, factor)

    norms: list[float] = []

    def on_round(record: RoundRecord, _rounds: int) -> None:
        norms.extend(
            float(np.linalg.norm(r.update.flatten())) for r in record.train_results.values()
        )

    result = simulate(config, workdir, prepared=sim, adversary=adversary, on_round=on_round)
    value = result.summary.pooled.federated
    auc = float("nan") if value is None else float(value)
    return auc, norms, result.predictions["federated"]


def run_seed(path: Path, sim: Simulation, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every cell of the table for ``seed`` (and, for seed 0, the test-set bootstrap)."""
    config = base_config(path, seed, args.rounds)
    sim = resplit(sim, config)
    cells: dict[str, dict[str, float]] = {}
    predictions: dict[str, dict[str, np.ndarray]] = {}
    norm_bound = args.norm_bound
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for attack in (None, *ATTACKS):
            row = "clean" if attack is None else attack
            cells[row] = {}
            for name, robust in rules(norm_bound).items():
                if attack is None and name != "fedavg" and not args.clean_rules:
                    continue
                started = time.perf_counter()
                recipe = dataclasses.replace(config, robust=robust)
                auc, norms, predicted = final_auc(
                    recipe, sim, workdir / f"{row}-{name}", attack, args.factor
                )
                if seed == 0 and args.bootstrap:
                    predictions[f"{row}/{name}"] = predicted
                if attack is None and name == "fedavg" and norm_bound is None:
                    # Sun et al. 2019 bound at the honest updates' typical norm: the median
                    # of the clean run's.
                    norm_bound = float(np.median(norms))
                    print(f"  seed {seed} norm bound: {norm_bound:.3f} (clean median)")
                cells[row][name] = auc
                print(
                    f"  seed {seed} {row:<10} {name:<12} ROC-AUC {auc:.3f} "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    cells["norm_bound_used"] = {"value": float(norm_bound or 0.0)}
    if predictions:
        rng = np.random.default_rng([seed, 0xB007])
        cells["bootstrap"] = test_set_uncertainty(sim, predictions, rng, args.bootstrap)
    return cells


def test_set_uncertainty(
    sim: Simulation,
    predictions: dict[str, dict[str, np.ndarray]],
    rng: np.random.Generator,
    resamples: int,
) -> dict[str, Any]:
    """Per cell (``"attack/rule"``), a paired bootstrap of the pooled ROC-AUC's ratio to the clean
    run: each site's test molecules resampled (the same rows for every model), the sites' ROC-AUCs
    combined test-size-weighted as in the table; a 95 % interval, and the share of resamples on
    which the cell is within the target."""
    sizes = np.array([len(data.test) for data in sim.sites.values()], dtype=float)
    per_site = [
        paired_bootstrap(
            data.test.task,
            data.test.dense_labels(),
            {cell: by_site[site] for cell, by_site in predictions.items()},
            "roc_auc",
            rng,
            resamples,
        )
        for site, data in sim.sites.items()
    ]
    pooled = {
        cell: np.average(np.stack([scores[cell] for scores in per_site]), axis=0, weights=sizes)
        for cell in predictions
    }
    clean = pooled["clean/fedavg"]
    out: dict[str, Any] = {"resamples": resamples, "level": 0.95}
    for cell, values in pooled.items():
        if cell == "clean/fedavg":
            continue
        ratio = values / clean
        finite = ratio[np.isfinite(ratio)]
        out[cell] = {
            "ratio_to_clean": percentile_interval(ratio),
            "share_within_target": float(np.mean(finite >= 1 - TARGET)),
        }
    return out


def print_uncertainty(uncertainty: dict[str, Any]) -> None:
    print(
        f"\nseed 0, ratio to the clean run (paired bootstrap of the test molecules, "
        f"{uncertainty['resamples']} resamples; training randomness not included):"
    )
    for cell, entry in uncertainty.items():
        if not isinstance(entry, dict):
            continue
        row, name = cell.split("/")
        low, high = entry["ratio_to_clean"]
        print(
            f"  {row:<10} {name:<12} 95% [{low:.3f}, {high:.3f}], "
            f"≥ {1 - TARGET:.2f} on {entry['share_within_target']:.0%} of resamples",
            flush=True,
        )


def mean_cells(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    rows = per_seed[0]
    return {
        row: {name: float(np.mean([seed[row][name] for seed in per_seed])) for name in rows[row]}
        for row in rows
    }


def spread(per_seed: list[dict[str, dict[str, float]]], row: str, name: str) -> float | None:
    values = [seed[row][name] for seed in per_seed if name in seed[row]]
    return float(np.ptp(values)) if values else None


def verdicts(table: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Per attack and robust rule: within 2 % of clean FedAvg? (and how far FedAvg fell)."""
    clean = table["clean"]["fedavg"]
    out = []
    for attack in ATTACKS:
        for name, value in table[attack].items():
            if name == "fedavg":
                continue
            out.append(
                {
                    "attack": attack,
                    "rule": name,
                    "auc": value,
                    "relative_to_clean": value / clean - 1,
                    "within_target": value >= clean * (1 - TARGET),
                    "fedavg_under_attack": table[attack]["fedavg"],
                }
            )
    return out


def run_flood() -> int:
    """``benchmarks/flood.py`` in a process of its own: its coordinator's peak RSS is then that
    of a coordinator, not of one spawned from this script's imports (torch, RDKit)."""
    print("\nFlood table (benchmarks/flood.py):", flush=True)
    flood = Path(__file__).resolve().parent / "flood.py"
    return subprocess.run([sys.executable, str(flood)], check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--factor", type=float, default=10.0, help="scale of the poisoned update")
    parser.add_argument(
        "--norm-bound",
        type=float,
        default=None,
        help="[robust] norm_bound (default: per seed, the clean run's median update norm)",
    )
    parser.add_argument(
        "--clean-rules", action="store_true", help="also run each robust rule without attack"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=500,
        help="test-set bootstrap resamples for seed 0's cells (0: skip)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="seeds run at once, in forked processes"
    )
    parser.add_argument(
        "--no-flood", dest="flood", action="store_false", help="skip benchmarks/flood.py's table"
    )
    args = parser.parse_args(argv)
    path = require_shared_file("tox21.csv.gz")
    started = time.perf_counter()
    sim = prepare_sites(base_config(path, 0, args.rounds))
    print(f"Tox21 featurized in {time.perf_counter() - started:.0f} s", flush=True)
    seeds = range(args.seeds)
    if args.jobs > 1:  # forked workers share the featurized data; each runs whole seeds
        with multiprocessing.get_context("fork").Pool(min(args.jobs, args.seeds)) as pool:
            per_seed = pool.map(functools.partial(run_seed, path, sim, args=args), seeds)
    else:
        per_seed = [run_seed(path, sim, seed, args) for seed in seeds]
    bounds = [cells.pop("norm_bound_used")["value"] for cells in per_seed]
    uncertainty = per_seed[0].pop("bootstrap", None)
    table = mean_cells(per_seed)
    names = list(rules(args.norm_bound))
    print(
        f"\nFinal mean ROC-AUC (12 Tox21 assays, test-size-weighted over the sites), "
        f"{N_SITES} sites, 1 poisoning ({POISONER}), {args.rounds} rounds, "
        f"mean of {args.seeds} seed(s); norm bound per seed: "
        + ", ".join(f"{b:.3f}" for b in bounds)
    )
    print_table(
        ["attack", *names],
        [[row, *(table[row].get(name) for name in names)] for row in table],
    )
    print("\nspread over the seeds (max − min):")
    print_table(
        ["attack", *names],
        [[row, *(spread(per_seed, row, name) for name in names)] for row in table],
    )
    checks = verdicts(table)
    missed = [c for c in checks if not c["within_target"]]
    print(
        f"\nrobust rules within {TARGET:.0%} of clean FedAvg ({table['clean']['fedavg']:.3f}): "
        f"{len(checks) - len(missed)} of {len(checks)}"
        + "".join(
            f"\n  missed: {c['rule']} under {c['attack']}: {c['auc']:.3f} "
            f"({c['relative_to_clean']:+.1%})"
            for c in missed
        )
    )
    if uncertainty is not None:
        print_uncertainty(uncertainty)
    out = write_json(
        RESULTS_DIR / "robustness.json",
        {
            "args": vars(args),
            "machine": machine_info(),
            "seconds": time.perf_counter() - started,
            "per_seed": per_seed,
            "norm_bounds": bounds,
            "mean": table,
            "verdicts": checks,
            "bootstrap": uncertainty,
        },
    )
    print(f"wrote {out}")
    return run_flood() if args.flood else 0


if __name__ == "__main__":
    raise SystemExit(main())
