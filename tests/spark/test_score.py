"""Distributed scoring (spark_compress.spark.score, the Transformer and jobs/score.py) on a real
table: scikit-learn's bundled breast-cancer data (569 rows x 30 features), real fitted models.

Every expected value comes from the numpy core on the same rows. The session uses Arrow batches
of 7 rows, so every partition is scored in several batches, and model batch sizes that do not
divide them.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spark_compress.core import compress as C
from spark_compress.core import quantize as Q
from spark_compress.core.scoring import prepare, score
from spark_compress.errors import ConfigError, SchemaError
from spark_compress.io.importers import import_sklearn
from spark_compress.io.model_file import model_to_bytes

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]
N_FEATURES = 30
NAMES = [f"f{j}" for j in range(N_FEATURES)]


@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.preprocessing import StandardScaler

    d = load_breast_cancer()
    x = StandardScaler().fit_transform(d.data).astype(np.float32)
    y = d.target
    lr = LogisticRegression(max_iter=500).fit(x, y)
    mlp = MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=300, random_state=0).fit(x, y)
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=300, random_state=0).fit(x, d.data[:, 0])
    models = {}
    for name, est, plan in [
        ("lr", lr, C.Plan(C.LayerPlan(quantize="int8"))),
        ("mlp", mlp, C.Plan(C.LayerPlan(prune=0.5, quantize="int4"))),
        ("reg", reg, C.Plan(C.LayerPlan(quantize="int8"))),
    ]:
        m = import_sklearn(est)
        m = type(m)(m.task, m.layers, m.n_features, input_names=tuple(NAMES))
        models[name] = model_to_bytes(C.compress(m, plan), plan=plan)
    return x, y, models


def _frame(spark, x, partitions=3):
    pdf = pd.DataFrame(x, columns=NAMES)
    pdf.insert(0, "id", np.arange(len(x), dtype=np.int64))
    return spark.createDataFrame(pdf).repartition(partitions)


def _expected(model_file, x):
    out, valid = score(prepare(model_file.model), x.astype(np.float32))
    return out, valid


def _probabilities(rows, k):
    return np.array([r.probability if r.probability is not None else [np.nan] * k
                     for r in rows], dtype=np.float64)


@pytest.mark.parametrize("name,method", [("lr", "expression"), ("lr", "arrow"),
                                         ("mlp", "arrow"), ("reg", "arrow")])
def test_scores_equal_the_numpy_core(spark, data, name, method, float32_forward_bound,
                                     within_float32_rounding):
    """Within the float32 rounding bound of the float64 reference: Spark's batches are not the
    core's, and BLAS may sum in another order for another batch shape."""
    from pyspark.sql import DataFrame

    from spark_compress.spark.score import (model_file_from_bytes, score_dataframe,
                                            score_with_details)

    x, _, models = data
    mf = model_file_from_bytes(models[name])
    plain = score_dataframe(_frame(spark, x), mf, method=method, batch_size=5)
    assert isinstance(plain, DataFrame) and plain.columns == ["id", *NAMES, *(
        ["prediction"] if name == "reg" else ["prediction", "probability"])]
    sf = score_with_details(_frame(spark, x), mf, method=method, batch_size=5)
    assert sf.method == method
    assert sf.broadcast_bytes == (len(models[name]) if method == "arrow" else 0)
    rows = sorted(sf.df.collect(), key=lambda r: r.id)
    assert len(rows) == len(x) and [r.id for r in rows] == list(range(len(x)))
    reference, bound = float32_forward_bound(mf.model, x)
    if name == "reg":
        within_float32_rounding(np.array([[r.prediction] for r in rows]), reference, bound)
        return
    p1, bound1 = reference[:, -1], bound[:, -1]
    probs = _probabilities(rows, 2)
    within_float32_rounding(probs[:, 1], p1, bound1)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    predictions = np.array([r.prediction for r in rows])
    np.testing.assert_array_equal(predictions, (probs[:, 1] > 0.5).astype(float))
    # A probability within rounding of 0.5 may fall on either side; every other row's label is
    # the reference's.
    clear = np.abs(p1 - 0.5) > bound1
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(predictions[clear], (p1[clear] > 0.5).astype(float))
    if method == "arrow":
        assert sf.peak_worker_rss.value > 10 * 2**20  # a real process: tens of MB at least


def test_single_row_and_empty_partitions_and_odd_batches(spark, data):
    from spark_compress.spark.score import model_file_from_bytes, score_dataframe

    x, _, models = data
    mf = model_file_from_bytes(models["mlp"])
    out, _ = _expected(mf, x[:3])
    # 3 rows over 5 partitions: at least two partitions are empty, others hold one row.
    df = _frame(spark, x[:3], partitions=5)
    rows = sorted(score_dataframe(df, mf, batch_size=2).collect(), key=lambda r: r.id)
    np.testing.assert_allclose(_probabilities(rows, 2)[:, 1], out[:, -1], atol=2e-6)
    empty = score_dataframe(df.limit(0), mf)
    assert empty.count() == 0 and empty.columns == ["id", *NAMES, "prediction", "probability"]


@pytest.mark.parametrize("method", ["expression", "arrow"])
def test_null_nan_and_inf_rows_get_null_scores(spark, data, method):
    from pyspark.sql import functions as F

    from spark_compress.spark.score import input_quality, model_file_from_bytes, score_dataframe

    x, _, models = data
    mf = model_file_from_bytes(models["lr"])
    pdf = pd.DataFrame(x[:6].astype(np.float64), columns=NAMES)
    pdf.insert(0, "id", np.arange(6))
    pdf.loc[2, "f0"] = np.inf
    pdf.loc[3, "f29"] = -np.inf
    df = spark.createDataFrame(pdf)
    # Set in Spark: a pandas NaN would arrive as null, and a None as NaN.
    df = (df.withColumn("f3", F.when(F.col("id") == 1, F.lit(float("nan"))).otherwise(F.col("f3")))
          .withColumn("f7", F.when(F.col("id") == 4, F.lit(None)).otherwise(F.col("f7"))))
    rows = sorted(score_dataframe(df, mf, method=method).collect(), key=lambda r: r.id)
    assert [r.prediction is None for r in rows] == [False, True, True, True, True, False]
    n, quality = input_quality(df, NAMES)
    assert n == 6
    assert {c: {k: v for k, v in q.items() if v} for c, q in quality.items() if any(q.values())} \
        == {"f3": {"nan": 1}, "f0": {"posinf": 1}, "f29": {"neginf": 1}, "f7": {"null": 1}}
    assert [r.probability is None for r in rows] == [False, True, True, True, True, False]
    out, _ = _expected(mf, x[[0, 5]])
    np.testing.assert_allclose([rows[0].probability[1], rows[5].probability[1]], out[:, 0],
                               atol=2e-6)


def test_missing_column_and_unnamed_model_errors(spark, data):
    from pyspark.sql import functions as F

    from spark_compress.spark.score import model_file_from_bytes, score_dataframe

    x, _, models = data
    mf = model_file_from_bytes(models["mlp"])
    df = _frame(spark, x[:4]).drop("f12", "f20")
    with pytest.raises(SchemaError, match=r"input column\(s\) 'f12', 'f20' are not in the input"):
        score_dataframe(df, mf)
    m = mf.model
    bare = C.compress(type(m)(m.task, m.layers, m.n_features), C.Plan())
    with pytest.raises(ConfigError, match="does not record its input columns"):
        score_dataframe(df, model_file_from_bytes(model_to_bytes(bare)))
    with pytest.raises(ConfigError, match="'method' parameter must be one of"):
        score_dataframe(_frame(spark, x[:4]), mf, method="gpu")
    with pytest.raises(ConfigError, match="method 'expression' runs one-layer models"):
        score_dataframe(_frame(spark, x[:4]), mf, method="expression")
    with pytest.raises(SchemaError, match=r"already has column\(s\) \['prediction'\]"):
        score_dataframe(_frame(spark, x[:4]).withColumn("prediction", F.lit(0.0)), mf)


def test_array_column_input(spark, data):
    from pyspark.sql import functions as F

    from spark_compress.spark.score import input_quality, model_file_from_bytes, score_dataframe

    x, _, models = data
    mf = model_file_from_bytes(models["mlp"])
    df = _frame(spark, x[:40]).select("id", F.array(*NAMES).alias("pixels"))
    rows = sorted(score_dataframe(df, mf, features="pixels", batch_size=3).collect(),
                  key=lambda r: r.id)
    out, _ = _expected(mf, x[:40])
    np.testing.assert_allclose(_probabilities(rows, 2)[:, 1], out[:, -1], atol=2e-6)
    holes = df.withColumn("pixels", F.when(F.col("id") == 1, F.lit(None))
                          .when(F.col("id") == 2, F.concat(F.slice("pixels", 1, 29),
                                                                F.array(F.lit(float("nan")))))
                          .otherwise(F.col("pixels")))
    assert input_quality(holes, "pixels") == (40, {"pixels": {"null": 1, "non_finite": 1}})


# ------------------------------------------------------------------------- codes (folded)


@pytest.fixture(scope="module")
def encoded(spark, data):
    """The features quantized: half minmax 8 bits, a third quantile 4 bits, the rest percentile
    8 bits; the codebook and the codes DataFrame."""
    from spark_compress.spark.ml import FeatureQuantizer

    x, _, _ = data
    settings = {n: ({"method": "quantile", "bits": 4} if j % 3 == 0 else
                    {"method": "percentile", "bits": 8, "clip": 0.01} if j % 3 == 1 else
                    {"method": "minmax", "bits": 8}) for j, n in enumerate(NAMES)}
    df = _frame(spark, x)
    qm = FeatureQuantizer(passthroughCols=["id"], columnSettings=json.dumps(settings)).fit(df)
    codes = qm.transform(df).cache()
    return qm, codes


@pytest.mark.parametrize("name,method", [("lr", "expression"), ("lr", "arrow"),
                                         ("mlp", "arrow")])
def test_folded_codes_equal_scoring_the_decoded_floats(spark, data, encoded, name, method):
    from spark_compress.spark.score import model_file_from_bytes, score_dataframe

    _, _, models = data
    qm, codes = encoded
    cb = qm.codebook
    mf = model_file_from_bytes(models[name])
    got = sorted(score_dataframe(codes, mf, codebook=cb, method=method, batch_size=4)
                 .collect(), key=lambda r: r.id)
    # The decoded floats, scored by the numpy core.
    pdf = codes.toPandas().sort_values("id")
    dec = np.stack([Q.decode(cb.column(n).encoder, pdf[n].to_numpy()) for n in NAMES], axis=1)
    out, _ = _expected(mf, dec.astype(np.float32))
    np.testing.assert_allclose(_probabilities(got, 2)[:, 1], out[:, -1], rtol=0, atol=1e-5)
    assert sum(r.prediction != float(p > 0.5) for r, p in zip(got, out[:, -1])) <= 1


@pytest.mark.parametrize("name,method", [("lr", "expression"), ("lr", "arrow"),
                                         ("mlp", "arrow")])
def test_bad_codes_get_null_scores_and_the_rest_equal_the_core(spark, data, encoded, name,
                                                                method):
    """Null, special (NaN -1, +inf -2, -inf -3) and out-of-range codes, in affine and quantile
    columns, make exactly their rows unscorable; the other rows equal the numpy core on codes."""
    from pyspark.sql import functions as F

    from spark_compress.core.scoring import fold_codes, score_codes
    from spark_compress.spark.score import model_file_from_bytes, score_dataframe

    _, _, models = data
    qm, codes = encoded
    cb = qm.codebook
    # f0 quantile 4 bits (qmax 15), f1 percentile 8 bits, f2 minmax 8 bits (qmax 255)
    bad = {0: ("f1", None), 1: ("f2", Q.CODE_NAN), 2: ("f2", Q.CODE_POSINF),
           3: ("f1", Q.CODE_NEGINF), 4: ("f2", 256), 5: ("f0", 16), 6: ("f0", -1),
           7: ("f0", None)}
    df = codes
    for row_id, (c, v) in bad.items():
        dtype = dict(codes.dtypes)[c]
        df = df.withColumn(c, F.when(F.col("id") == row_id, F.lit(v).cast(dtype))
                           .otherwise(F.col(c)))
    mf = model_file_from_bytes(models[name])
    got = sorted(score_dataframe(df, mf, codebook=cb, method=method, batch_size=5).collect(),
                 key=lambda r: r.id)
    pdf = df.toPandas().sort_values("id")
    c = np.stack([pdf[n].fillna(-1).to_numpy().astype(np.int64) for n in NAMES], axis=1)
    scorer = fold_codes(mf.model, [cb.column(n).encoder for n in NAMES], names=NAMES)
    out, valid = score_codes(scorer, c)
    assert [r.id for r, ok in zip(got, valid) if not ok] == sorted(bad)
    assert all((r.prediction is None) == (not ok) for r, ok in zip(got, valid))
    assert all((r.probability is None) == (not ok) for r, ok in zip(got, valid))
    good = [r for r, ok in zip(got, valid) if ok]
    np.testing.assert_allclose(_probabilities(good, 2)[:, 1], out[valid, -1], rtol=0, atol=1e-5)


def test_codes_need_integer_columns_from_the_codebook(spark, data, encoded):
    from spark_compress.spark.score import model_file_from_bytes, score_dataframe

    x, _, models = data
    qm, codes = encoded
    mf = model_file_from_bytes(models["lr"])
    with pytest.raises(SchemaError, match=r"feature column\(s\) 'f0' \(float\).* must be integer"):
        score_dataframe(_frame(spark, x[:3]), mf, codebook=qm.codebook)
    renamed = codes.withColumnRenamed("f5", "g5")
    with pytest.raises(SchemaError, match=r"'f5' are not in the input"):
        score_dataframe(renamed, mf, codebook=qm.codebook)


# ------------------------------------------------------------------------- Transformer


def test_transformer_in_a_pipeline_saves_and_loads(spark, data, encoded, tmp_path):
    from pyspark.ml import PipelineModel

    from spark_compress.spark.ml_score import CompressedModelScorer

    x, _, models = data
    qm, codes = encoded
    path = tmp_path / "model.safetensors"
    path.write_bytes(models["mlp"])
    scorer = CompressedModelScorer.fromFile(path, codebookJson=qm.getCodebookJson(),
                                            batchSize=16)
    pipe = PipelineModel(stages=[qm, scorer])
    pipe.write().overwrite().save(str(tmp_path / "pipe"))
    loaded = PipelineModel.load(str(tmp_path / "pipe"))
    df = _frame(spark, x)
    a = sorted(pipe.transform(df).select("id", "probability").collect(), key=lambda r: r.id)
    b = sorted(loaded.transform(df).select("id", "probability").collect(), key=lambda r: r.id)
    assert [r.id for r in a] == [r.id for r in b] == list(range(len(x)))
    # The same model on the same codes: equal up to the summation order BLAS picks (not
    # bitwise, which BLAS does not promise), within this file's tolerance for the codes path.
    np.testing.assert_allclose(_probabilities(a, 2), _probabilities(b, 2), rtol=0, atol=1e-5)
    direct = sorted(CompressedModelScorer.fromFile(path).transform(df).collect(),
                    key=lambda r: r.id)
    # Codes vs floats: the quantization error of the features, not of the scorer.
    diff = np.abs(_probabilities(a, 2)[:, 1] - _probabilities(direct, 2)[:, 1])
    assert diff.mean() < 0.02


def test_transformer_without_model_and_with_bad_bytes():
    from spark_compress.errors import FormatError, NotFittedError
    from spark_compress.spark.ml_score import CompressedModelScorer

    with pytest.raises(NotFittedError, match="has no model"):
        CompressedModelScorer().model_file()
    with pytest.raises(FormatError, match="modelBase64"):
        CompressedModelScorer(modelBase64="AAAA").model_file()


# ------------------------------------------------------------------------- the job


def _score_main(capsys, argv):
    spec = importlib.util.spec_from_file_location("job_score", REPO / "jobs" / "score.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main([str(a) for a in argv])
    return rc, capsys.readouterr()


def test_score_job_on_floats_and_on_a_quantize_features_output(spark, data, capsys, tmp_path):
    import pyarrow.parquet as pq

    from spark_compress.io.codebook import write_codebook
    from spark_compress.spark.ml import FeatureQuantizer
    from spark_compress.spark.score import model_file_from_bytes

    x, _, models = data
    (tmp_path / "model.safetensors").write_bytes(models["mlp"])
    pdf = pd.DataFrame(x, columns=NAMES)
    pdf.insert(0, "id", np.arange(len(x), dtype=np.int64))
    pdf.to_parquet(tmp_path / "in.parquet", index=False)
    rc, cap = _score_main(capsys, ["--model", tmp_path / "model.safetensors", "--input",
                                   tmp_path / "in.parquet", "--output", tmp_path / "out"])
    assert rc == 0, cap.err
    summary = json.loads(cap.out.strip().splitlines()[-1])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert report["rows_in"] == report["rows_out"] == len(x) and report["invalid_rows"] == 0
    assert report["method"] == "arrow" and report["broadcast_bytes"] == len(models["mlp"])
    assert report["rows_per_second"] > 0 and report["python_worker_peak_rss_bytes"] > 0
    assert summary["status"] == "ok" and summary["rows_out"] == len(x)
    got = pq.read_table(tmp_path / "out" / "data").to_pandas().sort_values("id")
    assert list(got.columns) == ["id", "prediction", "probability"]
    out, _ = _expected(model_file_from_bytes(models["mlp"]), x)
    np.testing.assert_allclose(np.stack(got["probability"].to_numpy())[:, 1], out[:, -1],
                               atol=2e-6)
    # The same model on codes written like quantize_features writes them.
    qdir = tmp_path / "quantized"
    df = spark.read.parquet(str(tmp_path / "in.parquet"))
    qm = FeatureQuantizer(passthroughCols=["id"]).fit(df)
    qm.transform(df).write.parquet(str(qdir / "data"))
    write_codebook(qm.codebook, qdir / "codebook.json")
    rc, cap = _score_main(capsys, ["--model", tmp_path / "model.safetensors", "--input", qdir,
                                   "--output", tmp_path / "out_codes"])
    assert rc == 0, cap.err
    report = json.loads((tmp_path / "out_codes" / "report.json").read_text())
    assert report["codes"] == "fold" and report["rows_out"] == len(x)
    assert report["input_quality"]["f0"] == {"null": 0, "nan": 0, "posinf": 0, "neginf": 0,
                                             "out_of_range": 0}
    assert sorted(report["input_quality"]) == sorted(NAMES)
    codes = pq.read_table(qdir / "data").to_pandas().sort_values("id")
    dec = np.stack([Q.decode(qm.codebook.column(n).encoder, codes[n].to_numpy())
                    for n in NAMES], axis=1)
    exp, _ = _expected(model_file_from_bytes(models["mlp"]), dec.astype(np.float32))
    got = pq.read_table(tmp_path / "out_codes" / "data").to_pandas().sort_values("id")
    np.testing.assert_allclose(np.stack(got["probability"].to_numpy())[:, 1], exp[:, -1],
                               atol=1e-5)
    # A rerun with the same inputs is skipped.
    rc, cap = _score_main(capsys, ["--model", tmp_path / "model.safetensors", "--input", qdir,
                                   "--output", tmp_path / "out_codes"])
    assert rc == 0 and json.loads(cap.out.strip().splitlines()[-1])["status"] == "skipped"


@pytest.mark.parametrize("edit,match", [
    ("drop", r"input column\(s\) 'f4' are not in the input"),
    ("tamper", r"model.safetensors.*checksum"),
    ("config", r"unknown key 'batchsize' in \[score\]"),
])
def test_score_job_bad_input_exits_2_and_writes_nothing(spark, data, capsys, tmp_path, edit,
                                                         match):
    x, _, models = data
    model = bytearray(models["lr"])
    if edit == "tamper":
        model[-3] ^= 0xFF
    (tmp_path / "model.safetensors").write_bytes(bytes(model))
    pdf = pd.DataFrame(x[:20], columns=NAMES)
    if edit == "drop":
        pdf = pdf.drop(columns=["f4"])
    pdf.to_parquet(tmp_path / "in.parquet", index=False)
    argv = ["--model", tmp_path / "model.safetensors", "--input", tmp_path / "in.parquet",
            "--output", tmp_path / "out"]
    if edit == "config":
        (tmp_path / "s.toml").write_text("[score]\nbatchsize = 10\n")
        argv += ["--config", tmp_path / "s.toml"]
    rc, cap = _score_main(capsys, argv)
    assert rc == 2
    assert any(__import__("re").search(match, line) for line in cap.err.splitlines()), cap.err
    assert not (tmp_path / "out").exists()


def test_multiclass_linear_expression_on_an_array_column(spark, data):
    """A softmax regression over one array column as SQL expressions equals the numpy core."""
    from pyspark.sql import functions as F

    from spark_compress.core.model import linear
    from spark_compress.spark.score import model_file_from_bytes, score_with_details

    x, _, _ = data
    rng = np.random.default_rng(5)
    m = linear(rng.normal(size=(N_FEATURES, 4)), rng.normal(size=4), "multiclass")
    mf = model_file_from_bytes(model_to_bytes(C.compress(m, C.Plan())))
    df = _frame(spark, x[:50]).select("id", F.array(*NAMES).alias("v"))
    sf = score_with_details(df, mf, features="v", method="auto")
    assert sf.method == "expression" and sf.df.columns == ["id", "v", "prediction", "probability"]
    rows = sorted(sf.df.collect(), key=lambda r: r.id)
    out, _ = _expected(mf, x[:50])
    np.testing.assert_allclose(_probabilities(rows, 4), out, rtol=0, atol=2e-6)
    probs = _probabilities(rows, 4)
    predictions = np.array([r.prediction for r in rows])
    np.testing.assert_array_equal(predictions, np.argmax(probs, axis=1).astype(float))
    # Where the two top classes are within rounding of each other either may win; elsewhere the
    # label is the core's.
    top2 = np.sort(out, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 4e-6
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(predictions[clear], np.argmax(out[clear], axis=1))


# ------------------------------------------------------------------------- passthrough codes


@pytest.fixture(scope="module")
def quantized_table(spark, data, tmp_path_factory):
    """A quantize_features output of the features plus three columns the model does not read:
    ``Time`` (integer seconds 0..172,792, minmax 16 bits: codes up to 65,535), ``amount``
    (quantile 8 bits) and ``kind`` (a dictionary of strings); ``id`` passes through."""
    from spark_compress.io.codebook import write_codebook
    from spark_compress.spark.ml import FeatureQuantizer

    x, _, models = data
    rng = np.random.default_rng(11)
    pdf = pd.DataFrame(x, columns=NAMES)
    pdf.insert(0, "id", np.arange(len(x), dtype=np.int64))
    pdf["Time"] = np.sort(rng.integers(0, 172_793, size=len(x))).astype(np.int64)
    pdf.loc[len(x) - 1, "Time"] = 172_792
    pdf["amount"] = rng.lognormal(3.0, 1.5, size=len(x))
    pdf["kind"] = rng.choice(["card", "wire", "cash"], size=len(x))
    root = tmp_path_factory.mktemp("passthrough_codes")
    df = spark.createDataFrame(pdf).repartition(3)
    settings = {"Time": {"method": "minmax", "bits": 16},
                "amount": {"method": "quantile", "bits": 8}, "kind": {"method": "dictionary"}}
    qm = FeatureQuantizer(passthroughCols=["id"], columnSettings=json.dumps(settings)).fit(df)
    qdir = root / "quantized"
    qm.transform(df).write.parquet(str(qdir / "data"))
    write_codebook(qm.codebook, qdir / "codebook.json")
    (qdir / "_SUCCESS").write_text("")
    (root / "model.safetensors").write_bytes(models["mlp"])
    return root, pdf


def test_score_output_decodes_the_encoded_passthrough_columns(spark, quantized_table, capsys):
    """Defect: the score output held ``Time`` as its raw 16-bit codes (max 65,535). Now every
    encoded column that is not a feature equals what dequantize_features restores."""
    import pyarrow.parquet as pq

    root, pdf = quantized_table
    rc, cap = _score_main(capsys, ["--model", root / "model.safetensors", "--input",
                                   root / "quantized", "--output", root / "scores"])
    assert rc == 0, cap.err
    report = json.loads((root / "scores" / "report.json").read_text())
    assert report["codes"] == "fold"
    assert report["passthrough"] == ["id", "Time", "amount", "kind"]
    assert report["passthrough_codes"] == {"decoded": ["Time", "amount", "kind"], "dropped": []}
    spec = importlib.util.spec_from_file_location("job_deq", REPO / "jobs" /
                                                  "dequantize_features.py")
    deq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(deq)
    assert deq.main(["--input", str(root / "quantized"), "--output",
                     str(root / "restored")]) == 0
    capsys.readouterr()
    scored = pq.read_table(root / "scores" / "data")
    restored = pq.read_table(root / "restored" / "data").to_pandas().sort_values("id")
    got = scored.to_pandas().sort_values("id")
    assert list(got.columns) == ["id", "Time", "amount", "kind", "prediction", "probability"]
    for c in ("Time", "amount", "kind"):
        assert scored.schema.field(c).type == pq.read_schema(
            next((root / "restored" / "data").glob("*.parquet"))).field(c).type
        assert got[c].tolist() == restored[c].tolist(), c
    # The real range, to within half a 16-bit step (172,792 / 65,535 / 2 = 1.32 s).
    step = 172_792 / 65_535
    assert got["Time"].max() == pytest.approx(172_792, abs=step / 2)
    assert np.abs(got["Time"].to_numpy() - pdf.sort_values("id")["Time"].to_numpy()).max() \
        <= step / 2 + 1e-6
    assert got["kind"].tolist() == pdf.sort_values("id")["kind"].tolist()


def test_score_output_drops_the_encoded_passthrough_columns_on_request(spark, quantized_table,
                                                                       capsys, tmp_path):
    import pyarrow.parquet as pq

    root, _ = quantized_table
    (tmp_path / "drop.toml").write_text('[score]\npassthrough_codes = "drop"\n')
    rc, cap = _score_main(capsys, ["--model", root / "model.safetensors", "--input",
                                   root / "quantized", "--output", tmp_path / "scores",
                                   "--config", tmp_path / "drop.toml"])
    assert rc == 0, cap.err
    report = json.loads((tmp_path / "scores" / "report.json").read_text())
    assert report["passthrough"] == ["id"]
    assert report["passthrough_codes"] == {"decoded": [], "dropped": ["Time", "amount", "kind"]}
    assert pq.read_table(tmp_path / "scores" / "data").column_names == [
        "id", "prediction", "probability"]
    # Listing an encoded column in passthrough and asking to drop codes contradict: exit 2.
    (tmp_path / "both.toml").write_text('[score]\npassthrough = ["id", "Time"]\n'
                                        'passthrough_codes = "drop"\n')
    rc, cap = _score_main(capsys, ["--model", root / "model.safetensors", "--input",
                                   root / "quantized", "--output", tmp_path / "both",
                                   "--config", tmp_path / "both.toml"])
    assert rc == 2
    assert re.search(r"passthrough lists the encoded column\(s\) \['Time'\] but "
                     r"passthrough_codes = \"drop\"", cap.err), cap.err
    assert not (tmp_path / "both").exists()
