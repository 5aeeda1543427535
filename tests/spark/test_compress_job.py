"""jobs/compress_model.py in-process on a real dataset (scikit-learn's bundled breast-cancer
table): import a skops model, compress it, evaluate both models on Spark, write atomically."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]


def _main(capsys, argv):
    spec = importlib.util.spec_from_file_location("job_compress_model",
                                                  REPO / "jobs" / "compress_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main([str(a) for a in argv])
    return rc, capsys.readouterr()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from sklearn.datasets import load_breast_cancer
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler
    import skops.io

    d = load_breast_cancer()
    x = StandardScaler().fit_transform(d.data).astype(np.float32)
    names = [f"f{j}" for j in range(x.shape[1])]
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    train, test = idx[:400], idx[400:]
    est = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0)
    est.fit(x[train], d.target[train])
    root = tmp_path_factory.mktemp("compress")
    skops.io.dump(est, root / "mlp.skops")
    pdf = pd.DataFrame(x[test], columns=names)
    pdf["label"] = d.target[test].astype(np.int32)
    pdf.to_parquet(root / "eval.parquet", index=False)
    tdf = pd.DataFrame(x[train], columns=names)
    tdf["label"] = d.target[train].astype(np.int32)
    tdf.to_parquet(root / "train.parquet", index=False)
    feats = ", ".join(f'"{n}"' for n in names)
    (root / "plan.toml").write_text(
        f'[plan]\nprune = 0.5\nquantize = "int8"\nbias_correction = 100\n'
        f'[eval]\nlabel = "label"\nfeatures = [{feats}]\n')
    return root, est, x[test], d.target[test]


def test_compress_job_writes_model_and_report(spark, capsys, fitted):
    from spark_compress.core import compress as C
    from spark_compress.core.model import forward, predict
    from spark_compress.io.model_file import load_model

    root, est, x_test, y_test = fitted
    out = root / "out"
    rc, cap = _main(capsys, ["--model", root / "mlp.skops", "--config", root / "plan.toml",
                             "--eval-data", root / "eval.parquet", "--calibration-data",
                             root / "train.parquet", "--output", out])
    assert rc == 0, cap.err
    assert sorted(p.name for p in out.iterdir()) == ["_SPARK_COMPRESS", "_SUCCESS",
                                                     "model.safetensors", "report.json"]
    report = json.loads((out / "report.json").read_text())
    n_params = sum(w.size for w in est.coefs_) + sum(b.size for b in est.intercepts_)
    assert report["original_bytes"] == 4 * n_params
    assert report["compressed_bytes"] == (out / "model.safetensors").stat().st_size
    assert report["compression_ratio"] == pytest.approx(4 * n_params / report["compressed_bytes"],
                                                        rel=1e-3)
    assert [lay["sparsity"] for lay in report["layers"]] == pytest.approx([0.5, 0.5], abs=0.01)
    cm, spec = load_model(out / "model.safetensors")
    assert spec["input_names"] == [f"f{j}" for j in range(30)]
    # --model-type was left out: the detected type is recorded
    assert spec["source"] == {"path": str(root / "mlp.skops"), "type": "sklearn-skops"}
    model = C.decompress(cm)
    probs = forward(model, x_test)
    acc = float((predict(model, probs) == y_test).mean())
    m = report["metrics"]
    assert m["compressed"]["count"] == m["original"]["count"] == len(y_test)
    assert m["compressed"]["accuracy"] == pytest.approx(acc, abs=1e-9)
    assert m["original"]["accuracy"] == pytest.approx(est.score(x_test, y_test), abs=1e-9)
    assert 0.9 <= m["compressed"]["agreement"] <= 1.0
    assert m["compressed"]["accuracy"] >= m["original"]["accuracy"] - 0.03
    assert json.loads(cap.out.strip().splitlines()[-1])["status"] == "ok"
    # the evaluation data's quality, counted in one pass before the evaluation
    assert report["rows_in"] == len(y_test)
    assert sorted(report["input_quality"]) == sorted([*(f"f{j}" for j in range(30)), "label"])
    assert all(q == {"null": 0, "nan": 0, "posinf": 0, "neginf": 0}
               for q in report["input_quality"].values())


def test_compress_job_is_deterministic(spark, capsys, fitted):
    root = fitted[0]
    outs = []
    for name in ("a", "b"):
        rc, cap = _main(capsys, ["--model", root / "mlp.skops", "--config", root / "plan.toml",
                                 "--eval-data", root / "eval.parquet", "--calibration-data",
                                 root / "train.parquet", "--output", root / name])
        assert rc == 0, cap.err
        outs.append((root / name / "model.safetensors").read_bytes())
    assert outs[0] == outs[1]


_NAMES = ", ".join(f'"f{j}"' for j in range(29))


@pytest.mark.parametrize("edit,match", [
    ('[plan]\nprune = 1.5\n[eval]\nlabel = "label"\nfeatures = ["f0"]\n', r"'prune'.*\[0, 1\]"),
    ('[plan]\nquantize = "int8"\n[eval]\nlabel = "label"\nfeatures = ["f0"]\n',
     r"features lists 1 column\(s\) but the model takes 30 inputs"),
    ('[plan]\nquantize = "int8"\n[eval]\nlabel = "label"\nfeatures = [' + _NAMES + ', "nope"]\n',
     r"'nope'"),
])
def test_compress_job_bad_input_exits_2(spark, capsys, fitted, tmp_path, edit, match):
    root = fitted[0]
    cfg = tmp_path / "bad.toml"
    cfg.write_text(edit)
    rc, cap = _main(capsys, ["--model", root / "mlp.skops", "--config", cfg,
                             "--eval-data", root / "eval.parquet", "--output", tmp_path / "o"])
    assert rc == 2
    assert len(cap.err.strip().splitlines()) == 1
    assert __import__("re").search(match, cap.err)
    assert not (tmp_path / "o").exists()


def test_compress_job_finetunes_with_fixed_masks(spark, capsys, fitted, tmp_path):
    from spark_compress.core import compress as C
    from spark_compress.io.model_file import load_model

    root = fitted[0]
    feats = ", ".join(f'"f{j}"' for j in range(30))
    cfg = tmp_path / "ft.toml"
    cfg.write_text(f'[plan]\nprune = 0.8\nquantize = "int8"\nfinetune_epochs = 3\n'
                   f'[eval]\nlabel = "label"\nfeatures = [{feats}]\n')
    rc, cap = _main(capsys, ["--model", root / "mlp.skops", "--config", cfg,
                             "--eval-data", root / "eval.parquet", "--train-data",
                             root / "train.parquet", "--output", tmp_path / "o"])
    assert rc == 0, cap.err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    # At least the pruned 80 % are zero; int8 may round a few tiny survivors to 0 as well
    # (one of the 64 output weights here).
    sp = [lay["sparsity"] for lay in report["layers"]]
    assert all(0.795 <= v <= 0.83 for v in sp), sp
    cm, _ = load_model(tmp_path / "o" / "model.safetensors")
    assert list(C.sparsity(cm).values()) == sp
    m = report["metrics"]
    assert m["compressed"]["accuracy"] >= m["original"]["accuracy"] - 0.05
    rc, cap = _main(capsys, ["--model", root / "mlp.skops", "--config", cfg,
                             "--eval-data", root / "eval.parquet", "--output", tmp_path / "p"])
    assert rc == 2 and "finetune_epochs needs --train-data" in cap.err


def test_compress_job_on_an_mllib_directory(spark, capsys, fitted, tmp_path):
    """A real MLlib LogisticRegressionModel directory (type detected from its metadata); MLlib
    names no input columns, so the file records the config's [eval] features."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler

    from spark_compress.io.model_file import load_model

    root, _, x_test, y_test = fitted
    names = [f"f{j}" for j in range(30)]
    train = spark.read.parquet(str(root / "train.parquet"))
    vec = VectorAssembler(inputCols=names, outputCol="features").transform(train)
    mllib = LogisticRegression(maxIter=50).fit(vec)
    mllib.write().overwrite().save(str(tmp_path / "lr"))
    feats = ", ".join(f'"{n}"' for n in names)
    (tmp_path / "lr.toml").write_text(f'[plan]\nquantize = "int8"\n'
                                      f'[eval]\nlabel = "label"\nfeatures = [{feats}]\n')
    rc, cap = _main(capsys, ["--model", tmp_path / "lr", "--config", tmp_path / "lr.toml",
                             "--eval-data", root / "eval.parquet", "--output", tmp_path / "out"])
    assert rc == 0, cap.err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    _, spec = load_model(tmp_path / "out" / "model.safetensors")
    assert spec["input_names"] == names
    assert report["original_bytes"] == 4 * 31  # 30 weights + the intercept
    # MLlib's own accuracy on the same held-out rows.
    test = spark.read.parquet(str(root / "eval.parquet"))
    pred = mllib.transform(VectorAssembler(inputCols=names, outputCol="features")
                           .transform(test)).select("prediction", "label").toPandas()
    acc = float((pred["prediction"] == pred["label"]).mean())
    assert report["metrics"]["original"]["accuracy"] == pytest.approx(acc, abs=1e-9)
    assert report["metrics"]["original"]["count"] == len(y_test)


def test_compress_job_on_npz_weights_with_named_layer_overrides(spark, capsys, fitted, tmp_path):
    """Plain weights (npz + JSON spec) as PyTorch writes them (out, in); plan overrides by layer
    name and by index from the end, resolved to indices in the written file."""
    from spark_compress.io.model_file import load_model

    root, est, x_test, y_test = fitted
    np.savez(tmp_path / "net.npz", **{"hidden.weight": est.coefs_[0].T, "hidden.bias":
                                      est.intercepts_[0], "head.weight": est.coefs_[1].T,
                                      "head.bias": est.intercepts_[1]})
    (tmp_path / "net.json").write_text(json.dumps({
        "task": "binary", "weight_layout": "out_in",
        "input_names": [f"f{j}" for j in range(30)],
        "layers": [{"weight": "hidden.weight", "bias": "hidden.bias", "activation": "relu"},
                   {"weight": "head.weight", "bias": "head.bias", "activation": "sigmoid"}]}))
    (tmp_path / "plan.toml").write_text('[plan]\nquantize = "int8"\n[layers.hidden]\nprune = 0.5\n'
                                        '[layers."#-1"]\nquantize = "none"\n'
                                        '[eval]\nlabel = "label"\n')
    rc, cap = _main(capsys, ["--model", tmp_path / "net.npz", "--config", tmp_path / "plan.toml",
                             "--eval-data", root / "eval.parquet", "--output", tmp_path / "out"])
    assert rc == 0, cap.err
    cm, spec = load_model(tmp_path / "out" / "model.safetensors")
    assert [layer["name"] for layer in spec["layers"]] == ["hidden", "head"]
    assert spec["plan"]["layers"]["0"]["prune"] == 0.5
    assert spec["plan"]["layers"]["1"] == {**spec["plan"]["default"], "quantize": "none"}
    assert cm.layers[0].w.kind == "int8" and cm.layers[1].w.kind == "float32"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [lay["sparsity"] for lay in report["layers"]] == pytest.approx([0.5, 0.0], abs=0.01)
    assert report["metrics"]["original"]["accuracy"] == pytest.approx(
        est.score(x_test, y_test), abs=1e-9)


@pytest.fixture(scope="module")
def breast_cancer_lr(tmp_path_factory):
    """Issue #10's case: a logistic regression on the raw (unscaled) breast-cancer features,
    weakly regularized, so many scores are far below 1e-4 (the old 10,000-bin histogram put them
    all in one bin and reported ROC AUC 0.940 for the int8 model where scikit-learn gives
    0.982)."""
    import warnings

    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    import skops.io

    d = load_breast_cancer()
    x = d.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, d.target, test_size=0.3,
                                                        random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter on unscaled features
        est = LogisticRegression(C=100.0, max_iter=5000).fit(x_train, y_train)
    root = tmp_path_factory.mktemp("lr")
    skops.io.dump(est, root / "lr.skops")
    names = [f"f{j}" for j in range(30)]
    pdf = pd.DataFrame(x_test, columns=names)
    pdf["label"] = y_test.astype(np.int32)
    pdf.to_parquet(root / "eval.parquet", index=False)  # one file: one partition, rows in order
    feats = ", ".join(f'"{n}"' for n in names)
    (root / "int8.toml").write_text(f'[plan]\nquantize = "int8"\n'
                                    f'[eval]\nlabel = "label"\nfeatures = [{feats}]\n')
    return root, x_test, y_test


def test_breast_cancer_int8_lr_metrics_equal_sklearn(spark, capsys, breast_cancer_lr):
    from sklearn.metrics import average_precision_score, roc_auc_score

    from spark_compress.core import compress as C
    from spark_compress.core.model import forward
    from spark_compress.io.importers import import_model
    from spark_compress.io.model_file import load_model

    root, x_test, y_test = breast_cancer_lr
    out = root / "out"
    rc, cap = _main(capsys, ["--model", root / "lr.skops", "--config", root / "int8.toml",
                             "--eval-data", root / "eval.parquet", "--output", out])
    assert rc == 0, cap.err
    report = json.loads((out / "report.json").read_text())
    cm, _ = load_model(out / "model.safetensors")
    # The scores a user gets from each model, computed in the batches Spark fed forward() (one
    # partition, Arrow batches of maxRecordsPerBatch rows), so they are the same float32 values.
    step = int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch"))
    models = {"original": import_model(root / "lr.skops", "sklearn-skops"),
              "compressed": C.decompress(cm)}
    for name, model in models.items():
        scores = forward(model, x_test, batch_size=step)[:, 0].astype(np.float64)
        got = report["metrics"][name]
        assert got["roc_auc"] == pytest.approx(roc_auc_score(y_test, scores), abs=1e-9, rel=0)
        assert got["average_precision"] == pytest.approx(
            average_precision_score(y_test, scores), abs=1e-9, rel=0)
        assert (scores < 1e-4).sum() >= 5  # the regime the histogram got wrong
    assert report["metrics"]["compressed"]["roc_auc"] == pytest.approx(0.9817, abs=0.01)
    assert "exact" in report["metric_definitions"]["roc_auc"]
    assert "sklearn.metrics.average_precision_score" in \
        report["metric_definitions"]["average_precision"]
    assert report["metric_definitions"]["score"].startswith("float32 probability of class 1")
    # 31 float32 parameters (124 B) make a file several times larger: warned, not gated.
    assert report["original_bytes"] == 124
    size = report["compressed_bytes"]
    assert report["warnings"][0] == (
        f"model.safetensors ({size:,} B) is {size / 124:.1f}x larger than the original model's "
        f"float32 parameters (124 B): the file's header and per-tensor metadata outweigh what the "
        f"plan saves on a model this small")
    assert report["gate"] == {"passed": True, "checks": []}
    assert (out / "_SUCCESS").exists()


@pytest.mark.parametrize("job", ["compress_model", "quantize_features", "dequantize_features",
                                 "score"])
def test_help_of_every_job_ends_its_sentences(capsys, job):
    import importlib

    mod = importlib.import_module(f"spark_compress.jobs.{job}")
    parser = mod.build_parser()
    assert parser.description.endswith("."), parser.description
    assert parser.description == mod.__doc__.split("\n\n")[0].replace("\n", " ")
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert parser.description in text
