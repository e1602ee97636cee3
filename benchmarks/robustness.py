"""Poisoning table: robust aggregation against one poisoning site of five, on Tox21.

Five sites (scaffold partition of Tox21, 12 assays, RDKit descriptors), one of which
(``site-1``) is a :class:`fedpharma.sim.poisoning.PoisoningSite`: a real site runtime whose
training is subverted, answering through the real codec and the join check. Attacks: its honest
update scaled by +``--factor`` (model replacement), by −``--factor`` (sign flip), or trained on
flipped labels. Rows: clean FedAvg, then per attack FedAvg and each robust rule of ``[robust]``
(norm bound, coordinate median, trimmed mean, Multi-Krum, all with byzantine = 1). Cell: the
final federated model's mean ROC-AUC over the 12 assays, the test-size-weighted mean over
the five sites' test sets (the poisoner's labels there are genuine), averaged over ``--seeds``
seeds. The target: each robust rule within 2 % of clean FedAvg where FedAvg is destroyed.

``--flood`` also runs ``benchmarks/flood.py``'s flood table (one hostile site flooding a
deployed coordinator) when that module is present.

    .venv/bin/python benchmarks/robustness.py                 # 3 seeds
    .venv/bin/python benchmarks/robustness.py --seeds 1 --rounds 5   # a quick look

Writes ``benchmarks/results/robustness.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, machine_info, print_table, require_shared_file, write_json

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
from fedpharma.core.dataset import SiteData
from fedpharma.data.partition import partition, scaffold_split
from fedpharma.server.round import RoundRecord
from fedpharma.sim.engine import Simulation, prepare_sites, simulate
from fedpharma.sim.poisoning import ATTACKS, poison

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


def resplit(sim: Simulation, config: RunConfig) -> Simulation:
    """The sites :func:`prepare_sites` makes for ``config.seed``, from featurized data."""
    rng = np.random.default_rng(config.seed)
    parts = partition(sim.dataset, config.partition, rng)
    sites = {}
    for index, rows in enumerate(parts, start=1):
        name = f"site-{index}"
        local = sim.dataset.subset(rows, name=name)
        train, test = scaffold_split(local.groups, config.dataset.test_fraction, rng)
        sites[name] = SiteData(local.subset(train), local.subset(test))
    return Simulation(sites, sim.dataset, sim.invalid_molecules)


def final_auc(
    config: RunConfig, sim: Simulation, workdir: Path, attack: str | None, factor: float
) -> tuple[float, list[float]]:
    """The final model's ROC-AUC, and the norms of the updates it received."""
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
    return (float("nan") if value is None else float(value)), norms


def run_seed(path: Path, sim: Simulation, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    config = base_config(path, seed, args.rounds)
    sim = resplit(sim, config)
    cells: dict[str, dict[str, float]] = {}
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
                auc, norms = final_auc(recipe, sim, workdir / f"{row}-{name}", attack, args.factor)
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
    return cells


def mean_cells(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    rows = per_seed[0]
    return {
        row: {name: float(np.mean([seed[row][name] for seed in per_seed])) for name in rows[row]}
        for row in rows
    }


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


def run_flood() -> None:
    flood = Path(__file__).resolve().parent / "flood.py"
    if not flood.exists():
        print("\nflood table: benchmarks/flood.py is not in this tree; nothing to run")
        return
    spec = importlib.util.spec_from_file_location("flood", flood)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([])


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
    parser.add_argument("--flood", action="store_true", help="also run benchmarks/flood.py")
    args = parser.parse_args(argv)
    path = require_shared_file("tox21.csv.gz")
    started = time.perf_counter()
    sim = prepare_sites(base_config(path, 0, args.rounds))
    print(f"Tox21 featurized in {time.perf_counter() - started:.0f} s", flush=True)
    per_seed = [run_seed(path, sim, seed, args) for seed in range(args.seeds)]
    bounds = [cells.pop("norm_bound_used")["value"] for cells in per_seed]
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
        },
    )
    print(f"wrote {out}")
    if args.flood:
        run_flood()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
