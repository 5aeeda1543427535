"""Model-compression benchmark on real data: sizes and quality of compressed scikit-learn models.

    .venv/bin/python benchmarks/bench_models.py [--fmnist-rows 60000] [--fmnist-iter 15]
                                                [--ft-epochs 3] [--out docs/benchmarks_models.md]

(a) Fashion-MNIST (Debian ``dataset-fashion-mnist``, 60k train / 10k test, 784 pixels scaled to
[0, 1]): scikit-learn ``MLPClassifier((256, 128), relu)``; (b) credit-card fraud
(``creditcard.csv``, 284,807 rows, stratified 70/30 split, seed 0): ``LogisticRegression`` and
``MLPClassifier((64, 32))``. Each model is imported with ``import_sklearn``, compressed with a list
of plans, written with ``model_to_bytes``; the file's bytes, its ratio to the float32 weights
(weights + biases x 4 bytes) and to the uncompressed (float32) model file, and the quality of
``forward`` on the test rows are reported. Plans marked "+ finetune" go through
``prune_finetune_compress``: prune, retrain the kept weights on the whole training set
(``--ft-epochs`` epochs of Adam, masks fixed), then quantize. Everything is measured in one
run; the Markdown written to ``--out`` is also printed.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sklearn  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

from spark_compress.core.compress import (  # noqa: E402
    LayerPlan, Plan, bias_correction, compress, decompress,
)
from spark_compress.core.finetune import prune_finetune_compress  # noqa: E402
from spark_compress.core.model import Model, forward, predict  # noqa: E402
from spark_compress.datasets import ensure  # noqa: E402
from spark_compress.io.importers import import_sklearn  # noqa: E402
from spark_compress.io.model_file import model_to_bytes, size_report  # noqa: E402

CALIB_ROWS = 2000
FT_LR = 1e-3
FT_BATCH = 256


@dataclass(frozen=True)
class Case:
    """One compression to measure: ``plan`` applied to the model, then bias correction on
    ``CALIB_ROWS`` training rows if ``calibrate``; ``finetune``: prune, retrain the kept
    weights on the training rows, then quantize (:func:`prune_finetune_compress`)."""

    name: str
    plan: Plan
    calibrate: bool = False
    finetune: bool = False


def lp(prune: float = 0.0, quantize: str = "none", *, structured: bool = False,
       bits: int = 4) -> LayerPlan:
    return LayerPlan(prune=prune, structured=structured, quantize=quantize, kmeans_bits=bits)


def fmnist_cases(n_layers: int) -> list[Case]:
    last = n_layers - 1
    # Structured pruning cannot remove the output layer's neurons (they are the classes).
    structured = Plan(default=lp(0.5, "int8", structured=True), layers={last: lp(0.0, "int8")})
    return [
        Case("float32 (no compression)", Plan()),
        Case("int8", Plan(default=lp(quantize="int8"))),
        Case("int4", Plan(default=lp(quantize="int4"))),
        Case("prune 0.5 + int8", Plan(default=lp(0.5, "int8"))),
        Case("prune 0.7 + int8", Plan(default=lp(0.7, "int8"))),
        Case("prune 0.8 + int8", Plan(default=lp(0.8, "int8"))),
        Case("prune 0.9 + int8", Plan(default=lp(0.9, "int8"))),
        Case("prune 0.9 + kmeans 4 bits", Plan(default=lp(0.9, "kmeans", bits=4))),
        Case("prune 0.9 + int4", Plan(default=lp(0.9, "int4"))),
        Case("structured 0.5 + int8", structured),
        Case("prune 0.9 + int8 + bias corr.", Plan(default=lp(0.9, "int8")), calibrate=True),
        Case("int4 + bias corr. (extra)", Plan(default=lp(quantize="int4")), calibrate=True),
        Case("kmeans 2 bits + bias corr. (extra)", Plan(default=lp(quantize="kmeans", bits=2)),
             calibrate=True),
        Case("prune 0.5 + int8 + bias corr. (extra)", Plan(default=lp(0.5, "int8")),
             calibrate=True),
        # Low rank by energy on the hidden layers (the output layer is 128 x 10 already).
        Case("low rank energy 0.9 hidden + int8 (extra)",
             Plan(default=lp(quantize="int8"),
                  layers={i: LayerPlan(quantize="int8", energy=0.9) for i in range(last)})),
        # Not in the list: the same sparsity chosen against one global threshold.
        Case("global prune 0.9 + int8 (extra)", Plan(default=lp(0.9, "int8"), global_prune=True)),
        Case("global prune 0.9 + kmeans 4 (extra)",
             Plan(default=lp(0.9, "kmeans", bits=4), global_prune=True)),
        Case("kmeans 4 bits (extra)", Plan(default=lp(quantize="kmeans", bits=4))),
        Case("kmeans 3 bits (extra)", Plan(default=lp(quantize="kmeans", bits=3))),
        Case("kmeans 2 bits (extra)", Plan(default=lp(quantize="kmeans", bits=2))),
        Case("prune 0.9 hidden, output unpruned, int8 (extra)",
             Plan(default=lp(0.9, "int8"), layers={last: lp(0.0, "int8")})),
        Case("prune 0.9 hidden, output unpruned, kmeans 4 (extra)",
             Plan(default=lp(0.9, "kmeans", bits=4), layers={last: lp(0.0, "kmeans", bits=4)})),
        *finetune_cases((0.8, 0.9), ("int8", "kmeans", "int4")),
        *finetune_cases((0.85,), ("kmeans", "int4"), extra=True),
    ]


def finetune_cases(prunes: tuple[float, ...], modes: tuple[str, ...], *,
                   extra: bool = False) -> list[Case]:
    names = {"kmeans": "kmeans 4"}
    tail = " (extra)" if extra else ""
    return [Case(f"prune {p} + finetune + {names.get(m, m)}{tail}",
                 Plan(default=lp(p, m, bits=4)), finetune=True) for p in prunes for m in modes]


def fraud_cases() -> list[Case]:
    return [
        Case("float32 (no compression)", Plan()),
        Case("int8", Plan(default=lp(quantize="int8"))),
        Case("int4", Plan(default=lp(quantize="int4"))),
        Case("prune 0.5 + int8", Plan(default=lp(0.5, "int8"))),
        Case("prune 0.8 + int8", Plan(default=lp(0.8, "int8"))),
        Case("kmeans 4 bits", Plan(default=lp(quantize="kmeans", bits=4))),
        Case("prune 0.8 + kmeans 4", Plan(default=lp(0.8, "kmeans", bits=4))),
        *finetune_cases((0.5, 0.8), ("int8", "int4")),
        *finetune_cases((0.6, 0.7), ("int4",), extra=True),
        Case("kmeans 3 bits (extra)", Plan(default=lp(quantize="kmeans", bits=3))),
    ]


# --------------------------------------------------------------------------- data


def _idx(path: Path) -> np.ndarray:
    """An idx file (gzip) as a numpy array: magic (2 zero bytes, dtype 0x08 = uint8, ndim), then
    ndim big-endian uint32 dims, then the data."""
    raw = gzip.decompress(path.read_bytes())
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an idx file of unsigned bytes (magic {raw[:4]!r})")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fmnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = ensure("fashion-mnist")
    xs = [(_idx(d / f"{p}-images-idx3-ubyte.gz").reshape(-1, 784) / np.float32(255)).astype(
        np.float32) for p in ("train", "t10k")]
    ys = [_idx(d / f"{p}-labels-idx1-ubyte.gz").astype(np.int64) for p in ("train", "t10k")]
    return xs[0], ys[0], xs[1], ys[1]


def load_fraud() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Stratified 70/30 split (seed 0). V1..V28 as they are (PCA outputs, already centred),
    ``Amount`` as log1p then standardized, ``Time`` dropped; scaling fitted on train only."""
    df = pd.read_csv(ensure("creditcard"))
    cols = [f"V{i}" for i in range(1, 29)] + ["Amount"]
    x = df[cols].to_numpy(dtype=np.float64)
    x[:, -1] = np.log1p(x[:, -1])
    y = df["Class"].to_numpy(dtype=np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    mu, sd = xtr.mean(axis=0), xtr.std(axis=0)
    sd[sd == 0] = 1.0
    return ((xtr - mu) / sd).astype(np.float32), ytr, ((xte - mu) / sd).astype(np.float32), yte, \
        cols


# --------------------------------------------------------------------------- measure


def weight_bytes(model: Model) -> int:
    """float32 bytes of every weight and bias (what the issue's ratio is against)."""
    n = 0
    for layer in model.layers:
        n += int(np.size(layer.weight)) + (0 if layer.bias is None else int(np.size(layer.bias)))
    return 4 * n


def run_cases(model: Model, cases: list[Case], x_test: np.ndarray, x_calib: np.ndarray,
              score, train: tuple[np.ndarray, np.ndarray], ft_epochs: int) -> list[dict]:
    """Compress ``model`` with each case and measure; ``score(outputs) -> dict`` of metrics.
    ``train`` (features, labels) is what fine-tuning cases retrain on, for ``ft_epochs``.

    The first case must be the uncompressed float32 plan: its file is the "file ratio" base."""
    base_w = weight_bytes(model)
    ref_out = forward(model, x_test)
    ref_pred = predict(model, ref_out)
    rows, float_file = [], None
    for case in cases:
        t0 = time.perf_counter()
        if case.finetune:
            cm = prune_finetune_compress(model, case.plan, *train, epochs=ft_epochs,
                                         batch_size=FT_BATCH, lr=FT_LR)
        else:
            cm = compress(model, case.plan)
        if case.calibrate:
            cm = bias_correction(model, cm, x_calib)
        data = model_to_bytes(cm, plan=case.plan)
        secs = time.perf_counter() - t0
        rep = size_report(data)
        out = forward(decompress(cm), x_test)
        if float_file is None:
            float_file = len(data)
        rows.append({
            "plan": case.name, "bytes": len(data), "header": rep["header"],
            "ratio_w": base_w / len(data), "ratio_f": float_file / len(data),
            "ratio_p": base_w / (len(data) - rep["header"]),
            "agree": float(np.mean(predict(model, out) == ref_pred)), "secs": secs,
            **score(out),
        })
    return rows


def fmt_table(rows: list[dict], metrics: list[tuple[str, str, str]]) -> str:
    """``metrics``: (key, column title, format)."""
    head = ["plan", "file bytes", "header bytes", "x vs fp32 weights", "x vs fp32 file",
            "x payload only"]
    head += [t for _, t, _ in metrics] + ["top-1 agreement"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["plan"], f"{r['bytes']:,}", f"{r['header']:,}", f"{r['ratio_w']:.1f}",
                 f"{r['ratio_f']:.1f}", f"{r['ratio_p']:.1f}"]
        cells += [format(r[k], f) for k, _, f in metrics] + [f"{r['agree']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best(rows: list[dict], ratio: float, loss_key: str, max_loss: float) -> dict | None:
    """The smallest file among rows >= ``ratio`` x smaller than the float32 weights whose
    ``loss_key`` is <= ``max_loss``."""
    ok = [r for r in rows if r["ratio_w"] >= ratio and r[loss_key] <= max_loss]
    return min(ok, key=lambda r: r["bytes"]) if ok else None


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fmnist-rows", type=int, default=60000)
    ap.add_argument("--fmnist-iter", type=int, default=15)
    ap.add_argument("--fraud-iter", type=int, default=20)
    ap.add_argument("--ft-epochs", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks_models.md"))
    args = ap.parse_args(argv)
    command = "cd /work/main && .venv/bin/python benchmarks/bench_models.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    started = datetime.now(timezone.utc)
    md: list[str] = []

    # ---- Fashion-MNIST
    xtr, ytr, xte, yte = load_fmnist()
    if args.fmnist_rows < len(xtr):
        pick = np.random.default_rng(0).permutation(len(xtr))[: args.fmnist_rows]
        xtr, ytr = xtr[pick], ytr[pick]
    t0 = time.perf_counter()
    mlp = MLPClassifier(hidden_layer_sizes=(256, 128), activation="relu",
                        max_iter=args.fmnist_iter, early_stopping=False, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter is the budget on purpose
        mlp.fit(xtr, ytr)
    fm_train_s = time.perf_counter() - t0
    fm_model = import_sklearn(mlp)
    sk_acc = float(np.mean(mlp.predict(xte) == yte))
    base_acc = float(np.mean(predict(fm_model, forward(fm_model, xte)) == yte))

    def fm_score(out: np.ndarray) -> dict:
        acc = float(np.mean(np.argmax(out, axis=1) == yte))
        return {"acc": 100 * acc, "loss": 100 * (base_acc - acc)}

    calib = xtr[np.random.default_rng(1).permutation(len(xtr))[:CALIB_ROWS]]
    fm_rows = run_cases(fm_model, fmnist_cases(len(fm_model.layers)), xte, calib, fm_score,
                        (xtr, ytr), args.ft_epochs)
    fm_table = fmt_table(fm_rows, [("acc", "test acc %", ".2f"), ("loss", "acc loss (points)",
                                                                   "+.2f")])
    n_params = weight_bytes(fm_model) // 4
    fm_head = (f"Fashion-MNIST: MLPClassifier(256, 128, relu), {len(xtr):,} training rows, "
               f"{args.fmnist_iter} epochs (adam), trained in {fm_train_s:.0f} s; "
               f"{n_params:,} parameters = {4 * n_params:,} float32 bytes; test accuracy "
               f"{100 * base_acc:.2f} % (our forward) / {100 * sk_acc:.2f} % (sklearn predict), "
               f"10,000 test rows.")
    print(fm_head + "\n\n" + fm_table + "\n", flush=True)

    # ---- credit-card fraud
    ftr, gtr, fte, gte, cols = load_fraud()
    fraud_sections = []
    fraud_rows_all = {}
    fraud_wbytes = {}
    for label, est in (
        ("LogisticRegression", LogisticRegression(max_iter=1000)),
        ("MLPClassifier(64, 32)", MLPClassifier(hidden_layer_sizes=(64, 32), activation="relu",
                                                max_iter=args.fraud_iter, random_state=0)),
    ):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(ftr, gtr)
        train_s = time.perf_counter() - t0
        model = import_sklearn(est)
        p_ref = forward(model, fte)[:, -1]
        ap_ref = float(average_precision_score(gte, p_ref))

        def fr_score(out: np.ndarray, ap_ref: float = ap_ref) -> dict:
            p = out[:, -1]
            ap_ = float(average_precision_score(gte, p))
            return {"ap": ap_, "roc": float(roc_auc_score(gte, p)), "aploss": ap_ref - ap_}

        fcalib = ftr[np.random.default_rng(1).permutation(len(ftr))[:CALIB_ROWS]]
        rows = run_cases(model, fraud_cases(), fte, fcalib, fr_score, (ftr, gtr),
                         args.ft_epochs)
        fraud_rows_all[label] = rows
        fraud_wbytes[label] = weight_bytes(model)
        table = fmt_table(rows, [("ap", "AUC-PR", ".4f"), ("roc", "ROC AUC", ".4f"),
                                 ("aploss", "AUC-PR loss", "+.4f")])
        head = (f"Fraud, {label}: {weight_bytes(model) // 4:,} parameters = "
                f"{weight_bytes(model):,} float32 bytes, trained in {train_s:.1f} s; "
                f"sklearn AUC-PR {average_precision_score(gte, est.predict_proba(fte)[:, 1]):.4f}.")
        print(head + "\n\n" + table + "\n", flush=True)
        fraud_sections.append((head, table))

    # ---- targets
    t10 = best(fm_rows, 10, "loss", 0.5)
    t20 = best(fm_rows, 20, "loss", 1.0)
    tf = {k: best(v, 8, "aploss", 0.005) for k, v in fraud_rows_all.items()}
    tff = {k: [r for r in v if r["ratio_p"] >= 8 and r["aploss"] <= 0.005]
           for k, v in fraud_rows_all.items()}

    def verdict(r: dict | None, what: str) -> str:
        if r is None:
            return "**not met** by any plan above"
        return (f"**met** by \"{r['plan']}\" ({r['ratio_w']:.1f}x, {r['bytes']:,} bytes, "
                f"{what})")

    targets = [
        "- Fashion-MNIST >= 10x smaller with <= 0.5 point accuracy loss: "
        + verdict(t10, "" if t10 is None else f"loss {t10['loss']:+.2f} points"),
        "- Fashion-MNIST >= 20x smaller with <= 1 point accuracy loss: "
        + verdict(t20, "" if t20 is None else f"loss {t20['loss']:+.2f} points"),
    ]
    for k, r in tf.items():
        extra = "" if r is None else f"AUC-PR loss {r['aploss']:+.4f}"
        file_ok = ", ".join(x["plan"] for x in tff[k]) or "none"
        targets.append(f"- Fraud {k}, AUC-PR loss <= 0.005 at >= 8x (vs float32 weights): "
                       + verdict(r, extra) + "; plans at >= 8x counting the payload only "
                       f"(file minus header): {file_ok}")

    int8 = next(r for r in fm_rows if r["plan"] == "int8")
    top = max((r for r in fm_rows if r["loss"] <= 1.0), key=lambda r: r["ratio_w"])
    comparison = (
        f"Deep Compression (Han et al., 2016) reported 35x on AlexNet and 49x on VGG-16 with "
        f"pruning + k-means weight sharing + Huffman coding, on large convolutional nets whose "
        f"fully connected layers hold most weights and prune to 4-9 % density; int8 alone is "
        f"4x by construction. Here int8 alone gives {int8['ratio_w']:.1f}x on the "
        f"{n_params:,}-parameter Fashion-MNIST MLP (the file adds per-column scales, biases and "
        f"a JSON header); the largest ratio within 1 accuracy point is {top['ratio_w']:.1f}x "
        f"(\"{top['plan']}\", {top['loss']:+.2f} points); Deep Compression's prune -> retrain "
        f"-> quantize order is what the \"+ finetune\" rows do, with a few epochs of retraining "
        f"instead of full retraining schedules. Pruned files pay for the sparse indices "
        f"(delta-coded, zstd), so 90 % pruning gives well under 10x the int8 ratio. The fraud "
        f"logistic regression has 30 parameters: its file is almost all header, so its file "
        f"ratio is below 1 and only the weight-only ratio says anything about the weights."
    )

    by = {r["plan"]: r for r in fm_rows}
    p9, p9bc = by["prune 0.9 + int8"], by["prune 0.9 + int8 + bias corr."]
    mlp_rows = fraud_rows_all["MLPClassifier(64, 32)"]
    mlp_float = mlp_rows[0]
    ok_mlp = [r for r in mlp_rows if r["aploss"] <= 0.005]
    best_mlp = max(ok_mlp, key=lambda r: r["ratio_p"])
    p8 = [r for r in mlp_rows if r["plan"].startswith("prune 0.8") and "finetune" not in r["plan"]]
    mby = {r["plan"]: r for r in mlp_rows}
    ft_rows = [r for r in fm_rows if "finetune" in r["plan"]]
    findings = [
        f"- Magnitude pruning without fine-tuning costs accuracy fast on this MLP: "
        f"{by['prune 0.5 + int8']['loss']:+.2f} points at 50 %, "
        f"{by['prune 0.7 + int8']['loss']:+.2f} at 70 %, {p9['loss']:+.2f} at 90 % (per layer). "
        f"One global threshold does better at 90 % "
        f"({by['global prune 0.9 + int8 (extra)']['loss']:+.2f}) but is still far from usable.",
        f"- Fine-tuning the kept weights ({args.ft_epochs} epochs of Adam, lr {FT_LR:g}, batch "
        f"{FT_BATCH}, on the {len(xtr):,} training rows, masks fixed) before quantizing recovers "
        f"most of it: prune 0.8 + int8 {by['prune 0.8 + int8']['loss']:+.2f} -> "
        f"{by['prune 0.8 + finetune + int8']['loss']:+.2f} points, prune 0.9 + int8 "
        f"{p9['loss']:+.2f} -> {by['prune 0.9 + finetune + int8']['loss']:+.2f}, prune 0.9 + "
        f"kmeans 4 {by['prune 0.9 + kmeans 4 bits']['loss']:+.2f} -> "
        f"{by['prune 0.9 + finetune + kmeans 4']['loss']:+.2f}, prune 0.9 + int4 "
        f"{by['prune 0.9 + int4']['loss']:+.2f} -> {by['prune 0.9 + finetune + int4']['loss']:+.2f}"
        f" (each fine-tuning row took {min(r['secs'] for r in ft_rows):.1f}-"
        f"{max(r['secs'] for r in ft_rows):.1f} s including compression). Fraud MLP: prune 0.8 + "
        f"int8 {mby['prune 0.8 + int8']['aploss']:+.4f} -> "
        f"{mby['prune 0.8 + finetune + int8']['aploss']:+.4f} AUC-PR, prune 0.8 + int4 -> "
        f"{mby['prune 0.8 + finetune + int4']['aploss']:+.4f}.",
        f"- Bias correction on {CALIB_ROWS:,} training rows: int4 "
        f"{by['int4']['loss']:+.2f} -> {by['int4 + bias corr. (extra)']['loss']:+.2f} points, "
        f"kmeans 2 bits {by['kmeans 2 bits (extra)']['loss']:+.2f} -> "
        f"{by['kmeans 2 bits + bias corr. (extra)']['loss']:+.2f}, prune 0.5 + int8 "
        f"{by['prune 0.5 + int8']['loss']:+.2f} -> "
        f"{by['prune 0.5 + int8 + bias corr. (extra)']['loss']:+.2f}, prune 0.9 + int8 "
        f"{p9['loss']:+.2f} -> {p9bc['loss']:+.2f}. Matching each layer's mean pre-activation "
        f"(Nagel et al. 2019) targets the small, biased error of quantization; after heavy "
        f"pruning the change to each ReLU's input is large and not a shift, so matching its "
        f"mean moves many units across zero.",
        f"- Without fine-tuning, quantization alone is what keeps accuracy: int8 {by['int8']['ratio_w']:.1f}x at "
        f"{by['int8']['loss']:+.2f} points, int4 "
        f"{by['int4']['ratio_w']:.1f}x at {by['int4']['loss']:+.2f}, k-means 3 bits "
        f"{by['kmeans 3 bits (extra)']['ratio_w']:.1f}x at "
        f"{by['kmeans 3 bits (extra)']['loss']:+.2f} points.",
        f"- Fraud: the header (spec + plan JSON, {mlp_rows[1]['header']:,}-"
        f"{max(r['header'] for r in mlp_rows):,} bytes for the MLP) is larger than "
        f"{mlp_float['bytes'] - mlp_float['header']:,} / 8 bytes, so no plan can make the "
        f"{fraud_wbytes['MLPClassifier(64, 32)']:,}-byte MLP 8x smaller as a "
        f"file. Counting the payload only, the best plan within 0.005 AUC-PR is "
        f"\"{best_mlp['plan']}\" at {best_mlp['ratio_p']:.1f}x "
        f"({best_mlp['aploss']:+.4f}); pruning 80 % reaches "
        f"{min(r['ratio_p'] for r in p8):.1f}-{max(r['ratio_p'] for r in p8):.1f}x payload but "
        f"loses {min(r['aploss'] for r in p8):.2f}-{max(r['aploss'] for r in p8):.2f} AUC-PR "
        f"without fine-tuning.",
    ]

    machine = (f"{platform.machine()}, {os.cpu_count()} cores, "
               f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
               f"Python {platform.python_version()}, numpy {np.__version__}, "
               f"scikit-learn {sklearn.__version__}, pandas {pd.__version__}")
    md += [
        "# Model compression benchmarks (`benchmarks/bench_models.py`)", "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine}.  ",
        f"Run: {started:%Y-%m-%d %H:%M} UTC, one run; every ratio and loss below comes from it.",
        "",
        "Ratios: \"x vs fp32 weights\" = (weights + biases) x 4 bytes / file bytes; \"x vs fp32 "
        "file\" = bytes of the same model written uncompressed (plan with no compression) / file "
        "bytes; \"x payload only\" = float32 weight bytes / (file bytes - header bytes), the "
        "tensor data alone. File bytes are the whole `model_to_bytes` output (header JSON with "
        "the spec and plan, zstd-coded codes and indices, raw float32 scales/centroids/biases). "
        "Top-1 agreement: fraction of test rows whose predicted class equals the float model's "
        "(threshold 0.5 for the binary models). Unstructured pruning applies to every layer, "
        "the output layer included; rows marked \"+ finetune\" retrain the kept weights "
        f"({args.ft_epochs} epochs of Adam, lr {FT_LR:g}, batch {FT_BATCH}, on all training "
        "rows, pruning masks fixed) between pruning and quantization, the other rows have no "
        "fine-tuning. Bias correction uses "
        f"{CALIB_ROWS:,} random training rows.", "",
        "## Fashion-MNIST", "", fm_head, "", fm_table, "",
        "## Credit-card fraud", "",
        "Stratified 70/30 split (random_state 0): 199,364 training / 85,443 test rows. Features: "
        "V1..V28 and log1p(Amount), standardized on the training rows; Time dropped.", "",
    ]
    for head, table in fraud_sections:
        md += [head, "", table, ""]
    md += ["## Issue targets", "", *targets, "", "## Findings", "", *findings, "",
           "## Comparison", "", comparison, ""]
    text = "\n".join(md)
    print("\n".join(["## Issue targets", *targets, "", comparison]))
    Path(args.out).write_text(text)
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
