"""The rows the model job collects for fine-tuning and bias correction (--train-data): a seeded
uniform sample, not the first rows, with MLlib's double labels accepted as class values."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spark_compress.errors import DataError

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]


def _ids(spark, n: int, partitions: int, *, label=None):
    pdf = pd.DataFrame({"id": np.arange(n, dtype=np.float64),
                        "twice": 2.0 * np.arange(n)})
    if label is not None:
        pdf["label"] = label
    return spark.createDataFrame(pdf).repartition(partitions)


def test_sample_is_spread_over_the_data_not_its_first_rows(spark):
    from spark_compress.spark.modeljob import calibration_matrix

    df = spark.createDataFrame(pd.DataFrame({"id": np.arange(1000, dtype=np.float64),
                                             "twice": 2.0 * np.arange(1000)})).coalesce(1)
    x = calibration_matrix(df, ["id", "twice"], 100, seed=0)
    ids = x[:, 0]
    assert x.shape == (100, 2) and np.array_equal(x[:, 1], 2 * ids)
    assert len(set(ids.tolist())) == 100
    # The first 100 rows would be ids 0..99; a uniform sample of 100 of 0..999 has a mean near
    # 499.5 (standard error about 27.4) and reaches both ends.
    assert ids.min() < 50 and ids.max() > 950
    assert 400 < ids.mean() < 600
    assert np.count_nonzero(ids < 100) < 30


def test_sample_is_deterministic_whatever_the_partitioning_and_depends_on_the_seed(spark):
    from spark_compress.spark.modeljob import calibration_matrix

    a = calibration_matrix(_ids(spark, 500, 1), ["id", "twice"], 60, seed=7)
    b = calibration_matrix(_ids(spark, 500, 5).orderBy("twice", ascending=False),
                           ["id", "twice"], 60, seed=7)
    c = calibration_matrix(_ids(spark, 500, 3), ["id", "twice"], 60, seed=8)
    assert np.array_equal(a, b)
    assert set(a[:, 0].tolist()) != set(c[:, 0].tolist())


def test_sample_of_more_rows_than_the_data_is_all_of_it(spark):
    from spark_compress.spark.modeljob import calibration_matrix

    x = calibration_matrix(_ids(spark, 40, 3), ["id", "twice"], 1000)
    assert sorted(x[:, 0].tolist()) == list(range(40))


def test_double_labels_with_whole_values_become_class_indices(spark):
    from spark_compress.spark.modeljob import calibration_matrix

    label = (np.arange(50) % 3).astype(np.float64)  # 0.0, 1.0, 2.0 as MLlib writes them
    x, y = calibration_matrix(_ids(spark, 50, 2, label=label), ["id"], 50, label="label",
                              class_labels=True)
    assert y.dtype == np.int64
    assert np.array_equal(y, (x[:, 0].astype(np.int64) % 3))
    # As regression targets the same column stays as it is.
    _, t = calibration_matrix(_ids(spark, 50, 2, label=label + 0.25), ["id"], 50, label="label")
    assert t.dtype == np.float64 and np.array_equal(np.sort(t), np.sort(label + 0.25))


def test_fractional_and_null_class_labels_are_refused_naming_the_column(spark):
    from spark_compress.spark.modeljob import calibration_matrix

    label = np.zeros(20)
    label[13] = 0.5
    with pytest.raises(DataError, match=r"training labels in column 'label' must be whole class "
                                        r"values .*; found 0.5"):
        calibration_matrix(_ids(spark, 20, 2, label=label), ["id"], 20, label="label",
                           class_labels=True)
    label[13] = np.nan
    with pytest.raises(DataError, match=r"null or NaN labels in column 'label'"):
        calibration_matrix(_ids(spark, 20, 2, label=label), ["id"], 20, label="label",
                           class_labels=True)


# --------------------------------------------------------------------------- the job


def _main(capsys, argv):
    spec = importlib.util.spec_from_file_location("job_compress_model_ft",
                                                  REPO / "jobs" / "compress_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main([str(a) for a in argv])
    return rc, capsys.readouterr()


def test_job_finetunes_on_double_labels_and_bias_corrects_towards_the_tuned_model(
        spark, capsys, tmp_path):
    """An MLlib-style table (label 0.0/1.0) fine-tunes; the file equals the library's
    prune -> fine-tune -> quantize -> bias correction on the same sampled rows, with the
    correction aimed at the fine-tuned model."""
    import skops.io
    from sklearn.datasets import load_breast_cancer
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    from spark_compress.core.compress import Plan, LayerPlan
    from spark_compress.core.finetune import prune_finetune_compress
    from spark_compress.io.importers import import_skops
    from spark_compress.io.model_file import load_model
    from spark_compress.spark.modeljob import calibration_matrix

    d = load_breast_cancer()
    x = StandardScaler().fit_transform(d.data).astype(np.float32)
    names = [f"f{j}" for j in range(x.shape[1])]
    est = MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, random_state=0)
    est.fit(x[:400], d.target[:400])
    skops.io.dump(est, tmp_path / "mlp.skops")
    for part, rows in (("train", slice(0, 400)), ("eval", slice(400, None))):
        pdf = pd.DataFrame(x[rows], columns=names)
        pdf["label"] = d.target[rows].astype(np.float64)
        pdf.to_parquet(tmp_path / f"{part}.parquet", index=False)
    feats = ", ".join(f'"{n}"' for n in names)
    (tmp_path / "ft.toml").write_text(
        f'[plan]\nprune = 0.5\nquantize = "int8"\nfinetune_epochs = 2\nfinetune_rows = 300\n'
        f'bias_correction = 100\nseed = 4\n[eval]\nlabel = "label"\nfeatures = [{feats}]\n')
    rc, cap = _main(capsys, ["--model", tmp_path / "mlp.skops", "--config", tmp_path / "ft.toml",
                             "--eval-data", tmp_path / "eval.parquet", "--train-data",
                             tmp_path / "train.parquet", "--output", tmp_path / "out"])
    assert rc == 0, cap.err
    cm, _ = load_model(tmp_path / "out" / "model.safetensors")

    train = spark.read.parquet(str(tmp_path / "train.parquet"))
    xs, ys = calibration_matrix(train, names, 300, label="label", seed=4, class_labels=True)
    xc = calibration_matrix(train, names, 100, seed=4)
    want = prune_finetune_compress(import_skops(tmp_path / "mlp.skops"),
                                   Plan(default=LayerPlan(prune=0.5, quantize="int8"), seed=4),
                                   xs, ys, epochs=2, seed=4, x_calib=xc)
    for got, exp in zip(cm.layers, want.layers):
        assert np.array_equal(got.bias, exp.bias)
        assert np.array_equal(got.weight(), exp.weight())
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["metrics"]["compressed"]["count"] == len(d.target) - 400


def test_job_refuses_a_pickle_model_with_exit_2_and_the_skops_fix(capsys, tmp_path):
    import pickle

    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"not": "loaded"}))
    (tmp_path / "c.toml").write_text('[plan]\n[eval]\nlabel = "y"\nfeatures = ["a"]\n')
    rc, cap = _main(capsys, ["--model", tmp_path / "model.pkl", "--config", tmp_path / "c.toml",
                             "--eval-data", tmp_path / "e.parquet", "--output", tmp_path / "o"])
    assert rc == 2
    assert "model.pkl' is a pickle/joblib file, which is never loaded" in cap.err
    assert 'skops.io.dump(model, "model.skops")' in cap.err
    assert not (tmp_path / "o").exists()
