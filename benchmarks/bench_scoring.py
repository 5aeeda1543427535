"""Scoring benchmark: our scorer against MLlib ``transform`` and ``predict_batch_udf``, one run.

    .venv/bin/python benchmarks/bench_scoring.py [--rows 2000000] [--reps 3] \
        [--out docs/benchmarks_scoring.md]

Models are trained by Spark MLlib (so MLlib scores exactly the weights we score: our models are
imported from the saved MLlib directories), then compressed:

* synthetic ``rows x 32`` float32 features (the issue's shape; generated once, cached under
  ``bench-out/``) with a label from a fixed random rule: ``LogisticRegression`` and
  ``MultilayerPerceptronClassifier`` [32, 64, 32, 2], trained on 200,000 of the rows;
* the real credit-card fraud table (284,807 rows, V1..V28 + Amount): LR and MLP [29, 32, 16, 2];
* the real Fashion-MNIST (70,000 images, one ``array<float>`` column of 784 pixels): multinomial
  LR and MLP [784, 64, 10], trained on the first 20,000 training images.

Timed, each as the median of ``--reps`` runs to the ``noop`` sink, every method writing the
prediction and the class probabilities: a plain scan; MLlib ``VectorAssembler`` (or
``array_to_vector``) + ``transform``; ``predict_batch_udf`` over one array column with a numpy
float32 forward pass of the same float model; our scorer with the compressed model file and with
the uncompressed (float32) model file; on the synthetic data also our scorer on 8-bit minmax codes
(folded dequantization) against the same scorer on the floats. Also: broadcast bytes, accuracy
of each model against the labels, the agreement of our predictions with MLlib's, the peak
resident memory of a Python worker, and a sparse-kernel (scipy CSR) against dense matmul check.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from pyspark.ml.classification import (  # noqa: E402
    LogisticRegression,
    LogisticRegressionModel,
    MultilayerPerceptronClassificationModel,
    MultilayerPerceptronClassifier,
)
from pyspark.ml.feature import VectorAssembler  # noqa: E402
from pyspark.ml.functions import array_to_vector, predict_batch_udf  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql import types as T  # noqa: E402

# The same session settings (local[2], 100,000-row Arrow batches, zstd) and timing helpers.
from bench_features import noop, session, timed  # noqa: E402

from spark_compress.core import compress as C  # noqa: E402
from spark_compress.core.finetune import prune_finetune_compress  # noqa: E402
from spark_compress.core.model import forward, predict  # noqa: E402
from spark_compress.io.codebook import write_codebook  # noqa: E402
from spark_compress.io.importers import import_model  # noqa: E402
from spark_compress.io.model_file import model_to_bytes  # noqa: E402
from spark_compress.spark.ml import FeatureQuantizer  # noqa: E402
from spark_compress.spark.score import model_file_from_bytes, score_with_details  # noqa: E402

OUT = ROOT / "bench-out" / "scoring"


# --------------------------------------------------------------------------- data


def synthetic(spark, path: Path, rows: int) -> None:
    if (path / "_SUCCESS").exists():
        return
    rng = np.random.default_rng(42)
    w = rng.normal(size=32)
    cols = [F.randn(seed=j).cast("float").alias(f"f{j}") for j in range(32)]
    df = spark.range(rows, numPartitions=8).select(*cols)
    z = sum(F.col(f"f{j}") * float(w[j]) for j in range(32))
    # A non-linear rule, so the MLP has something to learn beyond the LR.
    z = z + 2.0 * F.col("f0") * F.col("f1") - 1.5 * F.abs(F.col("f2"))
    (df.withColumn("label", (z > 0).cast("double")).write.mode("overwrite")
     .option("parquet.enable.dictionary", "false").parquet(str(path)))


def fraud(spark, path: Path) -> list[str]:
    from bench_models import load_fraud

    xtr, ytr, xte, yte, names = load_fraud()
    if not (path / "_SUCCESS").exists():
        x = np.concatenate([xtr, xte]).astype(np.float32)
        y = np.concatenate([ytr, yte]).astype(np.float64)
        table = pa.table({**{n: x[:, j] for j, n in enumerate(names)}, "label": y})
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path / "part-0.parquet", compression="zstd", use_dictionary=False)
        (path / "_SUCCESS").touch()
    return names


def fmnist_train(n: int) -> tuple:
    """The first ``n`` Fashion-MNIST training images and labels (the rows MLlib trains on)."""
    from bench_models import load_fmnist

    xtr, ytr, _, _ = load_fmnist()
    return xtr[:n], ytr[:n]


def fmnist(spark, path: Path) -> None:
    from bench_models import load_fmnist

    if (path / "_SUCCESS").exists():
        return
    xtr, ytr, xte, yte = load_fmnist()
    path.mkdir(parents=True, exist_ok=True)
    for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        pixels = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 784).cast(
            pa.list_(pa.float32()))
        pq.write_table(pa.table({"pixels": pixels, "label": y.astype(np.float64)}),
                       path / f"{name}.parquet", compression="zstd", use_dictionary=False)
    (path / "_SUCCESS").touch()


# --------------------------------------------------------------------------- models


def mllib_models(spark, train, features, mlp_layers, out: Path, *, array_col=False,
                 lr_iter=30, mlp_iter=50):
    """Train MLlib LR and MLP, save them, import them: (mllib_lr, mllib_mlp, our_lr, our_mlp).
    Models saved by an earlier run with the same layers are loaded instead of trained again."""
    saved = out / f"layers-{'-'.join(map(str, mlp_layers))}"
    if (out / "lr" / "metadata").is_dir() and (out / "mlp" / "metadata").is_dir() and \
            saved.exists():
        return (LogisticRegressionModel.load(str(out / "lr")),
                MultilayerPerceptronClassificationModel.load(str(out / "mlp")),
                import_model(out / "lr"), import_model(out / "mlp"))
    if array_col:
        data = train.select(array_to_vector(features).alias("features"), "label")
    else:
        data = VectorAssembler(inputCols=list(features), outputCol="features").transform(train)
    data = data.cache()
    lr = LogisticRegression(maxIter=lr_iter, regParam=1e-4).fit(data)
    mlp = MultilayerPerceptronClassifier(layers=mlp_layers, maxIter=mlp_iter, seed=1,
                                         blockSize=256).fit(data)
    data.unpersist()
    ours = []
    for name, m in (("lr", lr), ("mlp", mlp)):
        d = out / name
        m.write().overwrite().save(str(d))
        ours.append(import_model(d))
    saved.touch()
    return lr, mlp, ours[0], ours[1]


def compressed(model, plan: C.Plan, names, finetune=None) -> tuple[bytes, bytes]:
    """(compressed file, uncompressed float32 file) of ``model`` with input names; with
    ``finetune`` = (x, y), pruned, fine-tuned on those rows, then quantized."""
    import dataclasses

    if names is not None:
        model = dataclasses.replace(model, input_names=tuple(names))
    cm = (C.compress(model, plan) if finetune is None else
          prune_finetune_compress(model, plan, *finetune, epochs=3, seed=0))
    return model_to_bytes(cm, plan=plan), model_to_bytes(C.compress(model, C.Plan()))


# --------------------------------------------------------------------------- one dataset


def bench_models(spark, name, df, features, pairs, reps, *, array_col=False, codes=None):
    """Time every method for each (label, mllib_model, our_model, plan) in ``pairs``."""
    results = []
    feats = [features] if array_col else list(features)
    rows = df.count()
    scan, scan_runs = timed(lambda: noop(df.select(*feats)), reps)
    vec = (df.select(array_to_vector(features).alias("features")) if array_col else
           VectorAssembler(inputCols=feats, outputCol="features").transform(df.select(*feats)))
    arr = df.select(features if array_col else F.array(*feats).alias("x"))
    arr_col = features if array_col else "x"
    n_features = 784 if array_col else len(feats)
    labelled = df.select(*feats, "label").toPandas() if rows <= 300_000 else None
    for label, mllib_model, our_model, plan, *ft in pairs:
        comp, flat = compressed(our_model, plan, None if array_col else feats, *ft)
        mf_c, mf_f = model_file_from_bytes(comp), model_file_from_bytes(flat)
        r = {"dataset": name, "model": label, "rows": rows, "scan": scan, "scan_runs": scan_runs,
             "file_bytes": len(comp), "float_file_bytes": len(flat),
             "plan": C_plan_name(plan, bool(ft))}
        t, runs = timed(lambda: noop(mllib_model.transform(vec).select(
            "prediction", "probability")), reps)
        r["mllib"], r["mllib_runs"] = t, runs
        float_model = mf_f.model

        def make_predict_fn(m=float_model):
            def predict_fn(x):
                return forward(m, x.astype(np.float32))
            return predict_fn

        k = float_model.n_outputs
        pbu = predict_batch_udf(make_predict_fn, return_type=T.ArrayType(T.FloatType()),
                                batch_size=8192, input_tensor_shapes=[[n_features]])
        t, runs = timed(lambda: noop(arr.select(pbu(arr_col).alias("probability"))), reps)
        r["predict_batch_udf"], r["predict_batch_udf_runs"] = t, runs
        fkw = {"features": features} if array_col else {}
        for key, mf in (("ours", mf_c), ("ours_float", mf_f)):
            sf = score_with_details(df.select(*feats), mf, **fkw)
            t, runs = timed(lambda: noop(sf.df.select(*sf.output_cols)), reps)
            r[key], r[f"{key}_runs"], r[f"{key}_method"] = t, runs, sf.method
            r[f"{key}_broadcast_bytes"] = sf.broadcast_bytes
            if sf.peak_worker_rss is not None:
                r[f"{key}_peak_worker_rss"] = sf.peak_worker_rss.value
        if codes is not None:
            cdf, cb = codes
            sf = score_with_details(cdf, mf_c, codebook=cb)
            t, runs = timed(lambda: noop(sf.df.select(*sf.output_cols)), reps)
            r["ours_codes"], r["ours_codes_runs"], r["ours_codes_method"] = t, runs, sf.method
        if labelled is not None:
            x = (np.stack(labelled[features].to_numpy()) if array_col
                 else labelled[feats].to_numpy())
            y = labelled["label"].to_numpy().astype(np.int64)
            pf = predict(float_model, forward(float_model, x))
            pc_ = predict(mf_c.model, forward(mf_c.model, x))
            r["acc_float"], r["acc_compressed"] = float((pf == y).mean()), float((pc_ == y).mean())
            ml = np.array(mllib_model.transform(vec).select("prediction").toPandas()
                          ["prediction"], dtype=np.int64)
            r["agree_mllib"] = float((ml == pf).mean())
        results.append(r)
        print(r, flush=True)
    return results


def C_plan_name(plan: C.Plan, finetune: bool = False) -> str:
    lp = plan.default
    parts = []
    if lp.prune:
        parts.append(f"prune {lp.prune}")
    if finetune:
        parts.append("finetune")
    if lp.quantize != "none":
        parts.append(lp.quantize if lp.quantize != "kmeans" else f"kmeans {lp.kmeans_bits}")
    return " + ".join(parts) or "float32"


def sparse_kernel_check() -> list[dict]:
    """Dense numpy matmul against scipy CSR for pruned layers of the benchmark's shapes."""
    try:
        import scipy.sparse as sp
    except ImportError:
        return []
    rng = np.random.default_rng(0)
    out = []
    for shape in ((784, 128), (32, 64)):
        x = rng.normal(size=(8192, shape[0])).astype(np.float32)
        for density in (0.5, 0.2, 0.1, 0.05):
            w = (rng.normal(size=shape) * (rng.random(shape) < density)).astype(np.float32)
            csr = sp.csr_matrix(w)
            td, _ = timed(lambda: [x @ w for _ in range(10)], 3)
            ts, _ = timed(lambda: [x @ csr for _ in range(10)], 3)
            out.append({"shape": shape, "density": density, "dense_ms": td * 100,
                        "csr_ms": ts * 100})
    return out


# --------------------------------------------------------------------------- report


def markdown(results, sparse, args, started, machine) -> str:
    lines = ["# Scoring benchmarks (`benchmarks/bench_scoring.py`)", "",
             f"Command: `.venv/bin/python benchmarks/bench_scoring.py --rows {args.rows} "
             f"--reps {args.reps}`  ",
             f"Machine: {machine}.  ",
             f"Run: {started:%Y-%m-%d %H:%M} UTC, one run, `local[2]`, Arrow batches of 100,000 "
             f"rows, our model batch 8,192 rows; every time is the median of {args.reps} runs "
             f"to the `noop` sink, every ratio comes from this run.", "",
             "Methods: **MLlib** = `VectorAssembler` (or `array_to_vector`) + `model.transform`, "
             "prediction and probability; **pbu** = `predict_batch_udf` over one array column, "
             "numpy float32 forward pass of the same float model; **ours** = "
             "`score_dataframe` with the compressed model file (method chosen by `auto`: SQL "
             "expressions for linear models up to 1,024 weights, else the Arrow UDF over the "
             "broadcast file); **ours fp32** = the same with the uncompressed model file; "
             "**codes** = ours on 8-bit minmax codes of the same features, dequantization "
             "folded into the first layer.", "",
             "| data | model | rows | plan | scan s | MLlib s | pbu s | ours s (method) | ours "
             "fp32 s | codes s | ours/MLlib rows/s | ours/pbu | compressed/fp32 path | codes/"
             "float | broadcast bytes (fp32 -> ours) | acc fp32 -> compressed | agree w/ MLlib "
             "| peak Python worker RSS |",
             "|" + "---|" * 18]
    for r in results:
        def ratio(a, b):
            return f"{r[a] / r[b]:.2f}x" if r.get(a) and r.get(b) else "-"
        rss = r.get("ours_peak_worker_rss") or r.get("ours_float_peak_worker_rss")
        bc_f = r["ours_float_broadcast_bytes"] or r["float_file_bytes"]
        bc_c = r["ours_broadcast_bytes"] or r["file_bytes"]
        where = "" if r["ours_broadcast_bytes"] else ", weights in the query plan"
        cells = [
            r["dataset"], r["model"], f"{r['rows']:,}", r["plan"], f"{r['scan']:.2f}",
            f"{r['mllib']:.2f}", f"{r['predict_batch_udf']:.2f}",
            f"{r['ours']:.2f} ({r['ours_method']})", f"{r['ours_float']:.2f}",
            f"{r['ours_codes']:.2f}" if "ours_codes" in r else "-",
            ratio("mllib", "ours"), ratio("predict_batch_udf", "ours"),
            ratio("ours_float", "ours"), ratio("ours", "ours_codes"),
            f"{bc_f:,} -> {bc_c:,} ({bc_f / bc_c:.1f}x{where})",
            (f"{r['acc_float'] * 100:.2f} -> {r['acc_compressed'] * 100:.2f} %"
             if "acc_float" in r else "-"),
            f"{r['agree_mllib']:.4f}" if "agree_mllib" in r else "-",
            f"{rss / 2**20:.0f} MiB" if rss else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Ratios are rows/s ratios (time of the other method / our time): above 1 means "
              "we are faster. \"compressed/fp32 path\" is the float model's time over the "
              "compressed model's; \"codes/float\" is the float-feature time over the codes time.",
              "", "Run times (s) of every repetition:", ""]
    for r in results:
        runs = {k: v for k, v in r.items() if k.endswith("_runs")}
        lines.append(f"- {r['dataset']} {r['model']}: " + ", ".join(
            f"{k[:-5]} {v}" for k, v in runs.items()))
    if sparse:
        lines += ["", "Sparse kernel check (numpy dense matmul vs scipy CSR, batch of 8,192 rows, "
                  "ms per product):", "", "| layer | density | dense ms | CSR ms |",
                  "|---|---|---|---|"]
        for s in sparse:
            lines.append(f"| {s['shape'][0]} x {s['shape'][1]} | {s['density']} | "
                         f"{s['dense_ms']:.2f} | {s['csr_ms']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks_scoring.md"))
    ap.add_argument("--skip-real", action="store_true")
    args = ap.parse_args(argv)
    started = datetime.now(timezone.utc)
    OUT.mkdir(parents=True, exist_ok=True)
    spark = session()
    results = []

    synth_path = OUT / f"synthetic-{args.rows}"
    synthetic(spark, synth_path, args.rows)
    df = spark.read.parquet(str(synth_path))
    feats = [f"f{j}" for j in range(32)]
    train = df.limit(200_000)
    mlr, mmlp, olr, omlp = mllib_models(spark, train, feats, [32, 64, 32, 2],
                                        OUT / "synthetic-models")
    qm = FeatureQuantizer(passthroughCols=["label"]).fit(df)
    codes_path = OUT / f"synthetic-codes-{args.rows}"
    if not (codes_path / "_SUCCESS").exists():
        qm.transform(df).write.mode("overwrite").parquet(str(codes_path))
    write_codebook(qm.codebook, OUT / "synthetic-codebook.json")
    cdf = spark.read.parquet(str(codes_path)).select(*feats)
    results += bench_models(spark, "synthetic", df, feats, [
        ("LR", mlr, olr, C.Plan(C.LayerPlan(quantize="int8"))),
        ("MLP 32-64-32-2", mmlp, omlp, C.Plan(C.LayerPlan(quantize="int8"))),
    ], args.reps, codes=(cdf, qm.codebook))

    if not args.skip_real:
        fpath = OUT / "fraud"
        names = fraud(spark, fpath)
        fdf = spark.read.parquet(str(fpath))
        mlr, mmlp, olr, omlp = mllib_models(spark, fdf, names, [len(names), 32, 16, 2],
                                            OUT / "fraud-models", mlp_iter=100)
        results += bench_models(spark, "credit-card fraud", fdf, names, [
            ("LR", mlr, olr, C.Plan(C.LayerPlan(quantize="int8"))),
            (f"MLP {len(names)}-32-16-2", mmlp, omlp, C.Plan(C.LayerPlan(quantize="int8"))),
        ], args.reps)
        mpath = OUT / "fmnist"
        fmnist(spark, mpath)
        # MLlib's L-BFGS MLP costs minutes per pass over 784 inputs on 2 cores: train it on
        # the first 20,000 training images; everything is scored on all 70,000.
        mtrain = spark.read.parquet(str(mpath / "train.parquet")).limit(20_000)
        mall = spark.read.parquet(str(mpath / "train.parquet"), str(mpath / "test.parquet"))
        mlr, mmlp, olr, omlp = mllib_models(spark, mtrain, "pixels", [784, 64, 10],
                                            OUT / "fmnist-models", array_col=True, lr_iter=30,
                                            mlp_iter=40)
        results += bench_models(spark, "Fashion-MNIST", mall, "pixels", [
            ("LR multinomial", mlr, olr, C.Plan(C.LayerPlan(quantize="int8"))),
            # int4 alone: 9.2x at -0.2 points; pruning 70 % and fine-tuning on the first training
            # images (Deep Compression order) reaches 12.7x at about -0.05 points.
            ("MLP 784-64-10", mmlp, omlp,
             C.Plan(C.LayerPlan(prune=0.7, quantize="kmeans", kmeans_bits=4)),
             fmnist_train(20_000)),
        ], args.reps, array_col=True)
    sparse = sparse_kernel_check()
    spark.stop()
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, "
               f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
               f"Python {platform.python_version()}, numpy {np.__version__}, "
               f"pyspark {__import__('pyspark').__version__}")
    md = markdown(results, sparse, args, started, machine)
    Path(args.out).write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
