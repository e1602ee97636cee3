"""Pretrain a trunk on public molecules, for a DP run's warm start (``[model] init``).

DP practice fine-tunes privately from a model pretrained on public data (Abadi et al. 2016, §5.2;
Tramèr & Boneh 2021; De et al. 2022): only the fine-tuning touches private records, so only it is
charged to the sites' ledgers. The public data here is the bundled ChEMBL file
(``../shared/data/chembl_5thresh.csv.gz``, CC BY-SA 3.0): every molecule that also occurs in the
ESOL or Tox21 file — any partner's training *or* test molecule, matched by standardized canonical
SMILES — is removed first, so the pretraining set is disjoint from every benchmark partner. The
trunk learns the ChEMBL targets' pChEMBL values (standardized per target, masked multitask loss)
from the same 217 normalized RDKit descriptors the benchmarks use; its head is discarded.

Pretraining spends no privacy budget: it reads no partner record, and the weights depend on public
data only. The weights file (``.npz``, no pickle) and its SHA-256 go into the recipe::

    [model]
    init = "pretrained:benchmarks/results/public_trunk_512-128.npz"
    init_sha256 = "…"   # printed by this script

Run from the project root (featurization of ~23,000 molecules is cached after the first run)::

    .venv/bin/python benchmarks/pretrain_public.py --hidden 512,128
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import RESULTS_DIR, require_shared_file

from fedpharma.core.config import FeaturesConfig, ModelConfig, TrainingConfig
from fedpharma.core.dataset import Dataset
from fedpharma.data.molecules import canonical_smiles, featurize, parse_smiles
from fedpharma.models.pretrained import save_weights
from fedpharma.models.trainer import TorchTrainer

PUBLIC_FILE = "chembl_5thresh.csv.gz"
EXCLUDED_FILES = ("esol_delaney.csv.gz", "tox21.csv.gz")  # every benchmark partner's molecules
FEATURES = FeaturesConfig(fingerprint="none", descriptors=True)
MIN_LABELS_PER_TARGET = 20


def read_smiles_and_labels(path: Path) -> tuple[list[str], list[str], npt.NDArray[np.float32]]:
    """SMILES, label column names and the label matrix (NaN = missing) of a CSV(.gz)."""
    with gzip.open(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    smiles_at = header.index("smiles")
    names = [name for i, name in enumerate(header) if i != smiles_at]
    labels = np.full((len(rows), len(names)), np.nan, dtype=np.float32)
    for r, row in enumerate(rows):
        for j, cell in enumerate(c for i, c in enumerate(row) if i != smiles_at):
            if cell.strip():
                # Tox21/ESOL text columns (ids) fail: only their SMILES are used.
                with contextlib.suppress(ValueError):
                    labels[r, j] = float(cell)
    return [row[smiles_at] for row in rows], names, labels


def excluded_molecules() -> set[str]:
    """Standardized canonical SMILES of every molecule in the benchmark files."""
    excluded: set[str] = set()
    for name in EXCLUDED_FILES:
        smiles, _, _ = read_smiles_and_labels(require_shared_file(name))
        excluded |= {canonical_smiles(m) for m in parse_smiles(smiles).mols}
    return excluded


def public_dataset(cache: Path, max_molecules: int) -> Dataset:
    """ChEMBL minus the benchmark molecules, at most ``max_molecules`` of them (a seeded random
    sample), featurized (cached in ``cache``); targets with fewer than
    ``MIN_LABELS_PER_TARGET`` labels left dropped, the rest standardized."""
    if cache.exists():
        stored = np.load(cache, allow_pickle=False)
        features, labels = stored["features"], stored["labels"]
    else:
        smiles, _, labels = read_smiles_and_labels(require_shared_file(PUBLIC_FILE))
        parsed = parse_smiles(smiles)
        excluded = excluded_molecules()
        keep = [i for i, m in enumerate(parsed.mols) if canonical_smiles(m) not in excluded]
        removed = len(parsed.mols) - len(keep)
        if len(keep) > max_molecules:
            keep = sorted(np.random.default_rng(0).choice(keep, max_molecules, replace=False))
        print(
            f"ChEMBL: {len(parsed.mols)} valid molecules, {removed} also in "
            f"{' or '.join(EXCLUDED_FILES)} removed, {len(keep)} used; featurizing …",
            flush=True,
        )
        features = featurize([parsed.mols[i] for i in keep], FEATURES)
        labels = labels[parsed.rows[keep]]
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, features=features, labels=labels)
    labels = labels[:, np.sum(np.isfinite(labels), axis=0) >= MIN_LABELS_PER_TARGET]
    mean, std = np.nanmean(labels, axis=0), np.nanstd(labels, axis=0)
    labels = ((labels - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
    return Dataset(
        features=features,
        labels=labels,
        task="regression",
        task_names=tuple(f"target{j}" for j in range(labels.shape[1])),
        groups=np.arange(len(features), dtype=np.int64),
        name="chembl-public",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", default="512,128", help="trunk widths, as the benchmark's")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="default: results/public_trunk_<hidden>.npz")
    parser.add_argument(
        "--max-molecules", type=int, default=6000, help="featurization is ~25 ms per molecule"
    )
    parser.add_argument("--featurize-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    cache = RESULTS_DIR / f"chembl_public_descriptors_{args.max_molecules}.npz"
    data = public_dataset(cache, args.max_molecules)
    print(f"public set: {len(data)} molecules × {data.n_tasks} targets", flush=True)
    if args.featurize_only:
        return 0
    hidden = tuple(int(width) for width in args.hidden.split(","))
    trainer = TorchTrainer(
        ModelConfig(kind="mlp", hidden=hidden, dropout=args.dropout),
        TrainingConfig(batch_size=128, learning_rate=1e-3, weight_decay=1e-5),
        "regression",
        data.n_features,
        data.n_tasks,
    )
    params = trainer.initial_parameters(args.seed)
    for epoch in range(args.epochs):
        fit = trainer.fit(params, data, epochs=1, seed=args.seed * 1000 + epoch)
        params = fit.parameters
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            print(f"   epoch {epoch + 1}: train loss {fit.train_loss:.3f}", flush=True)
    trunk = {n: a for n, a in params.to_dict().items() if n.startswith("trunk.")}
    out = args.out or RESULTS_DIR / f"public_trunk_{'-'.join(map(str, hidden))}.npz"
    digest = save_weights(out, trunk)
    print(f"wrote {out} ({time.perf_counter() - started:.0f} s)")
    print(f'[model] init = "pretrained:{out}"')
    print(f'[model] init_sha256 = "{digest}"')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
