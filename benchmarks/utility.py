"""Utility benchmark: does federated training get (close to) centralized quality, and does every
partner gain over training alone?

Two public MoleculeNet datasets from ``../shared/data`` (or ``$FEDPHARMA_SHARED_DATA``):

- ESOL (Delaney): aqueous solubility, regression, RMSE (lower is better);
- Tox21: 12 toxicity assays, multitask classification with missing labels, mean ROC-AUC.

Each is split into 4 partners by Bemis–Murcko scaffold (``[partition] method = "scaffold"``:
every chemical series stays at one partner), and each partner holds out its own scaffold-split
test set. On the same sites it trains, with the same model and training hyper-parameters:

- local: each partner alone, ``rounds × local_epochs`` epochs on its own data;
- federated: FedAvg and FedAdam (Reddi et al. 2021), ``rounds`` rounds of ``local_epochs``;
- centralized: one model on the pooled training data (no real consortium can), same epochs;

and scores each on each partner's test set and on the pooled test set. The targets, printed with
PASS / FAIL (the exit code is 0 either way: this is a report):

1. federated ≥ 0.97 × centralized on the pooled metric (RMSE inverted: centralized / federated);
2. every partner's federated metric better than its local-only one;
3. centralized in the published scaffold-split band: ESOL RMSE ≤ 0.95, Tox21 ROC-AUC ≥ 0.75.

**Model selection** (on by default; ``--no-selection`` for the old fixed-epoch setup): each
partner holds out 15 % of its training data by scaffold as a validation fold; every model kind
is selected by one rule (:mod:`fedpharma.evaluation.selection`): the federated model at the round
with the best pooled validation metric, local and centralized references at the checkpoint
(every ``local_epochs`` epochs, one round's worth) with the best validation metric — the local
model on its partner's fold, the centralized model on every fold, pooled alike.

With one seed the targets are judged on seed 0; with ``--seeds N`` (N ≥ 3 for a verdict) on the
mean over seeds 0 … N−1 (partition, splits, initialisation and minibatch order all follow the
seed); seed 0's verdicts are kept beside them. Beside the verdicts, a paired bootstrap of seed
0's test molecules (``--bootstrap``, 1,000 resamples) shows
how far each comparison could have gone the other way on a test set this small; it does not
change a verdict.

Run from the project root::

    .venv/bin/python benchmarks/utility.py                 # full run, ~5–10 min on 2 cores
    .venv/bin/python benchmarks/utility.py --quick         # smoke run: 3 rounds
    .venv/bin/python benchmarks/utility.py --datasets esol --out /tmp/esol.json
    .venv/bin/python benchmarks/utility.py --model dmpnn   # chemprop's D-MPNN (fedpharma[chemprop])
    .venv/bin/python benchmarks/utility.py --model dmpnn --datasets esol --rounds 100
    # seeds as separate processes, then their mean judged as one --seeds 3 run:
    .venv/bin/python benchmarks/utility.py --first-seed 1 --seeds 1 --out /tmp/s1.json
    .venv/bin/python benchmarks/utility.py --combine /tmp/s0.json /tmp/s1.json /tmp/s2.json

Most of the wall time of a cold run is featurization (RDKit 2D descriptors, ~10–20 ms per
molecule), not training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, machine_info, print_table, require_shared_file, write_json

from fedpharma.core import serde
from fedpharma.core.config import (
    DatasetConfig,
    EvaluationConfig,
    FeaturesConfig,
    ModelConfig,
    PartitionConfig,
    RunConfig,
    StrategyConfig,
    TrainingConfig,
)
from fedpharma.core.dataset import SiteData, dense
from fedpharma.data.partition import partition, scaffold_split
from fedpharma.evaluation.bootstrap import paired_bootstrap, percentile_interval
from fedpharma.sim.engine import simulate
from fedpharma.sim.sites import Simulation, prepare_sites, split_validation

FEDERATED_RATIO = 0.97
N_SITES = 4
QUICK_ROUNDS = 3
VALIDATION_FRACTION = 0.15  # of each partner's training data, by scaffold (model selection)

TOX21_TASKS = (
    "NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD",
    "NR-PPAR-gamma", "SR-ARE", "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One dataset and the hyper-parameters every model on it (local, federated, central) uses."""

    key: str
    title: str
    file: str
    label_columns: tuple[str, ...]
    task: str
    features: FeaturesConfig
    model: ModelConfig
    training: TrainingConfig
    rounds: int
    server_learning_rate: float  # FedAdam η
    central_band: tuple[str, float]  # ("<=" | ">=", published scaffold-split bound)
    band_source: str

    def config(
        self, data_dir_file: Path, seed: int, rounds: int, selection: bool = True
    ) -> RunConfig:
        return RunConfig(
            dataset=DatasetConfig(
                path=str(data_dir_file), label_columns=self.label_columns, task=self.task
            ),
            features=self.features,
            partition=PartitionConfig(method="scaffold", n_sites=N_SITES),
            model=self.model,
            training=self.training,
            # With model selection every round is evaluated (its pooled validation metric picks
            # the round); without, once at the end (the curve costs an evaluation per round).
            strategy=StrategyConfig(name="fedavg", evaluate_every=1 if selection else 0),
            evaluation=EvaluationConfig(
                validation_fraction=VALIDATION_FRACTION if selection else 0.0
            ),
            rounds=rounds,
            seed=seed,
            baselines=True,
        )


# Hyper-parameters. Both datasets use the 217 RDKit 2D descriptors (normalized with public
# reference statistics, so every partner encodes a molecule identically) and no fingerprint:
# with ~250–1,800 training molecules per partner, 2,048 fingerprint bits overfit (Tox21 pooled
# ROC-AUC ≈ 0.72 from ECFP4 alone vs ≈ 0.82 from descriptors) and cost ~10× the training time.
BENCHMARKS: dict[str, Benchmark] = {
    "esol": Benchmark(
        key="esol",
        title="ESOL aqueous solubility (log mol/L)",
        file="esol_delaney.csv.gz",
        label_columns=("measured log solubility in mols per litre",),
        task="regression",
        features=FeaturesConfig(fingerprint="none", descriptors=True),
        model=ModelConfig(kind="mlp", hidden=(256, 64), dropout=0.1),
        training=TrainingConfig(local_epochs=1, batch_size=32, learning_rate=1e-3),
        rounds=40,
        server_learning_rate=1e-2,
        central_band=("<=", 0.95),
        band_source="scaffold split ≈ 0.82 RMSE (AttentiveFP, DGL-LifeSci); band RMSE ≤ 0.95",
    ),
    "tox21": Benchmark(
        key="tox21",
        title="Tox21, 12 assays (mean ROC-AUC over tasks)",
        file="tox21.csv.gz",
        label_columns=TOX21_TASKS,
        task="classification",
        features=FeaturesConfig(fingerprint="none", descriptors=True),
        model=ModelConfig(kind="mlp", hidden=(512, 128), dropout=0.5),
        training=TrainingConfig(
            local_epochs=1, batch_size=64, learning_rate=1e-3, weight_decay=1e-5
        ),
        rounds=30,
        server_learning_rate=1e-2,
        central_band=(">=", 0.75),
        band_source="scaffold split ≈ 0.80 ROC-AUC (DGL-LifeSci best); band ROC-AUC ≥ 0.75",
    ),
}

MODELS = ("local", "fedavg", "fedadam", "centralized")

DMPNN = ModelConfig(plugin="dmpnn", hidden=(300, 300), dropout=0.0)
"""``--model dmpnn``: chemprop's D-MPNN (message width 300, one FFN layer of 300, depth 3: its
defaults) on graphs built from each partner's SMILES, in place of the descriptor MLP."""


def with_model(bench: Benchmark, model: str) -> Benchmark:
    """``bench`` with ``--model``'s network: its own descriptor MLP, or the D-MPNN."""
    return bench if model == "mlp" else replace(bench, model=DMPNN)


def approved_by_every_site(config: RunConfig) -> RunConfig:
    """``config`` whose simulated sites approve its plugin's installed code (a consortium that
    reviewed chemprop 2.3.1)."""
    from fedpharma.models.plugin_identity import plugin_identity

    identity = plugin_identity(config.model.plugin)
    if identity is None:
        return config
    policy = replace(config.site_policy, approved_plugins=(identity.digest,))
    return replace(config, site_policy=policy)


def resplit(sim: Simulation, config: RunConfig) -> Simulation:
    """The sites :func:`prepare_sites` would make for ``config.seed``, from already featurized
    data (featurization is the slow part and does not depend on the seed).

    Mirrors ``prepare_sites`` step for step; :func:`run_dataset` checks that, for the seed the
    data was prepared with, the result is identical.
    """
    rng = np.random.default_rng(config.seed)
    parts = partition(sim.dataset, config.partition, rng)
    sites = {}
    for index, rows in enumerate(parts, start=1):
        name = f"site-{index}"
        local = sim.dataset.subset(rows, name=name)
        train, test = scaffold_split(local.groups, config.dataset.test_fraction, rng)
        sites[name] = split_validation(
            SiteData(local.subset(train), local.subset(test)),
            config.evaluation.validation_fraction,
            rng,
        )
    return Simulation(sites, sim.dataset, sim.invalid_molecules)


def _same_sites(a: Simulation, b: Simulation) -> bool:
    if list(a.sites) != list(b.sites):
        return False
    for name in a.sites:
        for part in ("train", "test", "validation"):
            x, y = getattr(a.sites[name], part), getattr(b.sites[name], part)
            if x is None or y is None:
                if x is not y:
                    return False
                continue
            if not (
                np.array_equal(dense(x.features), dense(y.features))
                and np.array_equal(x.dense_labels(), y.dense_labels(), equal_nan=True)
            ):
                return False
    return True


def every_partner_took_part(summary: Any, label: str) -> None:
    """Stop the benchmark if a round went on without a partner (a site that fails is left out
    of its round, and the federation carries on: the comparison would then be unfair)."""
    activity = summary.activity
    short = [
        (r, p) for r, p in zip(activity.rounds, activity.participants, strict=True) if p < N_SITES
    ]
    if short:
        raise RuntimeError(
            f"{label}: {len(short)} round(s) aggregated fewer than {N_SITES} partners "
            f"(first: round {short[0][0]}, {short[0][1]}); see the run's summary for why"
        )


def run_seed(
    bench: Benchmark, config: RunConfig, sim: Simulation, workdir: Path, resamples: int = 0
) -> dict[str, Any]:
    """FedAvg with local and centralized references, then FedAdam, on the same sites; with
    ``resamples``, also the test-set bootstrap of how each comparison could have come out."""
    started = time.perf_counter()
    fedavg_run = simulate(config, workdir / "fedavg", prepared=sim)
    every_partner_took_part(fedavg_run.summary, "FedAvg")
    fedavg = serde.to_dict(fedavg_run.summary)
    fedavg_seconds = time.perf_counter() - started
    fedadam_config = replace(
        config,
        strategy=replace(
            config.strategy, name="fedadam", server_learning_rate=bench.server_learning_rate
        ),
        baselines=False,
    )
    started = time.perf_counter()
    fedadam_run = simulate(fedadam_config, workdir / "fedadam", prepared=sim)
    every_partner_took_part(fedadam_run.summary, "FedAdam")
    fedadam = serde.to_dict(fedadam_run.summary)
    fedadam_seconds = time.perf_counter() - started

    def row(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return {
            "n_train": a.get("n_train"),
            "n_test": a["n_test"],
            "local": a["local"],
            "fedavg": a["federated"],
            "fedadam": b["federated"],
            "centralized": a["centralized"],
            "all_metrics": {
                "local": a["metrics"]["local"],
                "fedavg": a["metrics"]["federated"],
                "fedadam": b["metrics"]["federated"],
                "centralized": a["metrics"]["centralized"],
            },
        }

    sites = {name: row(fedavg["sites"][name], fedadam["sites"][name]) for name in fedavg["sites"]}
    uncertainty = None
    if resamples:
        predictions = {
            "local": fedavg_run.predictions["local"],
            "fedavg": fedavg_run.predictions["federated"],
            "fedadam": fedadam_run.predictions["federated"],
            "centralized": fedavg_run.predictions["centralized"],
        }
        rng = np.random.default_rng([config.seed, 0xB007])
        uncertainty = test_set_uncertainty(fedavg["metric"], sim, predictions, rng, resamples)
    return {
        "seed": config.seed,
        "bootstrap": uncertainty,
        "metric": fedavg["metric"],
        "sites": sites,
        "pooled": row(fedavg["pooled"], fedadam["pooled"]),
        "timings": {
            "fedavg_with_references_seconds": fedavg_seconds,
            "fedavg_seconds": fedavg["timings"]["federated_seconds"],
            "references_seconds": fedavg["timings"]["baseline_seconds"],
            "fedadam_seconds": fedadam_seconds,
        },
        "configs": {"fedavg": config.to_dict(), "fedadam": fedadam_config.to_dict()},
        "selection": {"fedavg": fedavg.get("selection"), "fedadam": fedadam.get("selection")},
    }


def test_set_uncertainty(
    metric: dict[str, Any],
    sim: Simulation,
    predictions: dict[str, dict[str, np.ndarray]],
    rng: np.random.Generator,
    resamples: int,
) -> dict[str, Any]:
    """Per partner and pooled, a paired bootstrap over the test molecules: each federated
    model's gain over local-only and its ratio to centralized (both oriented so that larger is
    better), as 95% intervals and as the share of resamples on which the target holds."""
    name, higher = metric["name"], metric["higher_is_better"]
    tests = {site: data.test for site, data in sim.sites.items()}
    task = next(iter(tests.values())).task
    cases = {
        site: (test.dense_labels(), {m: predictions[m][site] for m in MODELS})
        for site, test in tests.items()
    }
    cases["pooled"] = (
        np.concatenate([test.dense_labels() for test in tests.values()]),
        {m: np.concatenate([predictions[m][site] for site in tests]) for m in MODELS},
    )
    out: dict[str, Any] = {"resamples": resamples, "level": 0.95}
    for where, (labels, by_model) in cases.items():
        scores = paired_bootstrap(task, labels, by_model, name, rng, resamples)
        entry = {}
        for strategy in ("fedavg", "fedadam"):
            fed, local, central = scores[strategy], scores["local"], scores["centralized"]
            gain = fed - local if higher else local - fed
            ratio = fed / central if higher else central / fed
            entry[strategy] = {
                "gain_over_local": percentile_interval(gain),
                "share_better_than_local": float(np.mean(gain[np.isfinite(gain)] > 0)),
                "ratio_to_centralized": percentile_interval(ratio),
                "share_ratio_on_target": float(
                    np.mean(ratio[np.isfinite(ratio)] >= FEDERATED_RATIO)
                ),
            }
        out[where] = entry
    return out


def print_uncertainty(uncertainty: dict[str, Any], metric: str) -> None:
    print(
        f"  test-set uncertainty (paired bootstrap of the test molecules, "
        f"{uncertainty['resamples']} resamples; training randomness not included):"
    )
    for where, entry in uncertainty.items():
        if not isinstance(entry, dict):
            continue
        for strategy, u in entry.items():
            low, high = u["gain_over_local"] if where != "pooled" else u["ratio_to_centralized"]
            what = (
                f"{metric} gain over local 95% [{low:+.3f}, {high:+.3f}], "
                f"better on {u['share_better_than_local']:.0%} of resamples"
                if where != "pooled"
                else f"ratio to centralized 95% [{low:.3f}, {high:.3f}], "
                f"≥ {FEDERATED_RATIO} on {u['share_ratio_on_target']:.0%} of resamples"
            )
            print(f"    {where:<8}{strategy:<9}{what}", flush=True)


def _selection_line(selection: dict[str, Any]) -> str:
    """Where each model was selected (empty without model selection)."""
    fedavg, fedadam = selection.get("fedavg"), selection.get("fedadam")
    if not fedavg:
        return ""
    local = ", ".join(str(e) for e in fedavg["local_epochs"].values())
    return (
        f"; selected: FedAvg round {fedavg['federated_round']}, FedAdam round "
        f"{fedadam['federated_round'] if fedadam else '—'}, centralized "
        f"{fedavg['centralized_epochs']} epochs, local {local} epochs"
    )


def better(a: float | None, b: float | None, higher_is_better: bool) -> bool:
    """``a`` strictly better than ``b``; an undefined value is never better."""
    if a is None or b is None:
        return False
    return a > b if higher_is_better else a < b


def evaluate_targets(bench: Benchmark, result: dict[str, Any]) -> list[dict[str, Any]]:
    higher = result["metric"]["higher_is_better"]
    metric = result["metric"]["name"]
    pooled = result["pooled"]
    central = pooled["centralized"]
    targets = []
    for strategy in ("fedavg", "fedadam"):
        fed = pooled[strategy]
        if fed is None or central is None:
            ratio = None
        else:
            ratio = fed / central if higher else central / fed
        targets.append(
            {
                "target": f"pooled {strategy} ≥ {FEDERATED_RATIO} × centralized"
                + ("" if higher else f" ({metric} inverted: centralized / federated)"),
                "value": ratio,
                "threshold": FEDERATED_RATIO,
                "passed": ratio is not None and ratio >= FEDERATED_RATIO,
            }
        )
    for strategy in ("fedavg", "fedadam"):
        losers = [
            name
            for name, site in result["sites"].items()
            if not better(site[strategy], site["local"], higher)
        ]
        wins = len(result["sites"]) - len(losers)
        targets.append(
            {
                "target": f"every partner: {strategy} {metric} better than local-only",
                "value": f"{wins}/{len(result['sites'])} partners"
                + (f" (not: {', '.join(losers)})" if losers else ""),
                "threshold": "all",
                "passed": not losers,
            }
        )
    op, bound = bench.central_band
    in_band = central is not None and (central <= bound if op == "<=" else central >= bound)
    targets.append(
        {
            "target": f"centralized pooled {metric} {op} {bound} (published scaffold-split band)",
            "value": central,
            "threshold": bound,
            "passed": in_band,
            "source": bench.band_source,
        }
    )
    return targets


def print_result(bench: Benchmark, result: dict[str, Any], label: str) -> None:
    metric = result["metric"]["name"]
    arrow = "↑" if result["metric"]["higher_is_better"] else "↓"
    print(f"\n{bench.title}: {metric} {arrow}, {label}", flush=True)
    rows = [
        [name, site["n_train"], site["n_test"], *(site[m] for m in MODELS)]
        for name, site in result["sites"].items()
    ]
    pooled = result["pooled"]
    rows.append(["pooled", sum(r[1] for r in rows), pooled["n_test"], *(pooled[m] for m in MODELS)])
    print_table(["partner", "n_train", "n_test", *MODELS], rows)


def print_targets(targets: list[dict[str, Any]]) -> None:
    for t in targets:
        value = t["value"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"  [{'PASS' if t['passed'] else 'FAIL'}] {t['target']}: {shown}", flush=True)


def mean_over_seeds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per partner and pooled, each model's metric averaged over seeds (with the std)."""

    def mean(values: list[float | None]) -> dict[str, float | None]:
        defined = [v for v in values if v is not None]
        if not defined:
            return {"mean": None, "std": None}
        return {"mean": float(np.mean(defined)), "std": float(np.std(defined))}

    out: dict[str, Any] = {"seeds": [r["seed"] for r in results], "sites": {}, "pooled": {}}
    for name in results[0]["sites"]:
        out["sites"][name] = {m: mean([r["sites"][name][m] for r in results]) for m in MODELS}
    out["pooled"] = {m: mean([r["pooled"][m] for r in results]) for m in MODELS}
    return out


def run_dataset(bench: Benchmark, args: argparse.Namespace) -> dict[str, Any]:
    path = require_shared_file(bench.file)
    rounds = QUICK_ROUNDS if args.quick else args.rounds or bench.rounds
    base = approved_by_every_site(
        bench.config(path, seed=0, rounds=rounds, selection=not args.no_selection)
    )
    print(f"\n== {bench.title}: featurizing {path.name} and splitting by scaffold …", flush=True)
    started = time.perf_counter()
    sim = prepare_sites(base)
    prepare_seconds = time.perf_counter() - started
    print(
        f"   {len(sim.dataset)} molecules, {sim.dataset.n_features} features, "
        f"{sim.invalid_molecules} invalid; {prepare_seconds:.1f} s",
        flush=True,
    )
    if not _same_sites(resplit(sim, base), sim):
        raise RuntimeError("resplit() no longer mirrors fedpharma.sim.engine.prepare_sites")
    per_seed = []
    with tempfile.TemporaryDirectory(prefix=f"utility-{bench.key}-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            config = replace(base, seed=seed)
            sites = sim if seed == 0 else resplit(sim, config)
            print(
                f"   seed {seed}: FedAvg + local + centralized, then FedAdam "
                f"({rounds} rounds × {bench.training.local_epochs} local epoch(s)) …",
                flush=True,
            )
            resamples = args.bootstrap if seed == 0 else 0
            result = run_seed(bench, config, sites, Path(tmp) / f"seed{seed}", resamples)
            t = result["timings"]
            print(
                f"   {t['fedavg_seconds']:.1f} s FedAvg, {t['references_seconds']:.1f} s "
                f"local + centralized, {t['fedadam_seconds']:.1f} s FedAdam"
                + _selection_line(result["selection"]),
                flush=True,
            )
            per_seed.append(result)
    main = per_seed[0]
    targets = evaluate_targets(bench, main)
    print_result(bench, main, f"seed {main['seed']}")
    print_targets(targets)
    if main["bootstrap"] is not None:
        print_uncertainty(main["bootstrap"], main["metric"]["name"])
    out: dict[str, Any] = {
        "title": bench.title,
        "file": bench.file,
        "n_molecules": len(sim.dataset),
        "n_features": sim.dataset.n_features,
        "invalid_molecules": sim.invalid_molecules,
        "rounds": rounds,
        "local_epochs": bench.training.local_epochs,
        "prepare_seconds": prepare_seconds,
        "seed0": main,
        "targets": targets,
        "all_passed": all(t["passed"] for t in targets),
    }
    if len(per_seed) > 1:
        summarize_seeds(bench, per_seed, out)
    return out


def summarize_seeds(bench: Benchmark, per_seed: list[dict[str, Any]], out: dict[str, Any]) -> None:
    """Print the mean over ``per_seed`` and judge the targets on it, recorded in ``out``."""
    main = per_seed[0]
    targets = out["targets"]
    out["other_seeds"] = per_seed[1:]
    summary = mean_over_seeds(per_seed)
    out["mean_over_seeds"] = summary
    flat = {
        "metric": main["metric"],
        "sites": {
            n: {"n_train": "", "n_test": "", **{m: v[m]["mean"] for m in MODELS}}
            for n, v in summary["sites"].items()
        },
        "pooled": {"n_test": "", **{m: v["mean"] for m, v in summary["pooled"].items()}},
    }
    rows = [[n, *(site[m] for m in MODELS)] for n, site in flat["sites"].items()] + [
        ["pooled", *(flat["pooled"][m] for m in MODELS)]
    ]
    print(f"\n{bench.title}: mean over seeds {summary['seeds']} (targets judged on it)")
    print_table(["partner", *MODELS], rows)
    out["targets_seed0"] = targets
    out["targets"] = evaluate_targets(bench, flat)
    out["all_passed"] = all(t["passed"] for t in out["targets"])
    print_targets(out["targets"])
    wins = {
        s: sum(
            better(r["sites"][n][s], r["sites"][n]["local"], main["metric"]["higher_is_better"])
            for r in per_seed
            for n in r["sites"]
        )
        for s in ("fedavg", "fedadam")
    }
    total = sum(len(r["sites"]) for r in per_seed)
    out["partner_wins_over_seeds"] = {s: f"{w}/{total}" for s, w in wins.items()}
    print(
        "  partner × seed cases where federated beats local: "
        + ", ".join(f"{s} {w}/{total}" for s, w in wins.items()),
        flush=True,
    )


def combine(files: list[str]) -> dict[str, Any]:
    """The mean over the seeds of several ``--out`` files of one model (e.g. seeds run as
    separate processes with ``--first-seed``), printed and judged as one ``--seeds`` run."""
    payloads = [json.loads(Path(f).read_text(encoding="utf-8")) for f in files]
    if len({p["model"] for p in payloads}) != 1:
        raise SystemExit("--combine: the files hold different models")
    results: dict[str, Any] = {}
    for key in [k for k in BENCHMARKS if any(k in p["datasets"] for p in payloads)]:
        runs = [p["datasets"][key] for p in payloads if key in p["datasets"]]
        per_seed = sorted(
            (r for run in runs for r in [run["seed0"], *run.get("other_seeds", [])]),
            key=lambda r: int(r["seed"]),
        )
        seeds = [int(r["seed"]) for r in per_seed]
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"--combine: {key} has seed(s) twice: {seeds}")
        bench = with_model(BENCHMARKS[key], payloads[0]["model"])
        out: dict[str, Any] = {"title": bench.title, "seed0": per_seed[0]}
        out["targets"] = evaluate_targets(bench, per_seed[0])
        if len(per_seed) > 1:
            summarize_seeds(bench, per_seed, out)
        results[key] = out
    return {
        "benchmark": "utility",
        "model": payloads[0]["model"],
        "combined": files,
        "datasets": results,
    }


def thread_probe(bench: Benchmark) -> dict[str, Any]:
    """Seconds per training epoch of ``bench``'s model with 1 torch thread vs torch's default.

    Uses random inputs of the benchmark's shape (one partner's worth of rows), so it needs no
    featurization. Small MLPs spend their time in per-step overhead that intra-op threading
    cannot split, and on a shared 2-core machine a second thread mostly waits for the core.
    """
    import torch

    from fedpharma.core.dataset import Dataset
    from fedpharma.models.trainer import TorchTrainer

    n_rows, n_features, n_tasks = 1600, 217, len(bench.label_columns)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (n_rows, n_tasks)).astype(np.float32)
    data = Dataset(
        features=rng.standard_normal((n_rows, n_features)).astype(np.float32),
        labels=labels,
        task=bench.task,  # type: ignore[arg-type]
        task_names=bench.label_columns,
        groups=np.zeros(n_rows, dtype=np.int64),
    )
    trainer = TorchTrainer(bench.model, bench.training, data.task, n_features, n_tasks)
    params = trainer.initial_parameters(0)
    default = torch.get_num_threads()
    out: dict[str, Any] = {"model": dataclasses.asdict(bench.model), "rows": n_rows}
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        trainer.fit(params, data, epochs=1, seed=0)  # warm-up
        best = min(trainer.fit(params, data, epochs=2, seed=0).seconds / 2 for _ in range(3))
        out[f"threads_{threads}_seconds_per_epoch"] = best
    torch.set_num_threads(default)
    out["default_threads"] = default
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR / "utility.json", help="JSON output path"
    )
    parser.add_argument(
        "--first-seed", type=int, default=0, help="run seeds FIRST..FIRST+N-1 (default 0)"
    )
    parser.add_argument(
        "--combine",
        nargs="+",
        metavar="JSON",
        help="print and judge the mean over the seeds of these --out files; runs nothing",
    )
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_ROUNDS} rounds")
    parser.add_argument(
        "--local-epochs",
        type=int,
        default=0,
        help="local epochs a round (every model kind gets rounds × local epochs epochs); "
        "default: the dataset's (1)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="federated rounds (local and centralized: rounds × local epochs epochs, selected "
        "alike); default: the dataset's (ESOL 40, Tox21 30)",
    )
    parser.add_argument(
        "--datasets",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--seeds", type=int, default=1, help="seeds 0..N-1 (targets judged on their mean)"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="test-set bootstrap resamples for seed 0's comparisons (0: skip)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for training (default 1: faster for these small MLPs, "
        "see the probe printed at the start); 0 = torch's default",
    )
    parser.add_argument("--no-thread-probe", action="store_true", help="skip the 1-vs-N probe")
    parser.add_argument(
        "--model",
        choices=("mlp", "dmpnn"),
        default="mlp",
        help="mlp: the descriptor MLP; dmpnn: chemprop's D-MPNN (needs fedpharma[chemprop])",
    )
    parser.add_argument(
        "--no-selection",
        action="store_true",
        help="no validation fold: every model trained for all its rounds / epochs (the old setup)",
    )
    args = parser.parse_args(argv)
    if args.combine:
        combined = combine(args.combine)
        print(f"results: {write_json(args.out, combined)}")
        return 0
    keys = [k.strip() for k in args.datasets.split(",") if k.strip()]
    unknown = [k for k in keys if k not in BENCHMARKS]
    if unknown or not keys or args.seeds < 1 or args.rounds < 0 or args.local_epochs < 0:
        parser.error(
            f"--datasets must name some of {', '.join(BENCHMARKS)}; --seeds ≥ 1, --rounds ≥ 0"
        )

    import torch

    wall_started = time.perf_counter()
    machine = machine_info()
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores "
        f"(usable {machine.get('usable_cores')}), load average {machine.get('load_average')}, "
        f"torch {machine.get('torch')}, RDKit {machine.get('rdkit')}",
        flush=True,
    )
    probe = None
    benchmarks = {k: with_model(b, args.model) for k, b in BENCHMARKS.items()}
    if args.local_epochs:
        benchmarks = {
            k: replace(b, training=replace(b.training, local_epochs=args.local_epochs))
            for k, b in benchmarks.items()
        }
    if not args.no_thread_probe and args.model == "mlp":
        probe = {k: thread_probe(benchmarks[k]) for k in keys}
        for key, p in probe.items():
            timings = ", ".join(
                f"{k.split('_')[1]} thread(s) {v * 1000:.0f} ms/epoch"
                for k, v in p.items()
                if k.startswith("threads_")
            )
            print(f"thread probe ({key} model, {p['rows']} rows): {timings}", flush=True)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"training with torch.set_num_threads({torch.get_num_threads()})", flush=True)

    results = {key: run_dataset(benchmarks[key], args) for key in keys}
    wall = time.perf_counter() - wall_started

    print("\n== targets" + (f" (mean over seeds 0..{args.seeds - 1})" if args.seeds > 1 else ""))
    for key, r in results.items():
        print(f"{BENCHMARKS[key].title}:")
        print_targets(r["targets"])
    n_pass = sum(t["passed"] for r in results.values() for t in r["targets"])
    n_all = sum(len(r["targets"]) for r in results.values())
    print(
        f"{n_pass}/{n_all} targets passed"
        + (" (--quick: not a real measurement)" if args.quick else "")
    )
    print(f"wall time {wall:.1f} s on {machine['cpu']}, {machine['cores']} cores")
    payload = {
        "benchmark": "utility",
        "model": args.model,
        "quick": args.quick,
        "n_sites": N_SITES,
        "partition": "scaffold",
        "federated_ratio_target": FEDERATED_RATIO,
        "model_selection": None
        if args.no_selection
        else {"validation_fraction": VALIDATION_FRACTION, "patience": 0},
        "machine": machine,
        "torch_threads": torch.get_num_threads(),
        "thread_probe": probe,
        "wall_seconds": wall,
        "datasets": results,
        "targets_passed": f"{n_pass}/{n_all}",
    }
    path = write_json(args.out, payload)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
