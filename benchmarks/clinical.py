"""Clinical tabular benchmark: hospitals of very different sizes, a systematic missing code.

scikit-learn's bundled breast-cancer (binary, ROC-AUC) and diabetes (regression, RMSE) sets are
written as CSV files with a ``hospital`` column and split into uneven hospitals: one holds half
the patients, one a tenth, one only ~5 % (the tiny site). At one hospital a lab value is
recorded as 0 for every patient (breast cancer: ``mean_area``; diabetes: ``s5``), which the
declared schema (written beside the CSV) lists as that column's missing-value code. The run uses
the default settings of ``fedpharma simulate`` (MLP, FedAvg, 20 rounds) with
``[partition] method = "natural"``: the data names its hospitals.

Compared on the same rows:

- reference: scikit-learn fitted on the pooled training rows of every hospital (logistic or ridge
  regression after pooled mean imputation with missingness indicators and standardization) —
  what a consortium that could pool its data would get;
- federated: fedpharma, which never pools a row; imputation and standardization are fitted from
  the hospitals' summed statistics.

Targets (printed PASS / FAIL; exit code 0 either way: a report):

1. federated ≥ 0.98 × reference on the pooled test rows (RMSE inverted: reference / federated);
2. no hospital's federated model worse than its local-only model beyond the 95 % paired
   bootstrap interval of the difference on that hospital's test rows (1,000 resamples).

Run from the project root::

    .venv/bin/python benchmarks/clinical.py            # both sets, ~3–6 min on 2 shared cores
    .venv/bin/python benchmarks/clinical.py --quick    # 3 rounds, a smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS_DIR, machine_info, print_table, write_json
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fedpharma.core.config import DatasetConfig, PartitionConfig, RunConfig
from fedpharma.data.schema import schema_beside, schema_toml
from fedpharma.data.tabular import infer_schema
from fedpharma.evaluation.bootstrap import paired_bootstrap, percentile_interval
from fedpharma.evaluation.metrics import PRIMARY_METRIC, compute_metrics
from fedpharma.report.html import verdict_sentence
from fedpharma.sim.engine import simulate
from fedpharma.sim.sites import prepare_sites

HOSPITALS = ("general", "university", "district", "cottage")
SHARES = (0.5, 0.3, 0.15, 0.05)  # cottage: the tiny site
ZERO_CODED_AT = "district"  # records one lab value as 0 for every patient


def write_hospital_csv(name: str, folder: Path, seed: int) -> tuple[Path, str, str]:
    """The dataset as ``folder/NAME.csv`` and its schema beside it; label column and task."""
    loader = load_breast_cancer if name == "breast-cancer" else load_diabetes
    bunch = loader()
    x = np.asarray(bunch.data, dtype=np.float64)
    if name == "breast-cancer":
        y, label, task, zero_coded = (
            (bunch.target == 0).astype(int),
            "malignant",
            "classification",
            3,
        )
    else:
        y, label, task, zero_coded = np.asarray(bunch.target), "progression", "regression", 8
    columns = [str(n).replace(" ", "_") for n in bunch.feature_names]
    rng = np.random.default_rng(seed)
    hospital = rng.choice(len(HOSPITALS), size=len(y), p=SHARES)
    lines = [",".join(["record", *columns, "hospital", label])]
    for i in range(len(y)):
        cells = [f"{v:.6g}" for v in x[i]]
        if HOSPITALS[hospital[i]] == ZERO_CODED_AT:
            cells[zero_coded] = "0"
        lines.append(",".join([str(i), *cells, HOSPITALS[hospital[i]], f"{y[i]:.6g}"]))
    path = folder / f"{name}.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    inferred = infer_schema(path, [label], "hospital")
    declared = [
        c
        if c.name != columns[zero_coded]
        else type(c)(c.name, "float", missing=("0",), impute="mean")
        for c in inferred.columns
        if c.name != "record"
    ]
    schema = type(inferred)(tuple(declared), (label,), "hospital", ("record",))
    schema_beside(path).write_text(schema_toml(schema), encoding="utf-8")
    return path, label, task


def reference_predictions(sim: Any, task: str) -> dict[str, np.ndarray]:
    """scikit-learn on the pooled raw training rows; predictions on each hospital's test rows."""
    train_x = np.concatenate([d.train.features for d in sim.sites.values()])
    train_y = np.concatenate([d.train.dense_labels()[:, 0] for d in sim.sites.values()])
    model = LogisticRegression(max_iter=5000) if task == "classification" else Ridge(alpha=1.0)
    pipeline = make_pipeline(
        SimpleImputer(strategy="mean", add_indicator=True), StandardScaler(), model
    )
    pipeline.fit(train_x, train_y)

    def predict(x: np.ndarray) -> np.ndarray:
        if task == "classification":
            return np.asarray(pipeline.predict_proba(x)[:, 1:2])
        return np.asarray(pipeline.predict(x))[:, None]

    return {site: predict(d.test.features) for site, d in sim.sites.items()}


def run(name: str, rounds: int, seed: int, resamples: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"clinical-{name}-"))
    path, label, task = write_hospital_csv(name, folder, seed)
    config = RunConfig(
        dataset=DatasetConfig(path=str(path), kind="tabular", label_columns=(label,), task=task),
        partition=PartitionConfig(method="natural"),
        rounds=rounds,
        seed=seed,
        privacy_audit=False,
    )
    metric, higher = PRIMARY_METRIC["classification" if task == "classification" else "regression"]
    sim = prepare_sites(config)
    reference = reference_predictions(sim, task)
    started = time.perf_counter()
    result = simulate(config, folder / "run", prepared=sim)
    seconds = time.perf_counter() - started
    sites = list(result.predictions["federated"])  # the hospitals the data checks admitted
    labels = np.concatenate([sim.sites[s].test.dense_labels() for s in sites])

    def pooled(predictions: dict[str, np.ndarray]) -> float:
        stacked = np.concatenate([predictions[s] for s in sites])
        return float(compute_metrics(task, labels, stacked)[metric])  # type: ignore[arg-type]

    federated, ref = pooled(result.predictions["federated"]), pooled(reference)
    ratio = federated / ref if higher else ref / federated
    rng = np.random.default_rng([seed, 0xB007])
    per_site = []
    for site in sites:
        data = sim.sites[site]
        scores = paired_bootstrap(
            task,  # type: ignore[arg-type]
            data.test.dense_labels(),
            {m: result.predictions[m][site] for m in ("federated", "local")},
            metric,
            rng,
            resamples,
        )
        gain = (
            scores["federated"] - scores["local"]
            if higher
            else scores["local"] - scores["federated"]
        )
        low, high = percentile_interval(gain)
        point = result.summary.sites[site]
        per_site.append(
            {
                "site": site,
                "n_train": len(data.train),
                "n_test": len(data.test),
                "local": point.local,
                "federated": point.federated,
                "gain_interval": [low, high],
                # worse beyond the interval: the whole interval of the gain lies below zero
                "worse_beyond_interval": bool(np.isfinite(high) and high < 0),
            }
        )
    return {
        "dataset": name,
        "task": task,
        "metric": metric,
        "higher_is_better": higher,
        "rounds": rounds,
        "federated_pooled": federated,
        "reference_pooled": ref,
        "ratio": ratio,
        "target_ratio": 0.98,
        "ratio_pass": ratio >= 0.98,
        "sites": per_site,
        "sites_pass": not any(s["worse_beyond_interval"] for s in per_site),
        "federated_seconds": seconds,
        # the run report's headline words, following its bootstrap intervals
        "verdict": verdict_sentence(result.summary),
    }


def report(outcome: dict[str, Any]) -> None:
    print(f"\n{outcome['dataset']} · {outcome['metric']} · {outcome['rounds']} rounds", flush=True)
    print_table(
        ["hospital", "train", "test", "local", "federated", "gain 95% interval"],
        [
            [
                s["site"],
                s["n_train"],
                s["n_test"],
                s["local"],
                s["federated"],
                "[{:.3f}, {:.3f}]".format(*s["gain_interval"]),
            ]
            for s in outcome["sites"]
        ],
    )
    verdict = "PASS" if outcome["ratio_pass"] else "FAIL"
    print(
        f"all hospitals' test rows together: federated {outcome['federated_pooled']:.3f}, "
        f"scikit-learn on the pooled training rows {outcome['reference_pooled']:.3f}, ratio "
        f"{outcome['ratio']:.3f} (target ≥ 0.98) {verdict}"
    )
    print(f"report's verdict: {outcome['verdict']}")
    verdict = "PASS" if outcome["sites_pass"] else "FAIL"
    print(f"no hospital worse than alone beyond its bootstrap interval: {verdict}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["breast-cancer", "diabetes"])
    parser.add_argument("--rounds", type=int, default=RunConfig().rounds)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="3 rounds, 200 resamples")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "clinical.json")
    args = parser.parse_args(argv)
    rounds, resamples = (3, 200) if args.quick else (args.rounds, args.resamples)
    outcomes = []
    for name in args.datasets:
        outcome = run(name, rounds, args.seed, resamples)
        report(outcome)
        outcomes.append(outcome)
    path = write_json(args.out, {"machine": machine_info(), "results": outcomes})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
