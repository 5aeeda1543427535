"""Models MLlib saves to disk, imported without Spark, score as MLlib's own transform does."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.spark

datasets = pytest.importorskip("sklearn.datasets")

from pyspark.ml.classification import (  # noqa: E402
    LogisticRegression,
    MultilayerPerceptronClassifier,
)
from pyspark.ml.linalg import Vectors  # noqa: E402
from pyspark.ml.regression import LinearRegression  # noqa: E402

from spark_compress.core.model import forward, predict  # noqa: E402
from spark_compress.io.importers import import_mllib, import_model  # noqa: E402


def _iris() -> tuple[np.ndarray, np.ndarray]:
    x, y = datasets.load_iris(return_X_y=True)
    # float32-exact inputs, so MLlib (float64) and our pass (float32) see the same numbers.
    return x.astype(np.float32).astype(np.float64), y


def _frame(spark, x: np.ndarray, y: np.ndarray):
    rows = [(i, Vectors.dense(r.tolist()), float(lab)) for i, (r, lab) in enumerate(zip(x, y))]
    return spark.createDataFrame(rows, ["id", "features", "label"]).repartition(3)


def _collect(model, df, *cols: str) -> list[np.ndarray]:
    rows = sorted(model.transform(df).select("id", *cols).collect())
    out = []
    for c in cols:
        vals = [r[c] for r in rows]
        out.append(np.array([v.toArray() if hasattr(v, "toArray") else v for v in vals]))
    return out


def _save_and_import(mllib_model, tmp_path):
    path = tmp_path / "model"
    mllib_model.write().overwrite().save(str(path))
    model = import_mllib(path)
    assert import_model(path).layers[0].shape == model.layers[0].shape
    return model


def test_binary_logistic_regression(spark, tmp_path):
    x, y = _iris()
    keep = y > 0  # versicolor vs virginica overlap, so probabilities are not all 0/1
    x, y = x[keep], y[keep] - 1
    df = _frame(spark, x, y)
    mllib = LogisticRegression(maxIter=50, regParam=0.01).fit(df)
    expected_p, expected_label = _collect(mllib, df, "probability", "prediction")

    model = _save_and_import(mllib, tmp_path)
    p = forward(model, x.astype(np.float32))

    assert model.task == "binary" and model.n_outputs == 1 and model.input_names == ()
    np.testing.assert_allclose(p[:, 0], expected_p[:, 1], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(predict(model, p), expected_label.astype(np.int64))
    assert 0 < expected_label.sum() < len(expected_label)
    assert np.ptp(expected_p[:, 1]) > 0.5


def test_multinomial_logistic_regression(spark, tmp_path):
    x, y = _iris()
    df = _frame(spark, x, y)
    mllib = LogisticRegression(maxIter=50, regParam=0.01, family="multinomial").fit(df)
    expected_p, expected_label = _collect(mllib, df, "probability", "prediction")

    model = _save_and_import(mllib, tmp_path)
    p = forward(model, x.astype(np.float32))

    assert model.task == "multiclass" and model.n_outputs == 3
    np.testing.assert_allclose(p, expected_p, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(predict(model, p), expected_label.astype(np.int64))


def test_multinomial_logistic_regression_with_l1_sparse_coefficients(spark, tmp_path):
    x, y = _iris()
    df = _frame(spark, x, y)
    mllib = LogisticRegression(maxIter=50, regParam=0.05, elasticNetParam=1.0,
                               family="multinomial").fit(df)
    assert (mllib.coefficientMatrix.toArray() == 0).any()  # the saved matrix may be sparse
    expected_p, expected_label = _collect(mllib, df, "probability", "prediction")

    model = _save_and_import(mllib, tmp_path)
    p = forward(model, x.astype(np.float32))

    saved = pq.read_table(next((tmp_path / "model" / "data").glob("part-*.parquet")))
    assert saved.column("coefficientMatrix")[0]["type"].as_py() == 0  # stored sparse
    np.testing.assert_allclose(p, expected_p, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(predict(model, p), expected_label.astype(np.int64))


def test_linear_regression(spark, tmp_path):
    x, y = _iris()
    target = x[:, 3]  # petal width from the other three measurements
    feats = x[:, :3]
    df = _frame(spark, feats, target)
    mllib = LinearRegression(maxIter=50, regParam=0.01).fit(df)
    (expected,) = _collect(mllib, df, "prediction")

    model = _save_and_import(mllib, tmp_path)
    out = forward(model, feats.astype(np.float32))

    assert model.task == "regression" and out.shape == (len(feats), 1)
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-5, atol=1e-5)
    assert np.ptp(expected) > 1.0


@pytest.mark.parametrize("layers", [[4, 5, 3], [4, 6, 4, 3]])
def test_multilayer_perceptron(spark, tmp_path, layers):
    x, y = _iris()
    df = _frame(spark, x, y)
    mllib = MultilayerPerceptronClassifier(layers=layers, maxIter=100, seed=1).fit(df)
    expected_p, expected_label = _collect(mllib, df, "probability", "prediction")

    model = _save_and_import(mllib, tmp_path)
    p = forward(model, x.astype(np.float32), batch_size=7)

    assert [l.shape for l in model.layers] == list(zip(layers[:-1], layers[1:]))
    np.testing.assert_allclose(p, expected_p, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(predict(model, p), expected_label.astype(np.int64))
    assert np.ptp(expected_p[:, 0]) > 0.1
