"""Train the demo's fraud model and write it as a plain weight file plus layer spec.

    python scripts/demo_model.py CREDITCARD.csv OUT_DIR

A scikit-learn ``MLPClassifier(32, 16)`` on V1..V28 and Amount of the real credit-card fraud
table (the first 150,000 rows by time, so the demo's later rows were never trained on). The
inputs are standardized for training; the scaling is then folded into the first layer
(``W' = W / sigma``, ``b' = b - (mu / sigma) @ W``), so the written model takes the raw columns.
Writes ``OUT_DIR/fraud-mlp.npz`` and ``OUT_DIR/fraud-mlp.json`` (what ``compress_model
--model OUT_DIR/fraud-mlp.npz`` imports), the training and held-out rows as
``OUT_DIR/fraud-train.parquet`` and ``OUT_DIR/fraud-heldout.parquet``, and prints one JSON line
with the training figures.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = [f"V{i}" for i in range(1, 29)] + ["Amount"]
TRAIN_ROWS = 150_000


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    from sklearn.metrics import average_precision_score
    from sklearn.neural_network import MLPClassifier

    csv, out = Path(argv[1]), Path(argv[2])
    df = pd.read_csv(csv)
    train, test = df.iloc[:TRAIN_ROWS], df.iloc[TRAIN_ROWS:]
    x = train[FEATURES].to_numpy(np.float64)
    mu, sigma = x.mean(axis=0), x.std(axis=0)
    sigma[sigma == 0] = 1.0
    t0 = time.perf_counter()
    est = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=15, random_state=0,
                        early_stopping=False).fit((x - mu) / sigma, train["Class"].to_numpy())
    seconds = time.perf_counter() - t0
    w0, b0 = est.coefs_[0], est.intercepts_[0]
    tensors = {"fc1.weight": (w0 / sigma[:, None]).astype(np.float32),
               "fc1.bias": (b0 - (mu / sigma) @ w0).astype(np.float32)}
    for i, (w, b) in enumerate(zip(est.coefs_[1:], est.intercepts_[1:]), start=2):
        tensors[f"fc{i}.weight"] = w.astype(np.float32)
        tensors[f"fc{i}.bias"] = b.astype(np.float32)
    n = len(est.coefs_)
    spec = {"task": "binary", "input_names": FEATURES, "layers": [
        {"weight": f"fc{i}.weight", "bias": f"fc{i}.bias",
         "activation": "sigmoid" if i == n else "relu"} for i in range(1, n + 1)]}
    out.mkdir(parents=True, exist_ok=True)
    train[FEATURES + ["Class"]].to_parquet(out / "fraud-train.parquet", index=False)
    test[FEATURES + ["Class"]].to_parquet(out / "fraud-heldout.parquet", index=False)
    np.savez(out / "fraud-mlp.npz", **tensors)
    (out / "fraud-mlp.json").write_text(json.dumps(spec, indent=1) + "\n")
    p = est.predict_proba((test[FEATURES].to_numpy(np.float64) - mu) / sigma)[:, 1]
    print(json.dumps({"model": str(out / "fraud-mlp.npz"), "train_rows": len(train),
                      "train_seconds": round(seconds, 1),
                      "later_rows_auc_pr": round(float(average_precision_score(
                          test["Class"], p)), 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
