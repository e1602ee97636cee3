"""The public Python API in one script: simulate, predict, export, load, predict again.

python examples/python_api.py [OUT_DIR]     # about 15 s on 2 cores; writes OUT_DIR (default
                                            # runs/python-api): the run and the model bundle
"""

import sys
from pathlib import Path

import fedpharma

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/python-api")

# 1. A federated run: 4 partners owning different scaffolds of ChEMBL2321810 (ships with RDKit).
result = fedpharma.simulate(
    {
        "rounds": 5,
        "baselines": False,
        "privacy_audit": False,
        "dataset": {"name": "chembl2321810"},
        "model": {"hidden": [128]},
    },
    out=out / "run",
)
print(f"pooled test {result.summary.metric.name}: {result.summary.pooled.federated:.3f}")

# 2. Predict new molecules in memory (SMILES; a CSV/SDF path or a data frame work too).
new = ["COc1ccc2[nH]cc(CCN)c2c1", "CC(=O)Nc1ccc(O)cc1", "not a molecule"]
predictions = result.predict(new)
for row, value in enumerate(predictions.values[:, 0], start=1):
    print(
        f"row {row}: pIC50 {value:.2f}"
        if row not in predictions.invalid
        else f"row {row}: no prediction ({predictions.invalid[row]})"
    )

# 3. Export the model as a bundle, load it back (its preprocessing is checked), predict again.
bundle = result.export(out / "model")
model = fedpharma.load_model(bundle)
again = model.predict(new)
assert (again.values[:2] == predictions.values[:2]).all()
print(f"model bundle: {bundle} (run {model.manifest.provenance.run_id}); same predictions")
