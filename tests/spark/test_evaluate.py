"""spark_compress.spark.evaluate: one-pass Spark metrics equal the numpy core's on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from spark_compress.core.metrics import class1_scores, finalize, partial_stats, ranking_metrics
from spark_compress.core.model import forward, linear
from spark_compress.errors import DataError, SchemaError
from spark_compress.spark.evaluate import evaluate_models

pytestmark = pytest.mark.spark

SEED = 20240608
N, D = 300, 4
FEATURES = ["x0", "x1", "x2", "x3"]


def grid(a, step: float) -> np.ndarray:
    """``a`` rounded to multiples of ``step`` (a power of two).

    numpy's float32 matmul can round a row differently depending on how many rows it multiplies
    at once (BLAS kernels; 1 ulp), and Spark feeds ``forward`` small batches. Features and
    weights on a coarse dyadic grid make every product and sum exact in float32, so each row's
    output is the same in any batch and the Spark metrics must equal the local ones to 1e-9.
    """
    return np.round(np.asarray(a, dtype=np.float64) / step) * step


def make_rows(labels: np.ndarray, x: np.ndarray, label_type=np.int64) -> pd.DataFrame:
    # A copy: a DataFrame over a float array can share its memory, and a test that edits its
    # rows (a null feature) must not change the module fixture's features.
    pdf = pd.DataFrame(np.array(x, copy=True), columns=FEATURES)
    pdf["y"] = labels.astype(label_type)
    return pdf


def local_metrics(task, models, x, y):
    outs = {n: forward(m, x) for n, m in models.items()}
    first = next(iter(outs.values()))
    return {n: finalize(task, partial_stats(task, y, o, first),
                        ranking=ranking_metrics(y, class1_scores(o)) if task == "binary"
                        else None)
            for n, o in outs.items()}


def assert_metrics_equal(got, expected):
    assert list(got) == list(expected)
    for name in expected:
        assert set(got[name]) == set(expected[name]), name
        for key, value in expected[name].items():
            if value is None or isinstance(value, dict):
                assert got[name][key] == value, (name, key)
            else:
                assert got[name][key] == pytest.approx(value, abs=1e-9, rel=0), (name, key)


@pytest.fixture(scope="module")
def binary_case():
    rng = np.random.default_rng(SEED)
    x = grid(rng.normal(size=(N, D)), 1 / 16)
    w = np.array([1.0, -2.0, 0.5, 0.0])
    y = (x @ w + 0.25 + rng.normal(scale=1.0, size=N) > 0).astype(np.int64)
    models = {
        "base": linear(w, 0.25, "binary"),
        "perturbed": linear(grid(w + rng.normal(scale=0.3, size=D), 1 / 64), 0.125, "binary"),
    }
    return x, y, models


def test_binary_equals_numpy(spark, binary_case):
    x, y, models = binary_case
    df = spark.createDataFrame(make_rows(y, x)).repartition(3)
    got = evaluate_models(df, models, features=FEATURES, label="y", batch_size=16)
    expected = local_metrics("binary", models, x, y)
    assert_metrics_equal(got, expected)
    assert got["base"]["count"] == N
    assert got["base"]["agreement"] == 1.0
    assert 0.5 < got["perturbed"]["agreement"] < 1.0
    assert 0.7 < got["base"]["roc_auc"] < 1.0


def test_array_column_features(spark, binary_case):
    x, y, models = binary_case
    pdf = pd.DataFrame({"v": list(x), "y": y.astype(np.float64)})
    df = spark.createDataFrame(pdf, "v array<double>, y double").repartition(4)
    got = evaluate_models(df, models, features="v", label="y")
    assert_metrics_equal(got, local_metrics("binary", models, x, y))


def test_multiclass_equals_numpy(spark):
    rng = np.random.default_rng(SEED + 1)
    x = grid(rng.normal(size=(N, D)), 1 / 16)
    w = grid(rng.normal(size=(D, 3)), 1 / 64)
    y = np.argmax(x @ w + rng.normal(scale=0.8, size=(N, 3)), axis=1)
    models = {"a": linear(w, np.zeros(3), "multiclass"),
              "b": linear(grid(w + rng.normal(scale=0.3, size=(D, 3)), 1 / 64), None, "multiclass")}
    df = spark.createDataFrame(make_rows(y, x, np.int32)).repartition(3)
    got = evaluate_models(df, models, features=FEATURES, label="y")
    assert_metrics_equal(got, local_metrics("multiclass", models, x, y))
    assert set(got["a"]) == {"count", "accuracy", "log_loss", "agreement"}


def test_regression_equals_numpy(spark):
    rng = np.random.default_rng(SEED + 2)
    x = grid(rng.normal(size=(N, D)), 1 / 16)
    w = np.array([0.5, 1.5, -1.0, 2.0])
    y = x @ w + 1.0 + rng.normal(scale=0.1, size=N)
    models = {"a": linear(w, 1.0, "regression"),
              "b": linear(w + 0.0625, 0.875, "regression")}
    df = spark.createDataFrame(make_rows(y, x, np.float64)).repartition(3)
    got = evaluate_models(df, models, features=FEATURES, label="y", batch_size=5)
    expected = local_metrics("regression", models, x, y)
    assert_metrics_equal(got, expected)
    assert got["a"]["rmse_between"] == 0.0
    assert got["b"]["rmse_between"] > 0.0


def test_empty_input_gives_none(spark, binary_case):
    _, _, models = binary_case
    df = spark.createDataFrame([], "x0 double, x1 double, x2 double, x3 double, y int")
    got = evaluate_models(df, models, features=FEATURES, label="y")
    assert got["base"]["count"] == 0
    assert got["perturbed"]["roc_auc"] is None


def test_missing_columns_named(spark, binary_case):
    x, y, models = binary_case
    df = spark.createDataFrame(make_rows(y, x))
    with pytest.raises(SchemaError, match=r"column\(s\) 'x9', 'target' not found"):
        evaluate_models(df, models, features=["x0", "x1", "x2", "x9"], label="target")


def test_vector_column_rejected(spark, binary_case):
    from pyspark.ml.linalg import Vectors

    _, _, models = binary_case
    df = spark.createDataFrame([(Vectors.dense([1.0, 2.0, 3.0, 4.0]), 1)], ["v", "y"])
    with pytest.raises(SchemaError, match="'v' is an ML vector; convert it.*vector_to_array"):
        evaluate_models(df, models, features="v", label="y")


def test_null_feature_raises_data_error(spark, binary_case):
    x, y, models = binary_case
    pdf = make_rows(y, x)
    pdf.loc[17, "x2"] = None
    df = spark.createDataFrame(pdf.astype({"x2": "object"}).where(pdf.notna(), None),
                               "x0 double, x1 double, x2 double, x3 double, y long")
    with pytest.raises(DataError, match="feature column 'x2' holds null in 1 row"):
        evaluate_models(df, models, features=FEATURES, label="y")


def test_bad_label_raises_data_error(spark, binary_case):
    x, _, models = binary_case
    df = spark.createDataFrame(make_rows(np.full(N, 3), x))
    with pytest.raises(DataError, match="integers in 0..1; got 3.0"):
        evaluate_models(df, models, features=FEATURES, label="y")


def sklearn_ranking(y, scores):
    from sklearn.metrics import average_precision_score, roc_auc_score

    return float(roc_auc_score(y, scores)), float(average_precision_score(y, scores))


@pytest.fixture()
def many_sorted_partitions(spark):
    """Five shuffle partitions, none coalesced: the sorted score counts span several partitions,
    so the prefix totals across partitions are exercised."""
    keys = ("spark.sql.shuffle.partitions", "spark.sql.adaptive.enabled")
    saved = {k: spark.conf.get(k) for k in keys}
    spark.conf.set("spark.sql.shuffle.partitions", "5")
    spark.conf.set("spark.sql.adaptive.enabled", "false")
    yield
    for k, v in saved.items():
        spark.conf.set(k, v)


def test_ranking_equals_sklearn_with_ties_and_saturated_scores(spark, many_sorted_partitions):
    # Features on a 5-value grid (many tied rows) and weights so large that float32 sigmoids
    # saturate at exactly 0 and 1 for some rows and reach subnormal scores for others.
    rng = np.random.default_rng(SEED + 5)
    n = 400
    x = rng.integers(-2, 3, size=(n, D)).astype(np.float64)
    y = (x @ np.array([1.0, -1.0, 0.5, 0.25]) + rng.normal(scale=1.5, size=n) > 0).astype(int)
    models = {"steep": linear(np.array([40.0, -40.0, 20.0, 10.0]), 0.0, "binary"),
              "mild": linear(np.array([0.5, -0.5, 0.25, 0.125]), 0.0, "binary")}
    df = spark.createDataFrame(make_rows(y, x)).repartition(3)
    got = evaluate_models(df, models, features=FEATURES, label="y", batch_size=16)
    steep = forward(models["steep"], x)[:, 0].astype(np.float64)
    assert (steep == 0.0).any() and (steep == 1.0).any() and ((steep > 0) & (steep < 1e-30)).any()
    assert len(np.unique(steep)) < n  # ties
    for name, m in models.items():
        roc, ap = sklearn_ranking(y, forward(m, x)[:, 0].astype(np.float64))
        assert got[name]["roc_auc"] == pytest.approx(roc, abs=1e-9, rel=0), name
        assert got[name]["average_precision"] == pytest.approx(ap, abs=1e-9, rel=0), name
    # The setting really spreads the sorted counts over several partitions.
    counts = spark.createDataFrame([(0, float(v)) for v in np.unique(steep)], "model int, s double")
    assert counts.orderBy("model", F.desc("s")).rdd.getNumPartitions() > 1


def test_ranking_one_class_absent_is_null_with_reason(spark, binary_case):
    x, _, models = binary_case
    df = spark.createDataFrame(make_rows(np.zeros(N, dtype=int), x)).repartition(3)
    got = evaluate_models(df, models, features=FEATURES, label="y")
    assert got["base"]["roc_auc"] is None and got["base"]["average_precision"] is None
    assert got["base"]["undefined"] == {
        "roc_auc": "ROC AUC needs both classes; only class 0 in the labels",
        "average_precision": "average precision needs a positive label; there is none"}
    ones = spark.createDataFrame(make_rows(np.ones(N, dtype=int), x)).repartition(2)
    got = evaluate_models(ones, models, features=FEATURES, label="y")
    assert got["perturbed"]["average_precision"] == 1.0
    assert got["perturbed"]["roc_auc"] is None
