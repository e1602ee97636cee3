"""Multi-pharma benchmark: does every partner gain from a federated trunk with private heads?

MELLODDY (Heyndrickx et al. 2023, J. Chem. Inf. Model.): ten pharma companies, each with its own
compound library and assays, trained one shared trunk with private task heads; every partner's
models improved, and the gains were reported as median task AUC-PR, ΔAUC-ROC and conformal
efficiency. This script sets up that situation on public data and measures the same things.
One benchmark (deal, train three model kinds, score, report) kept in one file.

**Data.** ``chembl_5thresh.csv.gz`` from ``../shared/data``: 23,871 molecules × 691 ChEMBL
targets, pChEMBL values. Fingerprints: 2,048-bit Morgan (radius 2).

**Deal (seeded).** Bemis–Murcko scaffold groups are dealt whole to 5 partners holding 35 / 25 /
20 / 12 / 8 % of the groups, so the partners' compound libraries are disjoint. A partner's tasks
are its own measurements on its own compounds: every target with ≥ ``--min-task-labels`` labels
at the partner is a private task (a target measured at two partners is two tasks).
Classification tasks: pChEMBL ≥ each of ``--thresholds`` (both classes needed); regression
tasks: pChEMBL. Each partner holds out its own scaffolds: test 20 %, validation 10 % (model
selection) and calibration 10 % (conformal prediction), the rest trains.

**Models, per partner** (MLP trunk ``--hidden``, same training hyper-parameters for all):
- single: the partner alone, trunk + its head;
- federated: FedAvg over the trunk through the real round loop (in-process channel, wire codec),
  each partner's head private (:class:`~fedpharma.models.private_head.PrivateHeadTrainer`);
- pooled: one network over every partner's tasks trained on all partners' training compounds —
  the ceiling pooling the data would give (no consortium can train it).
All three are selected by the same rule (:mod:`fedpharma.sim.selection`): checkpoints every round
(or ``local_epochs`` epochs), the best on validation ROC-AUC / RMSE — a partner's own fold for
single and federated (``--selection partner``: each partner its own round, trunk with the head
it trained that round; ``--selection pooled``: one round for all on the pooled validation
metric), every fold for pooled.

**Scores.** Per task with ≥ ``--min-test-labels`` test labels (for classification, ≥
``--min-per-class`` of each class): AUC-PR and AUC-ROC, or RMSE; and conformal efficiency
at error rate ``--error-rate`` from an inductive conformal predictor calibrated on the partner's own
calibration fold (:mod:`fedpharma.evaluation.conformal`; Mondrian for classification: share of
single-label sets; regression: interval width). Gains per task: relative ΔAUC-PR, ΔAUC-ROC,
relative ΔRMSE, Δefficiency, against single. Over ``--seeds``: means of the per-partner medians,
and a paired bootstrap over tasks (95 % interval of the median relative gain; ``--combine``
also gives intervals for the mean over seeds, each seed's tasks resampled). Where gains
concentrate: per partner size, and per task by training-label count.

Targets (PASS / FAIL; exit code 0 either way), on the mean over seeds: every partner's median
task AUC-PR improves over single; federated recovers ≥ half of the pooled ceiling's median gain.

Run from the project root::

    # the reported run (README, Benchmarks): one seed at a time, then the mean over seeds
    .venv/bin/python benchmarks/multipharma.py --seeds 1 --first-seed 0 --rounds 25 \\
        --kinds classification --hidden 512 --patience 5 \\
        --out benchmarks/results/multipharma_h512_seed0.json
    # … likewise seeds 1 and 2, then:
    .venv/bin/python benchmarks/multipharma.py \\
        --combine benchmarks/results/multipharma_h512_seed*.json
    .venv/bin/python benchmarks/multipharma.py --quick            # smoke run: 3 rounds
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import hashlib
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, machine_info, print_table, require_shared_file, write_json

from fedpharma.core.config import (
    EvaluationConfig,
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
from fedpharma.evaluation.bootstrap import percentile_interval
from fedpharma.evaluation.conformal import IntervalRegressor, MondrianClassifier, efficiency
from fedpharma.evaluation.metrics import PRIMARY_METRIC, compute_metrics, per_task_metrics
from fedpharma.evaluation.selection import BestCheckpoint
from fedpharma.models.factory import build_trainer
from fedpharma.models.output import calibrate_output_layer
from fedpharma.models.private_head import PrivateHeadTrainer
from fedpharma.server.plan import build_federation
from fedpharma.server.round import RoundRecord
from fedpharma.server.selection import BestRound
from fedpharma.sim.engine import Simulation, build_site_runtimes, concatenate, site_trainers
from fedpharma.sim.selection import HeadsOfBestRound, fit_reference
from fedpharma.transport.inprocess import InProcessChannel

DATA_FILE = "chembl_5thresh.csv.gz"
SHARES = (0.35, 0.25, 0.20, 0.12, 0.08)
FOLDS = {"test": 0.2, "validation": 0.1, "calibration": 0.1}  # of each partner's rows
MODELS = ("single", "federated", "pooled")
LABEL_BINS = ((0, 49), (50, 149), (150, 10**9))  # a task's training labels


@dataclasses.dataclass(frozen=True)
class Partner:
    """One partner's folds for one task kind (calibration kept apart from the site's data)."""

    site: SiteData
    calibration: Dataset
    train_labels: np.ndarray  # per task: labelled training compounds


class PartnerRounds:
    """Round observer: each partner's own choice of round and its test predictions per round.

    A partner picks the round whose trunk, with the head it trained that round, scores best on
    its *own* validation fold — the rule its single-partner model is selected by; nothing leaves
    the partner. ``curve[name][r]`` holds round r's test predictions, for the report only.
    """

    def __init__(
        self, partners: dict[str, Partner], trainers: dict[str, PrivateHeadTrainer]
    ) -> None:
        self.partners, self.trainers = partners, trainers
        metric, higher = PRIMARY_METRIC[next(iter(partners.values())).site.train.task]
        self.metric = metric
        self.rules = {n: BestCheckpoint[Any](higher) for n in partners}
        self.curve: dict[str, list[np.ndarray]] = {n: [] for n in partners}

    def on_round(self, record: RoundRecord) -> None:
        for name, p in self.partners.items():
            trainer, fold = self.trainers[name], p.site.validation
            assert fold is not None
            found = compute_metrics(
                fold.task, fold.dense_labels(), trainer.predict(record.parameters, fold)
            )
            self.rules[name].offer(
                record.round, found[self.metric], (record.parameters, trainer.head)
            )
            self.curve[name].append(trainer.predict(record.parameters, p.site.test))

    def predict(self, name: str, data: Dataset) -> np.ndarray:
        """Partner ``name``'s predictions from its chosen round's trunk and head."""
        best = self.rules[name].best
        assert best is not None
        trunk, head = best.model
        trainer = self.trainers[name]
        kept = trainer.head
        trainer.restore_head(head)
        try:
            return trainer.predict(trunk, data)
        finally:
            trainer.restore_head(kept)


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


def load_featurized(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fingerprints, scaffold groups and labels of the valid molecules; cached in RESULTS_DIR
    under the data file's SHA-256 (plain arrays, read without pickle)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    cache = RESULTS_DIR / f"multipharma_features_{digest}.npz"
    if cache.exists():
        stored = np.load(cache, allow_pickle=False)
        return stored["features"], stored["groups"], stored["labels"]
    smiles, _targets, labels = load_matrix(path)
    parsed = parse_smiles(smiles)
    features = featurize(parsed.mols, FeaturesConfig(radius=2, n_bits=2048))
    labels = labels[np.asarray(parsed.rows)]
    groups = scaffold_groups(parsed.mols)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, features=features, groups=groups, labels=labels)
    return features, groups, labels


def deal(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row's partner: scaffold groups dealt whole, partner k holding SHARES[k] of them."""
    unique = rng.permutation(np.unique(groups))
    bounds = np.round(np.cumsum(SHARES) * unique.size).astype(int)
    owner_of_group = np.searchsorted(bounds, np.arange(unique.size), side="right")
    lookup = dict(zip(unique.tolist(), owner_of_group.tolist(), strict=True))
    return np.array([lookup[g] for g in groups.tolist()])


def partner_tasks(
    labels: np.ndarray, kind: str, thresholds: tuple[float, ...], min_labels: int
) -> tuple[list[str], np.ndarray]:
    """A partner's own tasks from its compounds' pChEMBL columns: names (column index, and
    the threshold for classification) and the rows × tasks label matrix."""
    names, columns = [], []
    for target in np.flatnonzero(np.isfinite(labels).sum(axis=0) >= min_labels):
        values = labels[:, target]
        if kind == "regression":
            names.append(f"{target}")
            columns.append(values)
            continue
        for threshold in thresholds:
            active = np.where(np.isnan(values), np.nan, (values >= threshold).astype(np.float32))
            positives = np.nansum(active)
            if 3 <= positives <= np.isfinite(active).sum() - 3:
                names.append(f"{target}@{threshold}")
                columns.append(active)
    return names, np.stack(columns, axis=1) if columns else np.empty((len(labels), 0))


def build_partners(
    features: np.ndarray, groups: np.ndarray, labels: np.ndarray, kind: str, args: Any, seed: int
) -> dict[str, Partner]:
    """The seeded deal and each partner's own tasks and scaffold folds."""
    rng = np.random.default_rng([seed, 0x3A])
    owner = deal(groups, rng)
    partners = {}
    for k in range(len(SHARES)):
        rows = np.flatnonzero(owner == k)
        names, own = partner_tasks(labels[rows], kind, tuple(args.thresholds), args.min_task_labels)
        name = f"partner-{k + 1}"
        data = Dataset(
            features[rows], own.astype(np.float32), kind, tuple(names), groups[rows], name=name
        )
        folds, rest = {}, np.arange(len(rows))
        left = 1.0
        for fold, share in FOLDS.items():
            keep, held = scaffold_split(data.groups[rest], share / left, rng)
            folds[fold], rest, left = rest[held], rest[keep], left - share
        train = data.subset(rest)
        partners[name] = Partner(
            SiteData(train, data.subset(folds["test"]), data.subset(folds["validation"])),
            data.subset(folds["calibration"]),
            np.isfinite(train.dense_labels()).sum(axis=0),
        )
    return partners


def config(args: Any, seed: int) -> RunConfig:
    return RunConfig(
        features=FeaturesConfig(radius=2, n_bits=2048),
        partition=PartitionConfig(n_sites=len(SHARES)),
        model=ModelConfig(hidden=tuple(args.hidden), dropout=args.dropout, private_heads=True),
        training=TrainingConfig(
            local_epochs=args.local_epochs, batch_size=args.batch_size, learning_rate=args.lr
        ),
        strategy=StrategyConfig(name="fedavg"),
        evaluation=EvaluationConfig(
            validation_fraction=FOLDS["validation"], patience=args.patience
        ),
        rounds=args.rounds,
        seed=seed,
        privacy_audit=False,
    )


Outputs = dict[str, dict[str, dict[str, np.ndarray]]]
"""``outputs[partner][model][fold]``: predictions on the partner's test and calibration folds."""


def train_all(
    partners: dict[str, Partner], cfg: RunConfig, per_partner: bool
) -> tuple[Outputs, dict[str, Any]]:
    """The three model kinds, each selected on validation; their predictions per partner.
    ``per_partner``: each partner picks its federated round on its own fold (else one round
    for all, on the pooled validation metric)."""
    sites = {name: p.site for name, p in partners.items()}
    sim = Simulation(sites, next(iter(sites.values())).train, 0)
    shared = build_trainer(cfg, sim.dataset)
    initial = shared.initial_parameters(cfg.seed)
    outputs: Outputs = {name: {} for name in partners}
    chosen: dict[str, Any] = {}

    def keep(model: str, name: str, predict: Any) -> None:
        p = partners[name]
        outputs[name][model] = {"test": predict(p.site.test), "calibration": predict(p.calibration)}

    started = time.perf_counter()
    trainers = site_trainers(cfg, sim, shared)
    metric, higher = PRIMARY_METRIC[sim.dataset.task]
    selection = BestRound(metric, higher)  # every round is run: patience only for references
    heads = HeadsOfBestRound(selection, trainers)
    private = {n: t for n, t in trainers.items() if isinstance(t, PrivateHeadTrainer)}
    rounds = PartnerRounds(partners, private)
    with tempfile.TemporaryDirectory() as run_dir:
        channel = InProcessChannel(build_site_runtimes(cfg, sim, trainers, Path(run_dir)))
        federation = build_federation(
            cfg,
            planned_sites=len(sites),
            noise_rng=np.random.default_rng(cfg.seed),
            observers=[heads, rounds],
            selection=selection,
        )
        federation.run(channel, initial, cfg.rounds, run_id="multipharma")
    assert selection.chosen is not None
    chosen["federated_round"] = selection.chosen.step
    chosen["federated_partner_rounds"] = {
        n: rule.best.step for n, rule in rounds.rules.items() if rule.best is not None
    }
    chosen["curve"] = rounds.curve
    if per_partner:
        for name in partners:
            keep("federated", name, lambda d, n=name: rounds.predict(n, d))
    else:
        heads.restore()
        trunk = selection.chosen.model
        for name in partners:
            keep("federated", name, lambda d, n=name: trainers[n].predict(trunk, d))
    chosen["federated_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    singles = site_trainers(cfg, sim, shared)
    chosen["single_epochs"] = {}
    for name, p in partners.items():
        params, chosen["single_epochs"][name] = fit_reference(
            cfg, federation.strategy, singles[name], initial, p.site.train, {name: p.site},
            seed=cfg.seed, label=name,
        )  # fmt: skip
        keep("single", name, lambda d, n=name, w=params: singles[n].predict(w, d))
    chosen["single_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    widths = [p.site.train.n_tasks for p in partners.values()]
    offsets = dict(zip(partners, np.cumsum([0, *widths[:-1]]).tolist(), strict=True))
    total = sum(widths)

    def widen(data: Dataset, name: str) -> Dataset:
        labels = np.full((len(data), total), np.nan, np.float32)
        labels[:, offsets[name] : offsets[name] + data.n_tasks] = data.dense_labels()
        names = tuple(f"t{i}" for i in range(total))
        return dataclasses.replace(data, labels=labels, task_names=names)

    wide = {
        n: SiteData(*(widen(d, n) for d in (p.site.train, p.site.test, p.site.validation)))  # type: ignore[arg-type]
        for n, p in partners.items()
    }
    pooled_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, private_heads=False))
    pooled = concatenate([s.train for s in wide.values()], "pooled")
    network = build_trainer(pooled_cfg, pooled)
    start = network.initial_parameters(cfg.seed)
    with warnings.catch_warnings():  # a task labelled only outside training: NaN, kept as is
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(pooled.dense_labels(), axis=0).astype(np.float64)
        spread = np.nanstd(pooled.dense_labels(), axis=0).astype(np.float64)
    start = calibrate_output_layer(start, pooled.task, mean, spread)
    params, chosen["pooled_epochs"] = fit_reference(
        pooled_cfg, federation.strategy, network, start, pooled, wide, seed=cfg.seed, label="pooled"
    )
    for name in partners:
        columns = slice(offsets[name], offsets[name] + partners[name].site.train.n_tasks)
        keep(
            "pooled", name, lambda d, n=name, c=columns: network.predict(params, widen(d, n))[:, c]
        )
    chosen["pooled_seconds"] = time.perf_counter() - started
    return outputs, chosen


def scored_tasks(test: Dataset, args: Any) -> list[int]:
    """The test tasks scored: ≥ ``min_test_labels`` labels (classification: ≥ ``min_per_class``
    of each class)."""
    keep = []
    for t, y in enumerate(test.dense_labels().T):
        seen = np.isfinite(y)
        positives = y[seen].sum()
        if seen.sum() < args.min_test_labels or (
            test.task == "classification"
            and min(positives, seen.sum() - positives) < args.min_per_class
        ):
            continue
        keep.append(t)
    return keep


def round_curve(
    partners: dict[str, Partner], outputs: Outputs, curve: dict[str, list[np.ndarray]], args: Any
) -> list[float]:
    """Median relative gain over single (all scored tasks) of the federated model at each round."""
    key = "pr_auc" if next(iter(partners.values())).site.test.task == "classification" else "rmse"
    per_round: list[list[float]] = [[] for _ in next(iter(curve.values()))]
    for name, p in partners.items():
        test = p.site.test
        tasks = scored_tasks(test, args)
        single = per_task_metrics(test.task, test.dense_labels(), outputs[name]["single"]["test"])
        for r, predicted in enumerate(curve[name]):
            fed = per_task_metrics(test.task, test.dense_labels(), predicted)
            for t in tasks:
                a, b = single[t][key], fed[t][key]
                per_round[r].append((b - a) / a if key == "pr_auc" else (a - b) / a)
    return [float(np.median(g)) for g in per_round]


def score_tasks(partners: dict[str, Partner], outputs: Outputs, args: Any) -> list[dict[str, Any]]:
    """One row per scored task: its partner, training labels, and each model's metrics."""
    rows = []
    for name, p in partners.items():
        test, calibration = p.site.test, p.calibration
        kind = test.task
        per_model = {
            m: per_task_metrics(kind, test.dense_labels(), outputs[name][m]["test"]) for m in MODELS
        }
        for t in scored_tasks(test, args):
            seen = np.isfinite(test.dense_labels()[:, t])
            row: dict[str, Any] = {"partner": name, "train_labels": int(p.train_labels[t])}
            for m in MODELS:
                metrics = per_model[m][t]
                cal_y = calibration.dense_labels()[:, t]
                cal_p = outputs[name][m]["calibration"][:, t]
                predicted = outputs[name][m]["test"][seen, t]
                if kind == "classification":
                    cp = MondrianClassifier.calibrate(cal_y, cal_p)
                    eff = (
                        efficiency(cp.prediction_sets(predicted, args.error_rate))
                        if cp.calibrated
                        else np.nan
                    )
                    row[m] = {"pr_auc": metrics["pr_auc"], "roc_auc": metrics["roc_auc"]}
                else:
                    eff = 2 * IntervalRegressor.calibrate(cal_y, cal_p).half_width(args.error_rate)
                    row[m] = {"rmse": metrics["rmse"]}
                row[m]["conformal"] = eff if np.isfinite(eff) else None
            rows.append(row)
    return rows


def gain(row: dict[str, Any], model: str, kind: str) -> float:
    """Relative gain over single: ΔAUC-PR / AUC-PR, or −ΔRMSE / RMSE."""
    key = "pr_auc" if kind == "classification" else "rmse"
    single, other = row["single"][key], row[model][key]
    return (other - single) / single if kind == "classification" else (single - other) / single


def summarise(rows: list[dict[str, Any]], kind: str, rng: np.random.Generator) -> dict[str, Any]:
    """Per partner medians, overall median gains with a bootstrap over tasks, label-count bins."""
    key = "pr_auc" if kind == "classification" else "rmse"
    out: dict[str, Any] = {"tasks": len(rows), "partners": {}, "by_train_labels": {}}
    for name in sorted({r["partner"] for r in rows}):
        mine = [r for r in rows if r["partner"] == name]
        entry: dict[str, Any] = {"tasks": len(mine)}
        for m in MODELS:
            entry[f"median_{key}_{m}"] = float(np.median([r[m][key] for r in mine]))
            effs = [r[m]["conformal"] for r in mine if r[m]["conformal"] is not None]
            entry[f"median_conformal_{m}"] = float(np.median(effs)) if effs else None
            if kind == "classification":
                entry[f"median_roc_auc_{m}"] = float(np.median([r[m]["roc_auc"] for r in mine]))
        for m in ("federated", "pooled"):
            gains = np.array([gain(r, m, kind) for r in mine])
            entry[f"median_gain_{m}"] = float(np.median(gains))
            entry[f"tasks_improved_{m}"] = float(np.mean(gains > 0))
        out["partners"][name] = entry
    for m in ("federated", "pooled"):
        gains = np.array([gain(r, m, kind) for r in rows])
        picks = rng.integers(0, gains.size, size=(1000, gains.size))
        out[f"median_gain_{m}"] = float(np.median(gains))
        out[f"median_gain_{m}_95"] = percentile_interval(np.median(gains[picks], axis=1))
        out[f"tasks_improved_{m}"] = float(np.mean(gains > 0))
        if kind == "classification":
            delta = [r[m]["roc_auc"] - r["single"]["roc_auc"] for r in rows]
            out[f"median_delta_roc_auc_{m}"] = float(np.median(delta))
    for low, high in LABEL_BINS:
        binned = [r for r in rows if low <= r["train_labels"] <= high]
        if binned:
            out["by_train_labels"][f"{low}-{high if high < 10**9 else ''}"] = {
                "tasks": len(binned),
                **{f"median_gain_{m}": float(np.median([gain(r, m, kind) for r in binned]))
                   for m in ("federated", "pooled")},
            }  # fmt: skip
    return out


def mean_over_seeds(per_seed: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """Per partner, each median averaged over seeds; overall gains and label-count bins likewise."""
    key = "pr_auc" if kind == "classification" else "rmse"
    first = per_seed[0]["partners"]
    fields = [f"median_{key}_{m}" for m in MODELS] + [f"median_conformal_{m}" for m in MODELS]
    fields += ["median_gain_federated", "median_gain_pooled", "tasks"]
    fields += ["tasks_improved_federated", "tasks_improved_pooled"]
    if kind == "classification":
        fields += [f"median_roc_auc_{m}" for m in MODELS]

    def mean(values: list[Any]) -> float | None:
        defined = [v for v in values if v is not None]
        return float(np.mean(defined)) if defined else None

    partners = {
        n: {f: mean([s["partners"][n].get(f) for s in per_seed]) for f in fields} for n in first
    }
    for n, entry in partners.items():
        entry["train_compounds"] = mean([s.get("train_compounds", {}).get(n) for s in per_seed])
    overall_fields = ["median_gain_federated", "median_gain_pooled", "tasks"]
    overall_fields += ["tasks_improved_federated", "tasks_improved_pooled"]
    if kind == "classification":
        overall_fields += ["median_delta_roc_auc_federated", "median_delta_roc_auc_pooled"]
    overall = {f: mean([s.get(f) for s in per_seed]) for f in overall_fields}
    bins = {
        b: {f: mean([s["by_train_labels"].get(b, {}).get(f) for s in per_seed])
            for f in ("tasks", "median_gain_federated", "median_gain_pooled")}
        for b in per_seed[0]["by_train_labels"]
    }  # fmt: skip
    out = {"partners": partners, **overall, "by_train_labels": bins}
    if all("rows" in s for s in per_seed):
        out["bootstrap"] = bootstrap_over_seeds(per_seed, kind)
    return out


def bootstrap_over_seeds(
    per_seed: list[dict[str, Any]], kind: str, resamples: int = 1000
) -> dict[str, Any]:
    """95 % intervals of the mean-over-seeds figures the targets are judged on: each seed's
    tasks resampled with replacement (paired: the same draw for every model), the seed's median
    taken, the medians averaged over seeds. Per partner, its median task metric federated minus
    single; overall, the median gains and the share of the ceiling federated recovers."""
    key = "pr_auc" if kind == "classification" else "rmse"
    names = list(per_seed[0]["partners"])
    fed = np.zeros(resamples)
    pooled = np.zeros(resamples)
    partner_delta = {n: np.zeros(resamples) for n in names}
    for s in per_seed:
        rows = s["rows"]
        rng = np.random.default_rng([s["seed"], 0xB00C])
        gains = {m: np.array([gain(r, m, kind) for r in rows]) for m in ("federated", "pooled")}
        picks = rng.integers(0, len(rows), size=(resamples, len(rows)))
        fed += np.median(gains["federated"][picks], axis=1) / len(per_seed)
        pooled += np.median(gains["pooled"][picks], axis=1) / len(per_seed)
        for n in names:
            own = [r for r in rows if r["partner"] == n]
            single = np.array([r["single"][key] for r in own])
            federated = np.array([r["federated"][key] for r in own])
            draw = rng.integers(0, len(own), size=(resamples, len(own)))
            delta = np.median(federated[draw], axis=1) - np.median(single[draw], axis=1)
            partner_delta[n] += delta / len(per_seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        recovered = np.where(pooled > 0, fed / pooled, np.nan)
    return {
        "median_gain_federated_95": percentile_interval(fed),
        "median_gain_pooled_95": percentile_interval(pooled),
        "recovered_95": percentile_interval(recovered),
        "draws_without_ceiling_gain": int(np.sum(pooled <= 0)),
        "partner_delta_federated_single_95": {
            n: percentile_interval(d) for n, d in partner_delta.items()
        },
    }


def targets(mean: dict[str, Any], kind: str) -> list[tuple[str, bool, str]]:
    key = "pr_auc" if kind == "classification" else "rmse"
    better = (lambda a, b: a > b) if kind == "classification" else (lambda a, b: a < b)
    losers = [
        n
        for n, p in mean["partners"].items()
        if not better(p[f"median_{key}_federated"], p[f"median_{key}_single"])
    ]
    fed, ceiling = mean["median_gain_federated"], mean["median_gain_pooled"]
    recovered = fed / ceiling if ceiling and ceiling > 0 else None
    return [
        (
            f"every partner's median task {key} improves over single",
            not losers,
            f"{len(mean['partners']) - len(losers)}/{len(mean['partners'])}"
            + (f" (not: {', '.join(losers)})" if losers else ""),
        ),
        (
            "federated recovers ≥ half of the pooled ceiling's median gain",
            recovered is not None and recovered >= 0.5,
            f"{fed:+.2%} of {ceiling:+.2%}"
            + (f" = {recovered:.0%}" if recovered is not None else " (no ceiling gain)"),
        ),
    ]


def print_summary(summary: dict[str, Any], kind: str, sizes: dict[str, int], label: str) -> None:
    key = "pr_auc" if kind == "classification" else "rmse"
    print(f"\n{kind}, {label}: median per-task {key} and conformal efficiency", flush=True)
    rows = []
    for name, p in summary["partners"].items():
        rows.append(
            [
                name,
                sizes.get(name, ""),
                round(p["tasks"]),
                *(p[f"median_{key}_{m}"] for m in MODELS),
                f"{p['median_gain_federated']:+.2%}",
                f"{p['median_gain_pooled']:+.2%}",
                *(p[f"median_conformal_{m}"] for m in MODELS),
            ]
        )
    conformal = "efficiency" if kind == "classification" else "width"
    print_table(
        [
            "partner", "train cpds", "tasks", *(f"{key} {m}" for m in MODELS),
            "gain fed", "gain pooled", *(f"{conformal} {m}" for m in MODELS),
        ],
        rows,
    )  # fmt: skip


def report_seeds(per_seed: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """Print the mean over seeds and the target verdicts; return them with the seeds' results."""
    key = "pr_auc" if kind == "classification" else "rmse"
    mean = mean_over_seeds(per_seed, kind)
    verdicts = targets(mean, kind)
    seeds = ", ".join(str(s["seed"]) for s in per_seed)
    sizes = {n: round(p["train_compounds"]) for n, p in mean["partners"].items()
             if p.get("train_compounds") is not None}  # fmt: skip
    print_summary(mean, kind, sizes, f"mean over seeds {seeds}")
    for s in per_seed:
        lo, hi = s["median_gain_federated_95"]
        plo, phi = s["median_gain_pooled_95"]
        chosen = s.get("selection", {})
        print(
            f"  seed {s['seed']}: {s['tasks']} tasks, median gain federated "
            f"{s['median_gain_federated']:+.2%} (95 % {lo:+.2%} … {hi:+.2%}), pooled "
            f"{s['median_gain_pooled']:+.2%} (95 % {plo:+.2%} … {phi:+.2%}); federated rounds "
            f"{chosen.get('federated_partner_rounds')}",
            flush=True,
        )
    improved = mean["tasks_improved_federated"], mean["tasks_improved_pooled"]
    line = f"  mean: tasks improved federated {improved[0]:.0%}, pooled {improved[1]:.0%}"
    if kind == "classification":
        line += (
            f"; median ΔAUC-ROC federated {mean['median_delta_roc_auc_federated']:+.4f}, "
            f"pooled {mean['median_delta_roc_auc_pooled']:+.4f}"
        )
    print(line, flush=True)
    print(
        "  mean by training labels: "
        + "; ".join(f"{b}: {v['tasks']:.0f} tasks fed {v['median_gain_federated']:+.2%} "
                    f"pooled {v['median_gain_pooled']:+.2%}"
                    for b, v in mean["by_train_labels"].items()),
        flush=True,
    )  # fmt: skip
    boot = mean.get("bootstrap")
    if boot:
        (flo, fhi), (plo, phi) = boot["median_gain_federated_95"], boot["median_gain_pooled_95"]
        rlo, rhi = boot["recovered_95"]
        delta = {
            n: p[f"median_{key}_federated"] - p[f"median_{key}_single"]
            for n, p in mean["partners"].items()
        }
        print(
            f"  mean over seeds, bootstrap over tasks: median gain federated 95 % {flo:+.2%} … "
            f"{fhi:+.2%}, pooled {plo:+.2%} … {phi:+.2%}, recovered {rlo:.0%} … {rhi:.0%} "
            f"({boot['draws_without_ceiling_gain']} draws without a ceiling gain); median "
            f"{key} federated − single per partner: "
            + ", ".join(
                f"{n} {delta[n]:+.3f} ({lo:+.3f} … {hi:+.3f})"
                for n, (lo, hi) in boot["partner_delta_federated_single_95"].items()
            ),
            flush=True,
        )
    for text, ok, value in verdicts:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}: {value}", flush=True)
    return {
        "per_seed": per_seed,
        "mean_over_seeds": mean,
        "targets": [{"target": t, "passed": ok, "value": v} for t, ok, v in verdicts],
    }


RUN_ONLY = {"seeds", "first_seed", "out", "combine", "threads"}
"""Arguments that may differ between runs whose seeds ``--combine`` puts together."""


def combine(paths: list[Path]) -> int:
    """The mean-over-seeds table of earlier runs' seeds (same settings otherwise), no training."""
    runs = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    settings = [{k: v for k, v in r["args"].items() if k not in RUN_ONLY} for r in runs]
    if any(s != settings[0] for s in settings):
        sys.exit("--combine: the runs differ in more than their seeds; not combined")
    for kind in runs[0]["results"]:
        per_seed = [s for r in runs for s in r["results"][kind]["per_seed"]]
        report_seeds(sorted(per_seed, key=lambda s: s["seed"]), kind)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--combine", type=Path, nargs="+", help="print the mean over these runs' JSON seeds"
    )
    parser.add_argument("--kinds", nargs="+", default=["classification", "regression"])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[6.5])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512])
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--min-task-labels", type=int, default=20)
    parser.add_argument("--min-test-labels", type=int, default=5)
    parser.add_argument(
        "--min-per-class",
        type=int,
        default=5,
        help="classification: test actives and inactives a scored task needs (fewer: ties at "
        "AUC-PR 1 make the median gain 0)",
    )
    parser.add_argument(
        "--selection",
        choices=("partner", "pooled"),
        default="partner",
        help="federated: each partner picks its round on its own validation fold (as single "
        "does), or one round for all on the pooled validation metric",
    )
    parser.add_argument(
        "--patience", type=int, default=0, help="single and pooled: early stopping (0: never)"
    )
    parser.add_argument("--error-rate", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 rounds: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "multipharma.json")
    args = parser.parse_args(argv)
    if args.combine:
        return combine(args.combine)
    if args.quick:
        args.rounds = 3

    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    features, groups, labels = load_featurized(require_shared_file(DATA_FILE))
    print(f"{len(features)} molecules featurized in {time.perf_counter() - started:.0f} s")
    results: dict[str, Any] = {}
    for kind in args.kinds:
        per_seed = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            partners = build_partners(features, groups, labels, kind, args, seed)
            sizes = {n: len(p.site.train) for n, p in partners.items()}
            print(
                f"\n{kind}, seed {seed}: "
                + ", ".join(f"{n} {sizes[n]} cpds / {p.site.train.n_tasks} tasks"
                            for n, p in partners.items()),
                flush=True,
            )  # fmt: skip
            outputs, chosen = train_all(partners, config(args, seed), args.selection == "partner")
            chosen["gain_by_round"] = round_curve(partners, outputs, chosen.pop("curve"), args)
            rows = score_tasks(partners, outputs, args)
            summary = summarise(rows, kind, np.random.default_rng([seed, 0xB007]))
            summary |= {"seed": seed, "selection": chosen, "train_compounds": sizes, "rows": rows}
            print_summary(summary, kind, sizes, f"seed {seed}")
            lo, hi = summary["median_gain_federated_95"]
            plo, phi = summary["median_gain_pooled_95"]
            print(
                f"  {summary['tasks']} tasks: median gain federated "
                f"{summary['median_gain_federated']:+.2%} (95 % {lo:+.2%} … {hi:+.2%}), pooled "
                f"{summary['median_gain_pooled']:+.2%} (95 % {plo:+.2%} … {phi:+.2%}); by "
                "training labels: "
                + "; ".join(f"{b}: {v['tasks']} tasks fed {v['median_gain_federated']:+.2%} "
                            f"pooled {v['median_gain_pooled']:+.2%}"
                            for b, v in summary["by_train_labels"].items())
                + f"; selected: federated round {chosen['federated_round']} (pooled "
                f"validation), per partner {chosen['federated_partner_rounds']}, pooled "
                f"{chosen['pooled_epochs']} epochs, single {chosen['single_epochs']}",
                flush=True,
            )  # fmt: skip
            print(
                "  federated median gain by round: "
                + " ".join(f"{g:+.2%}" for g in chosen["gain_by_round"]),
                flush=True,
            )
            per_seed.append(summary)
        results[kind] = report_seeds(per_seed, kind)
    payload = {
        "benchmark": "multipharma",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "shares": SHARES,
        "folds": FOLDS,
        "results": results,
        "seconds": time.perf_counter() - started,
        "machine": machine_info(),
    }
    print(f"wall time {time.perf_counter() - started:.0f} s; wrote {write_json(args.out, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
