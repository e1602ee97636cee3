"""Multi-pharma benchmark: does every partner gain from a federated trunk with private heads?

MELLODDY's headline result (Heyndrickx et al. 2023, J. Chem. Inf. Model.): ten pharma companies,
each with its own assays, trained one shared trunk with private task heads, and every partner's
own models improved. This script reproduces that setting on public data.

**Data.** ``chembl_5thresh.csv.gz`` from ``../shared/data``: 23,871 molecules × 691 ChEMBL
targets, pChEMBL values, 0.55 % of the matrix labelled. Regression on pChEMBL (no threshold).

**Split (documented, seeded).**
1. Targets are dealt to 5 partners at random (138–139 each): a partner *owns* its targets, as a
   company owns its assays; no target is at two partners.
2. A partner holds every molecule with at least one label on its targets, with labels on its
   targets only. A molecule measured on several partners' targets sits at several partners, as
   public compounds do.
3. Train/test: one scaffold split over *all* molecules (Bemis–Murcko scaffolds; 20 % of the
   molecules in test), applied at every partner. A test molecule is therefore a test molecule
   everywhere: no partner's training data holds another partner's test compounds, so the trunk
   never saw a test structure.

**Models (same architecture and epochs for both).** An MLP on 2,048-bit Morgan fingerprints
(radius 2): trunk ``hidden`` layers, then a head with one output per target of the partner.
- single-partner: each partner alone trains trunk + head for ``rounds × local_epochs`` epochs;
- federated: ``rounds`` of FedAvg (McMahan et al. 2017) over the trunk through the real round loop
  and wire codec (:class:`~fedpharma.transport.inprocess.InProcessChannel`); each partner's
  head is private (:class:`~fedpharma.models.private_head.PrivateHeadTrainer`).

A third model, **centralized**, pools every partner's training molecules with every target into
one trunk and one head: the ceiling pooling all data would give (no consortium can train it).

**Score.** Per partner, each of its targets with at least ``--min-test-labels`` test labels is
scored by RMSE on the partner's held-out molecules (R² is reported beside it). The relative gain
of a task is (RMSE_single − RMSE_federated) / RMSE_single. Reported per partner: the median
per-task RMSE of both models, the median relative gain, and the fraction of tasks improved;
overall: the fraction of partners whose median per-task RMSE improved. Targets (printed with
PASS / FAIL; the exit code is 0 either way): every partner improves, and the median relative gain
over all scored tasks is ≥ 3 %.

Run from the project root::

    .venv/bin/python benchmarks/multipharma.py            # ~10 min on 2 cores
    .venv/bin/python benchmarks/multipharma.py --quick    # smoke run: 3 rounds, 2 partners' worth
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, machine_info, print_table, require_shared_file, write_json

from fedpharma.core.config import (
    FeaturesConfig,
    ModelConfig,
    PartitionConfig,
    RunConfig,
    StrategyConfig,
    TrainingConfig,
)
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.data.molecules import featurize, parse_smiles, scaffold_groups
from fedpharma.data.partition import scaffold_split
from fedpharma.evaluation.metrics import per_task_metrics
from fedpharma.models.factory import build_trainer
from fedpharma.server.plan import build_federation
from fedpharma.sim.engine import Simulation, build_site_runtimes, site_trainers, train_baselines
from fedpharma.transport.inprocess import InProcessChannel

DATA_FILE = "chembl_5thresh.csv.gz"


def load_matrix(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """SMILES, target ids and the molecules × targets pChEMBL matrix (NaN = not measured)."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        smiles_at = header.index("smiles")
        targets = [h for i, h in enumerate(header) if i != smiles_at]
        smiles, rows = [], []
        for row in reader:
            smiles.append(row[smiles_at])
            rows.append([float(v) if v else np.nan for i, v in enumerate(row) if i != smiles_at])
    return smiles, targets, np.asarray(rows, dtype=np.float32)


def build_partners(
    smiles: list[str], targets: list[str], labels: np.ndarray, args: argparse.Namespace
) -> tuple[Simulation, dict[str, Any]]:
    """The documented split: targets dealt to partners, one global scaffold split."""
    rng = np.random.default_rng(args.seed)
    parsed = parse_smiles(smiles)
    valid = np.asarray(parsed.rows)
    features = featurize(parsed.mols, FeaturesConfig(radius=2, n_bits=2048))
    labels = labels[valid]
    groups = scaffold_groups(parsed.mols)
    _, test_rows = scaffold_split(groups, 0.2, rng)
    is_test = np.zeros(len(valid), dtype=bool)
    is_test[test_rows] = True

    owner = rng.permutation(len(targets)) % args.partners
    sites: dict[str, SiteData] = {}
    described = {}
    for k in range(args.partners):
        own = np.flatnonzero(owner == k)
        own_labels = labels[:, own]
        rows = np.flatnonzero(np.isfinite(own_labels).any(axis=1))
        name = f"partner-{k + 1}"
        task_names = tuple(targets[t] for t in own)

        train, test = rows[~is_test[rows]], rows[is_test[rows]]
        sites[name] = SiteData(
            *(
                Dataset(features[r], own_labels[r], "regression", task_names, groups[r], name=name)
                for r in (train, test)
            )
        )
        described[name] = {
            "targets": len(own),
            "train_molecules": len(sites[name].train),
            "test_molecules": len(sites[name].test),
            "labels": int(np.isfinite(own_labels[rows]).sum()),
        }
    # The pooled training set over every target: the centralized reference no consortium has.
    train = ~is_test
    everything = Dataset(
        features[train], labels[train], "regression", tuple(targets), groups[train], name="pooled"
    )
    shared = np.sum(
        [np.isfinite(labels[:, owner == k]).any(axis=1) for k in range(args.partners)], 0
    )
    described["molecules"] = len(valid)
    described["molecules_at_several_partners"] = int((shared > 1).sum())
    return Simulation(sites, everything, len(smiles) - len(valid)), described


def config(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        features=FeaturesConfig(radius=2, n_bits=2048),
        partition=PartitionConfig(n_sites=args.partners),
        model=ModelConfig(hidden=tuple(args.hidden), dropout=args.dropout, private_heads=True),
        training=TrainingConfig(
            local_epochs=args.local_epochs, batch_size=args.batch_size, learning_rate=args.lr
        ),
        strategy=StrategyConfig(name="fedavg"),
        rounds=args.rounds,
        seed=args.seed,
    )


def train_all(sim: Simulation, cfg: RunConfig) -> dict[str, dict[str, np.ndarray]]:
    """Per partner: test predictions of the federated, the single-partner and the centralized
    model (one trunk and one head over every target, trained on the pooled training molecules:
    the ceiling that pooling all data would give, which no consortium can train)."""
    shared = build_trainer(cfg, sim.dataset)
    trainers = site_trainers(cfg, sim, shared)
    initial = shared.initial_parameters(cfg.seed)
    with tempfile.TemporaryDirectory() as run_dir:
        channel = InProcessChannel(build_site_runtimes(cfg, sim, trainers, Path(run_dir)))
        federation = build_federation(
            cfg, planned_sites=len(sim.sites), noise_rng=np.random.default_rng(cfg.seed)
        )
        started = time.perf_counter()
        final = federation.run(channel, initial, cfg.rounds, run_id="multipharma")
        print(f"federated: {cfg.rounds} rounds in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    models, predictors = train_baselines(cfg, sim, shared, initial)
    print(f"single-partner models in {time.perf_counter() - started:.0f} s")
    local = models["local"]
    assert isinstance(local, dict)
    started = time.perf_counter()
    pooled = sim.dataset
    central = build_trainer(cfg, pooled)
    epochs = cfg.rounds * cfg.training.local_epochs
    central_trunk = central.fit(initial, pooled, epochs=epochs, seed=cfg.seed).parameters
    print(f"centralized model in {time.perf_counter() - started:.0f} s")
    column = {target: index for index, target in enumerate(pooled.task_names)}
    predictions = {}
    for name, data in sim.sites.items():
        test = data.test
        unlabelled = np.full((len(test), pooled.n_tasks), np.nan, dtype=np.float32)
        as_pooled = Dataset(test.features, unlabelled, test.task, pooled.task_names, test.groups)
        own = [column[target] for target in test.task_names]
        predictions[name] = {
            "federated": trainers[name].predict(final, test),
            "single": predictors["local"][name].predict(local[name], test),
            "centralized": central.predict(central_trunk, as_pooled)[:, own],
        }
    return predictions


def score(
    sim: Simulation, predictions: dict[str, dict[str, np.ndarray]], min_labels: int
) -> dict[str, Any]:
    partners: dict[str, Any] = {}
    all_gains = []
    for name, data in sim.sites.items():
        labels = data.test.labels
        scored = np.flatnonzero(np.isfinite(labels).sum(axis=0) >= min_labels)
        per_model = {
            model: per_task_metrics("regression", labels[:, scored], p[:, scored])
            for model, p in predictions[name].items()
        }
        single, federated, central = (
            np.array([m["rmse"] for m in per_model[model]])
            for model in ("single", "federated", "centralized")
        )
        gains = (single - federated) / single
        all_gains.extend(gains.tolist())
        partners[name] = {
            "tasks_scored": int(scored.size),
            "median_rmse_single": float(np.median(single)),
            "median_rmse_federated": float(np.median(federated)),
            "median_r2_single": float(np.nanmedian([m["r2"] for m in per_model["single"]])),
            "median_r2_federated": float(np.nanmedian([m["r2"] for m in per_model["federated"]])),
            "median_relative_gain": float(np.median(gains)),
            "fraction_tasks_improved": float(np.mean(gains > 0)),
            "median_rmse_centralized": float(np.median(central)),
            "median_relative_gain_centralized": float(np.median((single - central) / single)),
        }
    improved = [p["median_rmse_federated"] < p["median_rmse_single"] for p in partners.values()]
    return {
        "partners": partners,
        "median_relative_gain": float(np.median(all_gains)),
        "fraction_tasks_improved": float(np.mean(np.array(all_gains) > 0)),
        "fraction_partners_improved": float(np.mean(improved)),
        "tasks_scored": len(all_gains),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partners", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512])
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--min-test-labels", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 rounds: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "multipharma.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 3

    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    smiles, targets, labels = load_matrix(require_shared_file(DATA_FILE))
    sim, split = build_partners(smiles, targets, labels, args)
    print(
        f"{split['molecules']} molecules, {len(targets)} targets; prepared in "
        f"{time.perf_counter() - started:.0f} s; "
        f"{split['molecules_at_several_partners']} molecules sit at several partners"
    )
    cfg = config(args)
    result = score(sim, train_all(sim, cfg), args.min_test_labels)

    rows = [
        [
            name,
            split[name]["targets"],
            split[name]["train_molecules"],
            split[name]["test_molecules"],
            p["tasks_scored"],
            p["median_rmse_single"],
            p["median_rmse_federated"],
            p["median_r2_single"],
            p["median_r2_federated"],
            f"{100 * p['median_relative_gain']:+.1f} %",
            f"{100 * p['fraction_tasks_improved']:.0f} %",
            p["median_rmse_centralized"],
            f"{100 * p['median_relative_gain_centralized']:+.1f} %",
        ]
        for name, p in result["partners"].items()
    ]
    print_table(
        [
            "partner",
            "targets",
            "train mols",
            "test mols",
            "tasks scored",
            "RMSE single",
            "RMSE fed",
            "R² single",
            "R² fed",
            "median gain",
            "tasks improved",
            "RMSE pooled",
            "pooled gain",
        ],
        rows,
    )
    every = result["fraction_partners_improved"] == 1.0
    gain = result["median_relative_gain"]
    targets_met = {
        "every partner improves": every,
        "median relative gain ≥ 3 %": gain >= 0.03,
    }
    print(
        f"\nall {result['tasks_scored']} scored tasks: median relative gain "
        f"{100 * gain:+.1f} %, {100 * result['fraction_tasks_improved']:.0f} % of tasks improved; "
        f"{100 * result['fraction_partners_improved']:.0f} % of partners improved"
    )
    for target, ok in targets_met.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {target}")
    payload = {
        "benchmark": "multipharma",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "split": split,
        "result": result,
        "targets": targets_met,
        "seconds": time.perf_counter() - started,
        "machine": machine_info(),
    }
    print(f"wrote {write_json(args.out, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
