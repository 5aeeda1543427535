"""The numpy forward pass of spark_compress.core.model agrees with Spark MLlib's own models."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.spark

from pyspark.ml.classification import (  # noqa: E402
    LogisticRegression,
    MultilayerPerceptronClassifier,
)
from pyspark.ml.linalg import Vectors  # noqa: E402

from spark_compress.core.model import forward, linear, mlp_from_mllib_flat, predict  # noqa: E402

SEED = 20240601
# Iris-like flowers: sepal length/width, petal length/width (cm), three species.
SPECIES_MEANS = np.array([
    [5.0, 3.4, 1.5, 0.25],
    [5.9, 2.8, 4.3, 1.3],
    [6.6, 3.0, 5.5, 2.0],
])
SPECIES_STD = np.array([0.35, 0.35, 0.45, 0.2])


def _flowers(n_per_class: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    x = np.concatenate([rng.normal(m, SPECIES_STD, size=(n_per_class, 4)) for m in SPECIES_MEANS])
    y = np.repeat(np.arange(3), n_per_class)
    return np.round(x, 1), y


def _frame(spark, x: np.ndarray, y: np.ndarray):
    rows = [(i, Vectors.dense(r.tolist()), float(lab)) for i, (r, lab) in enumerate(zip(x, y))]
    return spark.createDataFrame(rows, ["id", "features", "label"]).repartition(3)


def _collect(model, df) -> tuple[np.ndarray, np.ndarray]:
    rows = sorted(model.transform(df).select("id", "probability", "prediction").collect())
    return (np.array([r.probability.toArray() for r in rows]),
            np.array([int(r.prediction) for r in rows]))


def test_mlp_from_mllib_flat_matches_mllib_probabilities(spark):
    x, y = _flowers()
    df = _frame(spark, x, y)
    layers = [4, 5, 3]
    mllib = MultilayerPerceptronClassifier(layers=layers, maxIter=20, seed=1).fit(df)
    expected_p, expected_label = _collect(mllib, df)

    model = mlp_from_mllib_flat(layers, mllib.weights.toArray())
    p = forward(model, x.astype(np.float32), batch_size=7)

    assert p.shape == (len(x), 3)
    np.testing.assert_allclose(p, expected_p, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(predict(model, p), expected_label)
    # The fit must have learned something, or agreement would be trivial.
    assert np.ptp(expected_p[:, 0]) > 0.1


def test_binary_logistic_regression_matches_mllib(spark):
    x, y = _flowers()
    keep = y > 0  # versicolor vs virginica: overlapping, so probabilities are not all 0/1
    x, y = x[keep], y[keep] - 1
    df = _frame(spark, x, y)
    mllib = LogisticRegression(maxIter=50, regParam=0.01).fit(df)
    expected_p, expected_label = _collect(mllib, df)

    model = linear(mllib.coefficients.toArray(), mllib.intercept, "binary")
    p = forward(model, x.astype(np.float32))

    np.testing.assert_allclose(p[:, 0], expected_p[:, 1], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(predict(model, p), expected_label)
    assert 0 < expected_label.sum() < len(expected_label)


def test_multinomial_logistic_regression_matches_mllib(spark):
    x, y = _flowers()
    df = _frame(spark, x, y)
    mllib = LogisticRegression(maxIter=50, regParam=0.01, family="multinomial").fit(df)
    expected_p, expected_label = _collect(mllib, df)

    model = linear(mllib.coefficientMatrix.toArray().T, mllib.interceptVector.toArray(),
                   "multiclass")
    p = forward(model, x.astype(np.float32))

    np.testing.assert_allclose(p, expected_p, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(predict(model, p), expected_label)
