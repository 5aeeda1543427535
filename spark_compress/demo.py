"""Train the demo's fraud model and write it as a plain weight file plus layer spec.

    spark-compress demo-model CREDITCARD.csv OUT_DIR
    (in a checkout also: python scripts/demo_model.py CREDITCARD.csv OUT_DIR)

A scikit-learn ``MLPClassifier(32, 16)`` on V1..V28 and Amount of the real credit-card fraud
table (``spark-compress datasets --print creditcard``; the first 150,000 rows by time, so the
demo's later rows were never trained on). The inputs are standardized for training; the scaling
is then folded into the first layer (``W' = W / sigma``, ``b' = b - (mu / sigma) @ W``), so the
written model takes the raw columns. Writes ``OUT_DIR/fraud-mlp.npz`` and
``OUT_DIR/fraud-mlp.json`` (what ``spark-compress compress --model OUT_DIR/fraud-mlp.npz``
imports), the training and held-out rows as ``OUT_DIR/fraud-train.parquet`` and
``OUT_DIR/fraud-heldout.parquet``, and prints one JSON line with the training figures.
Needs scikit-learn (``pip install 'scikit-learn>=1.3'``). Exit codes: 0 written, 2 bad
arguments, a missing input file or scikit-learn absent.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

FEATURES = [f"V{i}" for i in range(1, 29)] + ["Amount"]
LABEL = "Class"
TRAIN_ROWS = 150_000


def train(csv: Path, out: Path) -> dict:
    """Train on ``csv``'s first :data:`TRAIN_ROWS` rows and write the files listed in the module
    docstring into ``out``; returns the training figures (model path, rows, seconds, the
    average precision on the later rows)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from sklearn.metrics import average_precision_score
    from sklearn.neural_network import MLPClassifier

    table = pacsv.read_csv(csv).select(FEATURES + [LABEL])
    train_t, test_t = table.slice(0, TRAIN_ROWS), table.slice(TRAIN_ROWS)

    def matrix(t):
        return np.column_stack([t.column(c).to_numpy().astype(np.float64) for c in FEATURES])

    x, y = matrix(train_t), train_t.column(LABEL).to_numpy()
    mu, sigma = x.mean(axis=0), x.std(axis=0)
    sigma[sigma == 0] = 1.0
    t0 = time.perf_counter()
    est = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=15, random_state=0,
                        early_stopping=False).fit((x - mu) / sigma, y)
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
    pq.write_table(train_t, out / "fraud-train.parquet")
    pq.write_table(test_t, out / "fraud-heldout.parquet")
    np.savez(out / "fraud-mlp.npz", **tensors)
    (out / "fraud-mlp.json").write_text(json.dumps(spec, indent=1) + "\n")
    p = est.predict_proba((matrix(test_t) - mu) / sigma)[:, 1]
    return {"model": str(out / "fraud-mlp.npz"), "train_rows": train_t.num_rows,
            "train_seconds": round(seconds, 1),
            "later_rows_auc_pr": round(float(average_precision_score(
                test_t.column(LABEL).to_numpy(), p)), 4)}


def main(argv: list[str], prog: str = "demo_model") -> int:
    """``prog CREDITCARD.csv OUT_DIR``: :func:`train`, then print its figures as one JSON
    line."""
    if len(argv) != 2 or argv[0].startswith("-"):
        print(f"usage: {prog} CREDITCARD.csv OUT_DIR\n\n{__doc__.strip()}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    csv, out = Path(argv[0]), Path(argv[1])
    if not csv.is_file():
        print(f"{prog}: error: {csv}: no such file (get it with `spark-compress datasets "
              f"--print creditcard`)", file=sys.stderr)
        return 2
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print(f"{prog}: error: scikit-learn is not installed: pip install "
              f"'scikit-learn>=1.3'", file=sys.stderr)
        return 2
    print(json.dumps(train(csv, out)))
    return 0
