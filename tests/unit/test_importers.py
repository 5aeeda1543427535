"""Importers agree with the scikit-learn models they read, and refuse what they cannot trust."""

from __future__ import annotations

import json
import warnings
import zipfile

import numpy as np
import pytest

pytestmark = pytest.mark.unit

sklearn = pytest.importorskip("sklearn")
sio = pytest.importorskip("skops.io")

from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402

from spark_compress.core.model import forward, predict  # noqa: E402
from spark_compress.errors import ConfigError, FormatError  # noqa: E402
from spark_compress.io.importers import (  # noqa: E402
    SKOPS_ALLOWED_TYPES,
    detect_type,
    import_mllib,
    import_model,
    import_sklearn,
    import_skops,
    import_weights,
    is_pickle,
)


def _standardized(x):
    x = np.asarray(x, dtype=np.float64)
    return ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)


def _breast_cancer():
    x, y = load_breast_cancer(return_X_y=True)
    return _standardized(x), y


def _iris():
    x, y = load_iris(return_X_y=True)
    return _standardized(x), y


def _fit(est, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(x, y)


def _mlp(hidden, activation, x, y, max_iter=300):
    est = MLPClassifier(hidden_layer_sizes=hidden, activation=activation, max_iter=max_iter,
                        random_state=0)
    return _fit(est, x, y), x


CLASSIFIERS = {
    "logreg-binary": lambda: (_fit(LogisticRegression(max_iter=500), *_breast_cancer()),
                              _breast_cancer()[0]),
    "logreg-multinomial": lambda: (_fit(LogisticRegression(max_iter=500), *_iris()), _iris()[0]),
    "mlp-binary-relu": lambda: _mlp((8,), "relu", *_breast_cancer(), max_iter=200),
    "mlp-binary-tanh": lambda: _mlp((8, 4), "tanh", *_breast_cancer(), max_iter=200),
    "mlp-3class-relu": lambda: _mlp((10,), "relu", *_iris()),
    "mlp-3class-tanh": lambda: _mlp((10, 6), "tanh", *_iris()),
    "mlp-3class-logistic": lambda: _mlp((6,), "logistic", *_iris()),
    "mlp-3class-identity": lambda: _mlp((5,), "identity", *_iris()),
}


def _check_classifier(model, est, x):
    p = forward(model, x)
    expected = est.predict_proba(x)
    if p.shape[1] == 1:
        np.testing.assert_allclose(p[:, 0], expected[:, 1], rtol=0, atol=1e-6)
    else:
        np.testing.assert_allclose(p, expected, rtol=0, atol=1e-6)
    expected_index = np.searchsorted(est.classes_, est.predict(x))
    np.testing.assert_array_equal(predict(model, p), expected_index)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_sklearn_classifier_probabilities_match(name):
    est, x = CLASSIFIERS[name]()
    model = import_sklearn(est)
    assert model.task == ("binary" if len(est.classes_) == 2 else "multiclass")
    assert model.n_outputs == (1 if len(est.classes_) == 2 else len(est.classes_))
    _check_classifier(model, est, x)
    # The fit must spread probabilities, or agreement would be trivial.
    assert np.ptp(est.predict_proba(x)[:, 0]) > 0.5


def _diabetes():
    x, y = load_diabetes(return_X_y=True)
    return _standardized(x), y


REGRESSORS = {
    "linreg": lambda: _fit(LinearRegression(), *_diabetes()),
    "linreg-2-targets": lambda: _fit(LinearRegression(), _diabetes()[0],
                                     np.stack([_diabetes()[1], -2 * _diabetes()[1] + 5], 1)),
    "mlp-regressor-relu": lambda: _fit(
        MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=0), *_diabetes()),
    "mlp-regressor-tanh-2-targets": lambda: _fit(
        MLPRegressor(hidden_layer_sizes=(8,), activation="tanh", max_iter=300, random_state=0),
        _diabetes()[0], np.stack([_diabetes()[1], _diabetes()[0][:, 2]], 1)),
}


@pytest.mark.parametrize("name", sorted(REGRESSORS))
def test_sklearn_regressor_predictions_match(name):
    est = REGRESSORS[name]()
    x = _diabetes()[0]
    model = import_sklearn(est)
    expected = est.predict(x).reshape(len(x), -1)
    assert model.task == "regression" and model.n_outputs == expected.shape[1]
    np.testing.assert_allclose(forward(model, x), expected, rtol=1e-4, atol=1e-4)


def test_sklearn_input_names_from_feature_names_in():
    pd = pytest.importorskip("pandas")
    data = load_iris(as_frame=True)
    est = _fit(LogisticRegression(max_iter=500), data.data, data.target)
    model = import_sklearn(est)
    assert isinstance(data.data, pd.DataFrame)
    assert model.input_names == tuple(data.data.columns)
    p = forward(model, data.data.to_numpy(np.float32))
    np.testing.assert_allclose(p, est.predict_proba(data.data), rtol=0, atol=1e-6)


def test_sklearn_without_feature_names_has_no_input_names():
    est, _ = CLASSIFIERS["logreg-multinomial"]()
    assert import_sklearn(est).input_names == ()


def test_sklearn_unsupported_estimator_is_refused():
    est = _fit(DecisionTreeClassifier(max_depth=2), *_iris())
    with pytest.raises(ConfigError, match="DecisionTreeClassifier.*supported"):
        import_sklearn(est)


def test_sklearn_unfitted_estimator_is_refused():
    with pytest.raises(ConfigError, match="LogisticRegression is not fitted"):
        import_sklearn(LogisticRegression())


def test_sklearn_poisson_mlp_regressor_is_refused():
    x, y = _diabetes()
    est = _fit(MLPRegressor(hidden_layer_sizes=(4,), loss="poisson", max_iter=20,
                            random_state=0), x, y)
    with pytest.raises(ConfigError, match="output activation 'exp'"):
        import_sklearn(est)


def test_sklearn_multilabel_mlp_is_refused():
    x, y = _iris()
    labels = np.stack([y == 0, y == 2], axis=1).astype(int)
    est = _fit(MLPClassifier(hidden_layer_sizes=(4,), max_iter=50, random_state=0), x, labels)
    with pytest.raises(ConfigError, match="multilabel"):
        import_sklearn(est)


# --------------------------------------------------------------------------- skops


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_skops_round_trip_classifier(name, tmp_path):
    est, x = CLASSIFIERS[name]()
    path = tmp_path / "model.skops"
    sio.dump(est, path)
    _check_classifier(import_skops(path), est, x)
    _check_classifier(import_model(path), est, x)


@pytest.mark.parametrize("name", sorted(REGRESSORS))
def test_skops_round_trip_regressor(name, tmp_path):
    est = REGRESSORS[name]()
    x = _diabetes()[0]
    path = tmp_path / "model.skops"
    sio.dump(est, path)
    np.testing.assert_allclose(forward(import_skops(path), x),
                               est.predict(x).reshape(len(x), -1), rtol=1e-4, atol=1e-4)


class Gadget:
    """A type no allowlist knows: loading it would construct arbitrary objects."""

    def __init__(self, payload: str = "rm -rf") -> None:
        self.payload = payload


def test_skops_file_with_disallowed_type_is_refused(tmp_path):
    path = tmp_path / "evil.skops"
    sio.dump({"model": CLASSIFIERS["logreg-binary"]()[0], "extra": Gadget()}, path)
    with pytest.raises(ConfigError, match=r"not allowed.*test_importers\.Gadget"):
        import_skops(path)


def test_skops_file_of_unsupported_trusted_estimator_is_refused(tmp_path):
    path = tmp_path / "ridge.skops"
    sio.dump(_fit(Ridge(), *_diabetes()), path)
    assert sio.get_untrusted_types(file=path) == []  # skops itself would load it
    with pytest.raises(ConfigError, match="cannot import a sklearn.*Ridge"):
        import_skops(path)


def test_skops_corrupt_file_is_a_format_error(tmp_path):
    path = tmp_path / "broken.skops"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(FormatError, match="broken.skops.*not a readable skops file"):
        import_skops(path)


def test_skops_missing_file_is_a_format_error(tmp_path):
    with pytest.raises(FormatError, match="nothere.skops.*does not exist"):
        import_skops(tmp_path / "nothere.skops")


# --------------------------------------------------------------------------- weight files


def _mlp_tensors(rng):
    return {
        "fc1.w": rng.normal(size=(5, 4)).astype(np.float32),  # 3 features + 2 embedding dims
        "fc1.b": rng.normal(size=4).astype(np.float32),
        "fc2.w": rng.normal(size=(4, 3)).astype(np.float32),
        "fc2.b": rng.normal(size=3).astype(np.float32),
        "emb.city": rng.normal(size=(6, 2)).astype(np.float32),
    }


SPEC = {
    "task": "multiclass",
    "layers": [{"weight": "fc1.w", "bias": "fc1.b", "activation": "relu"},
               {"weight": "fc2.w", "bias": "fc2.b", "activation": "softmax"}],
    "input_names": ["a", "b", "c"],
    "embeddings": [{"table": "emb.city", "input": "city", "combiner": "mean"}],
}


def _expected(t, x, ids):
    h = np.concatenate([x, t["emb.city"][ids]], axis=1)
    h = np.maximum(h @ t["fc1.w"] + t["fc1.b"], 0)
    z = h @ t["fc2.w"] + t["fc2.b"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _write(tmp_path, tensors, spec, stem="model", spec_suffix=".json"):
    wpath = tmp_path / f"{stem}.npz"
    np.savez(wpath, **tensors)
    spath = tmp_path / f"{stem}{spec_suffix}"
    spath.write_text(json.dumps(spec))
    return wpath, spath


def test_npz_json_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    t = _mlp_tensors(rng)
    wpath, spath = _write(tmp_path, t, SPEC)
    x = rng.normal(size=(9, 3)).astype(np.float32)
    ids = rng.integers(0, 6, size=9)
    for model in (import_weights(wpath, spath), import_model(wpath)):
        assert model.input_names == ("a", "b", "c") and model.n_features == 3
        np.testing.assert_allclose(forward(model, x, {"city": ids}), _expected(t, x, ids),
                                   rtol=0, atol=1e-6)


def test_npz_toml_spec_with_out_in_layout_and_no_bias(tmp_path):
    rng = np.random.default_rng(3)
    w = rng.normal(size=(2, 4)).astype(np.float32)  # PyTorch nn.Linear: (out, in)
    wpath = tmp_path / "lin.npz"
    np.savez(wpath, w=w)
    spath = tmp_path / "lin.toml"
    spath.write_text('task = "regression"\nweight_layout = "out_in"\n'
                     '[[layers]]\nweight = "w"\nactivation = "identity"\n')
    model = import_weights(wpath, spath)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    assert model.n_features == 4 and model.layers[0].bias is None
    np.testing.assert_allclose(forward(model, x), x @ w.T, rtol=0, atol=1e-6)


def test_weight_file_layers_are_named_for_the_plan(tmp_path):
    rng = np.random.default_rng(7)
    t = _mlp_tensors(rng)
    model = import_weights(*_write(tmp_path, t, SPEC))
    assert [l.name for l in model.layers] == ["fc1", "fc2"]  # from "fc1.w", "fc2.w"
    spec = json.loads(json.dumps(SPEC))
    spec["layers"][1]["name"] = "head"
    model = import_weights(*_write(tmp_path, t, spec, stem="named"))
    assert [l.name for l in model.layers] == ["fc1", "head"]
    spec["layers"][1]["name"] = "fc1"  # clashes with the derived name of layer 0: both unnamed
    model = import_weights(*_write(tmp_path, t, spec, stem="clash"))
    assert [l.name for l in model.layers] == ["", "fc1"]


def test_safetensors_round_trip(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(11)
    t = _mlp_tensors(rng)
    wpath = tmp_path / "model.safetensors"
    st.save_file(t, str(wpath))
    (tmp_path / "model.json").write_text(json.dumps(SPEC))
    model = import_model(wpath)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    ids = np.array([0, 5, 2, 2])
    np.testing.assert_allclose(forward(model, x, {"city": ids}), _expected(t, x, ids),
                               rtol=0, atol=1e-6)


def test_weights_missing_tensor_is_named(tmp_path):
    t = _mlp_tensors(np.random.default_rng(0))
    del t["fc2.b"]
    wpath, spath = _write(tmp_path, t, SPEC)
    with pytest.raises(FormatError, match=r"tensor 'fc2.b' \(layers\[1\].bias\) is not in"):
        import_weights(wpath, spath)


def test_weights_shape_mismatch_names_the_layer(tmp_path):
    t = _mlp_tensors(np.random.default_rng(0))
    t["fc2.w"] = np.zeros((5, 3), dtype=np.float32)
    wpath, spath = _write(tmp_path, t, SPEC)
    with pytest.raises(FormatError, match=r"layers\[1\]\.weight has shape \(5, 3\)"):
        import_weights(wpath, spath)


def test_weights_object_array_is_refused_without_pickle(tmp_path):
    t = _mlp_tensors(np.random.default_rng(0))
    t["fc1.b"] = np.array([{"x": 1}], dtype=object)
    wpath, spath = _write(tmp_path, t, SPEC)
    with pytest.raises(FormatError, match="model.npz.*without pickle"):
        import_weights(wpath, spath)


def test_weights_corrupt_npz_is_a_format_error(tmp_path):
    wpath, spath = _write(tmp_path, _mlp_tensors(np.random.default_rng(0)), SPEC)
    wpath.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(FormatError, match="model.npz.*not a readable .npz"):
        import_weights(wpath, spath)


def test_weights_corrupt_safetensors_is_a_format_error(tmp_path):
    pytest.importorskip("safetensors.numpy")
    wpath = tmp_path / "m.safetensors"
    wpath.write_bytes(b"\xff" * 16)
    spath = tmp_path / "m.json"
    spath.write_text(json.dumps(SPEC))
    with pytest.raises(FormatError, match="m.safetensors.*not a readable .safetensors"):
        import_weights(wpath, spath)


def test_weights_safetensors_missing_package_is_a_config_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    wpath = tmp_path / "m.safetensors"
    wpath.write_bytes(b"\x00" * 16)
    spath = tmp_path / "m.json"
    spath.write_text(json.dumps(SPEC))
    with pytest.raises(ConfigError, match="needs safetensors: pip install safetensors"):
        import_weights(wpath, spath)


@pytest.mark.parametrize("spec, match", [
    ({**SPEC, "extra": 1}, r"unknown key\(s\) \['extra'\]"),
    ({k: v for k, v in SPEC.items() if k != "layers"}, r"missing the key\(s\) \['layers'\]"),
    ({**SPEC, "layers": []}, "'layers' must be a non-empty list"),
    ({**SPEC, "layers": [{"weight": "fc1.w", "activation": "gelu"}]},
     r"layers\[0\]\.activation must be one of"),
    ({**SPEC, "layers": [{"weight": "fc1.w", "kernel": "x"}]}, r"unknown key\(s\) \['kernel'\]"),
    ({**SPEC, "task": "ranking"}, "task must be one of"),
    ({**SPEC, "weight_layout": "nhwc"}, "'weight_layout' must be one of"),
    ({**SPEC, "input_names": "abc"}, "'input_names' must be a list of strings"),
    ({**SPEC, "embeddings": [{"table": "emb.city"}]}, r"missing the key\(s\) \['input'\]"),
    ({**SPEC, "layers": [{"weight": 3}]}, r"layers\[0\]\.weight must be a tensor name"),
])
def test_weights_bad_spec_is_a_config_error(tmp_path, spec, match):
    wpath, spath = _write(tmp_path, _mlp_tensors(np.random.default_rng(0)), spec)
    with pytest.raises(ConfigError, match=match):
        import_weights(wpath, spath)


def test_weights_unparsable_spec_is_a_format_error(tmp_path):
    wpath, spath = _write(tmp_path, _mlp_tensors(np.random.default_rng(0)), SPEC)
    spath.write_text("{not json")
    with pytest.raises(FormatError, match="model.json.*cannot be parsed"):
        import_weights(wpath, spath)


def test_weights_missing_files_are_format_errors(tmp_path):
    wpath, spath = _write(tmp_path, _mlp_tensors(np.random.default_rng(0)), SPEC)
    with pytest.raises(FormatError, match="gone.json.*does not exist"):
        import_weights(wpath, tmp_path / "gone.json")
    with pytest.raises(FormatError, match="gone.npz.*does not exist"):
        import_weights(tmp_path / "gone.npz", spath)


def test_weights_wrong_suffixes_are_config_errors(tmp_path):
    wpath, spath = _write(tmp_path, _mlp_tensors(np.random.default_rng(0)), SPEC)
    with pytest.raises(ConfigError, match="must be a .json or .toml file"):
        import_weights(wpath, tmp_path / "spec.yaml")
    other = tmp_path / "model.pt"
    other.write_bytes(b"x")
    with pytest.raises(ConfigError, match="must be .npz or .safetensors"):
        import_weights(other, spath)


# --------------------------------------------------------------------------- dispatcher


def test_import_model_undetectable_asks_for_model_type(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x00\x04 not a model")
    with pytest.raises(ConfigError, match="pass --model-type"):
        import_model(path)
    lonely = tmp_path / "lonely.npz"
    np.savez(lonely, w=np.zeros((2, 1), np.float32))
    with pytest.raises(ConfigError, match="pass --model-type"):
        import_model(lonely)


def test_import_model_weights_without_spec_is_a_config_error(tmp_path):
    lonely = tmp_path / "lonely.npz"
    np.savez(lonely, w=np.zeros((2, 1), np.float32))
    with pytest.raises(ConfigError, match="no spec found.*lonely.json or lonely.toml"):
        import_model(lonely, "weights")


def test_import_model_with_explicit_spec_path(tmp_path):
    rng = np.random.default_rng(5)
    t = _mlp_tensors(rng)
    wpath, spath = _write(tmp_path, t, SPEC, stem="a")
    renamed = spath.rename(tmp_path / "architecture.json")
    model = import_model(wpath, spec_path=renamed)
    assert model.task == "multiclass" and model.n_outputs == 3


def test_import_model_unknown_type_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'model_type' parameter must be one of"):
        import_model(tmp_path, "onnx")


# --------------------------------------------------------------------------- MLlib (no Spark)


def _mllib_dir(tmp_path, cls, params=None, data=None):
    """A minimal MLlib save directory; data rows are written with pyarrow as Spark does."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "part-00000").write_text(json.dumps(
        {"class": cls, "paramMap": params or {}, "defaultParamMap": {}}) + "\n")
    (tmp_path / "data").mkdir()
    if data is not None:
        pq.write_table(pa.Table.from_pylist([data]), tmp_path / "data" / "part-00000.parquet")
    return tmp_path


def _dense(values):
    return {"type": 1, "size": None, "indices": None, "values": list(values)}


def test_mllib_unknown_class_names_it_and_lists_supported(tmp_path):
    cls = "org.apache.spark.ml.classification.RandomForestClassificationModel"
    path = _mllib_dir(tmp_path, cls)
    with pytest.raises(ConfigError, match="RandomForestClassificationModel.*supported MLlib "
                                          "classes.*LogisticRegressionModel"):
        import_mllib(path)


def test_mllib_missing_metadata_is_a_format_error(tmp_path):
    (tmp_path / "metadata").mkdir()
    with pytest.raises(FormatError, match="metadata'? has no part-\\* file"):
        import_mllib(tmp_path)


def test_mllib_corrupt_metadata_names_the_file(tmp_path):
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "part-00000").write_text("{class: nope\n")
    with pytest.raises(FormatError, match="part-00000.*not MLlib metadata"):
        import_mllib(tmp_path)


def test_mllib_missing_data_is_a_format_error(tmp_path):
    path = _mllib_dir(tmp_path, "org.apache.spark.ml.regression.LinearRegressionModel")
    with pytest.raises(FormatError, match="data'? has no part-\\* Parquet file"):
        import_mllib(path)


def test_mllib_corrupt_parquet_names_the_file(tmp_path):
    path = _mllib_dir(tmp_path, "org.apache.spark.ml.regression.LinearRegressionModel")
    (path / "data" / "part-00000-x.snappy.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(FormatError, match="part-00000-x.snappy.parquet.*not a readable Parquet"):
        import_mllib(path)


def test_mllib_wrong_data_schema_names_the_file_and_field(tmp_path):
    path = _mllib_dir(tmp_path, "org.apache.spark.ml.regression.LinearRegressionModel",
                      data={"intercept": 1.0})
    with pytest.raises(FormatError, match="part-00000.parquet.*missing or bad field 'coeff"):
        import_mllib(path)


def test_mllib_sparse_vector_and_matrix_are_decoded(tmp_path):
    # A binomial model stored compressed: coefficientMatrix is CSR (isTransposed) 1 x 4.
    data = {
        "numClasses": 2, "numFeatures": 4, "isMultinomial": False,
        "interceptVector": {"type": 0, "size": 1, "indices": [0], "values": [0.5]},
        "coefficientMatrix": {"type": 0, "numRows": 1, "numCols": 4, "colPtrs": [0, 2],
                              "rowIndices": [1, 3], "values": [2.0, -1.0],
                              "isTransposed": True},
    }
    model = import_mllib(_mllib_dir(tmp_path, "org.apache.spark.ml.classification."
                                              "LogisticRegressionModel", data=data))
    np.testing.assert_array_equal(model.layers[0].weight[:, 0], [0, 2, 0, -1])
    np.testing.assert_array_equal(model.layers[0].bias, [0.5])
    assert model.task == "binary" and model.layers[0].activation == "sigmoid"


def test_mllib_dense_column_major_matrix_is_decoded(tmp_path):
    data = {
        "numClasses": 3, "numFeatures": 2, "isMultinomial": True,
        "interceptVector": _dense([0, 1, 2]),
        # 3 x 2 matrix [[1, 4], [2, 5], [3, 6]] stored column by column.
        "coefficientMatrix": {"type": 1, "numRows": 3, "numCols": 2, "colPtrs": None,
                              "rowIndices": None, "values": [1, 2, 3, 4, 5, 6],
                              "isTransposed": False},
    }
    model = import_mllib(_mllib_dir(tmp_path, "org.apache.spark.ml.classification."
                                              "LogisticRegressionModel", data=data))
    np.testing.assert_array_equal(model.layers[0].weight, [[1, 2, 3], [4, 5, 6]])
    assert model.task == "multiclass"


def test_mllib_non_default_threshold_warns(tmp_path):
    data = {"numClasses": 2, "numFeatures": 1, "isMultinomial": False,
            "interceptVector": _dense([0.0]),
            "coefficientMatrix": {"type": 1, "numRows": 1, "numCols": 1, "colPtrs": None,
                                  "rowIndices": None, "values": [1.0], "isTransposed": True}}
    path = _mllib_dir(tmp_path, "org.apache.spark.ml.classification.LogisticRegressionModel",
                      params={"threshold": 0.7}, data=data)
    with pytest.warns(UserWarning, match="threshold=0.7"):
        import_mllib(path)


def test_mllib_mlp_weight_count_mismatch_names_the_file(tmp_path):
    path = _mllib_dir(tmp_path, "org.apache.spark.ml.classification."
                                "MultilayerPerceptronClassificationModel",
                      params={"layers": [2, 3]}, data={"weights": _dense([0.1] * 5)})
    with pytest.raises(FormatError, match=r"part-00000.parquet.*need 9 weights; got 5"):
        import_mllib(path)


def test_import_model_detects_mllib_directory(tmp_path):
    path = _mllib_dir(tmp_path, "org.apache.spark.ml.regression.LinearRegressionModel",
                      data={"intercept": 1.5, "coefficients": _dense([2.0, -1.0]), "scale": 1.0})
    model = import_model(path)
    np.testing.assert_allclose(forward(model, np.array([[1, 1], [0, 2]], np.float32))[:, 0],
                               [2.5, -0.5], rtol=0, atol=1e-6)


def test_skops_archive_is_really_zip(tmp_path):
    # Guard for the refusal test above: a skops file is a zip whose schema lists the types.
    path = tmp_path / "m.skops"
    sio.dump(CLASSIFIERS["logreg-binary"]()[0], path)
    assert zipfile.is_zipfile(path)


# --------------------------------------------------------------------------- pipelines

EPS32 = float(np.finfo(np.float32).eps)

SCALER_CHAINS = {
    "standard": lambda: [StandardScaler()],
    "standard-no-mean": lambda: [StandardScaler(with_mean=False)],
    "standard-no-std": lambda: [StandardScaler(with_std=False)],
    "standard-neither": lambda: [StandardScaler(with_mean=False, with_std=False)],
    "minmax": lambda: [MinMaxScaler()],
    "minmax-range": lambda: [MinMaxScaler(feature_range=(-1.0, 2.0))],
    "maxabs": lambda: [MaxAbsScaler()],
    "chain-standard-minmax-maxabs": lambda: [StandardScaler(), MinMaxScaler((-1.0, 2.0)),
                                             MaxAbsScaler()],
    "chain-maxabs-standard": lambda: [MaxAbsScaler(), StandardScaler(with_mean=False)],
}


def _raw(loader):
    """A real table, unscaled (the pipeline scales it), with a constant column appended: its
    variance and range are 0, so every scaler keeps scale_ = 1 (or the feature range) for it."""
    x, y = loader(return_X_y=True)
    # 600 rows keep the fits quick; the models need not converge for the comparison.
    x, y = x[:600], y[:600]
    return np.column_stack([x, np.full(len(x), 3.5)]), y


def _tolerance(model, x):
    """Per row, a first-order bound of float32 rounding in the folded forward pass (unit
    roundoff u = eps/2): each layer's dot products of length n carry (n + 2) u of
    sum |h_i w_i| + |b| (n for the sum, 2 for rounding inputs and weights to float32), and the
    error of its input passes on through |W| (the activations are 1-Lipschitz, and so are the
    final sigmoid and softmax, so the bound holds for the probabilities)."""
    u = EPS32 / 2
    h = np.asarray(x, dtype=np.float64)
    err = np.zeros_like(h)
    for layer in model.layers:
        w = layer.weight.astype(np.float64)
        b = np.zeros(w.shape[1]) if layer.bias is None else layer.bias.astype(np.float64)
        err = err @ np.abs(w) + (w.shape[0] + 2) * u * (np.abs(h) @ np.abs(w) + np.abs(b))
        z = h @ w + b
        h = (np.maximum(z, 0) if layer.activation == "relu" else
             np.tanh(z) if layer.activation == "tanh" else z)
    return err.max(axis=1)


def _check_pipeline_classifier(model, pipe, x):
    p = forward(model, x).astype(np.float64)
    expected = pipe.predict_proba(x)
    if p.shape[1] == 1:
        expected = expected[:, 1:]
    tol = _tolerance(model, x)
    assert tol.max() < 1e-3  # the bound is tight enough to mean something
    assert np.all(np.abs(p - expected) <= tol[:, None] + 1e-12)
    # Labels agree except where the top two probabilities are within the tolerance.
    if expected.shape[1] == 1:
        clear = np.abs(expected[:, 0] - 0.5) > tol
    else:
        top2 = np.sort(expected, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 2 * tol
    want = np.searchsorted(pipe.classes_, pipe.predict(x))
    np.testing.assert_array_equal(predict(model, forward(model, x))[clear], want[clear])


@pytest.mark.parametrize("chain", sorted(SCALER_CHAINS))
@pytest.mark.parametrize("data", ["breast_cancer", "digits"])
def test_pipeline_logistic_regression_matches_predict_proba(chain, data):
    x, y = _raw(load_breast_cancer if data == "breast_cancer" else load_digits)
    pipe = _fit(make_pipeline(*SCALER_CHAINS[chain](), LogisticRegression(max_iter=60)), x, y)
    model = import_sklearn(pipe)
    assert model.task == ("binary" if data == "breast_cancer" else "multiclass")
    _check_pipeline_classifier(model, pipe, x)
    # Off the training data, the constant column's other values are treated as sklearn does.
    x2 = x.copy()
    x2[:, -1] = np.linspace(-2.0, 9.0, len(x))
    _check_pipeline_classifier(model, pipe, x2)


@pytest.mark.parametrize("chain", ["standard", "minmax", "maxabs",
                                   "chain-standard-minmax-maxabs"])
@pytest.mark.parametrize("data", ["breast_cancer", "digits"])
def test_pipeline_mlp_classifier_matches_predict_proba(chain, data):
    x, y = _raw(load_breast_cancer if data == "breast_cancer" else load_digits)
    est = MLPClassifier(hidden_layer_sizes=(16,), max_iter=60, random_state=0)
    pipe = _fit(make_pipeline(*SCALER_CHAINS[chain](), est), x, y)
    model = import_sklearn(pipe)
    assert [l.weight.shape for l in model.layers] == [w.shape for w in est.coefs_]
    _check_pipeline_classifier(model, pipe, x)


@pytest.mark.parametrize("chain", ["standard", "minmax", "chain-standard-minmax-maxabs"])
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_pipeline_regressors_match_predict(chain, kind):
    x, y = _raw(load_diabetes)
    x = x * 100 + 50  # the bundled table is already centred; make the scalers do work
    est = (LinearRegression() if kind == "linear"
           else MLPRegressor(hidden_layer_sizes=(16,), max_iter=200, random_state=0))
    pipe = _fit(make_pipeline(*SCALER_CHAINS[chain](), est), x, y)
    model = import_sklearn(pipe)
    out = forward(model, x)[:, 0].astype(np.float64)
    expected = pipe.predict(x)
    assert np.all(np.abs(out - expected) <= _tolerance(model, x) + 1e-9)


def test_pipeline_fold_is_the_hand_formula_for_a_standard_scaler():
    x = np.array([[1.0, 10.0, 7.0], [3.0, 30.0, 7.0], [5.0, 20.0, 7.0], [7.0, 0.0, 7.0]])
    y = np.array([0, 1, 1, 0])
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    sc, lr = pipe[0], pipe[1]
    assert sc.scale_[2] == 1.0  # zero variance: sklearn divides by 1
    w = lr.coef_[0]
    model = import_sklearn(pipe)
    np.testing.assert_allclose(model.layers[0].weight[:, 0], w / sc.scale_, rtol=1e-7)
    np.testing.assert_allclose(model.layers[0].bias[0],
                               lr.intercept_[0] - np.sum(sc.mean_ / sc.scale_ * w), rtol=1e-6)


def test_pipeline_names_come_from_the_pipeline_and_passthrough_and_nesting_work():
    pd = pytest.importorskip("pandas")
    x, y = _raw(load_breast_cancer)
    frame = pd.DataFrame(x, columns=[f"c{j}" for j in range(x.shape[1])])
    inner = make_pipeline(StandardScaler(), "passthrough")
    pipe = _fit(Pipeline([("prep", inner), ("skip", None), ("mm", MinMaxScaler()),
                          ("clf", LogisticRegression(max_iter=60))]), frame, y)
    model = import_sklearn(pipe)
    assert model.input_names == tuple(frame.columns)
    _check_pipeline_classifier(model, pipe, frame)


@pytest.mark.parametrize("steps,match", [
    (lambda: [MinMaxScaler(clip=True), LogisticRegression()],
     r"pipeline step 'minmaxscaler' \(MinMaxScaler\) has clip=True: clipping to "
     r"feature_range=\(0, 1\) is not an affine map .*refit it with clip=False"),
    (lambda: [PCA(3), LogisticRegression()],
     r"pipeline step 'pca' \(PCA\) is a sklearn.decomposition._pca.PCA; only "
     r"\['StandardScaler', 'MinMaxScaler', 'MaxAbsScaler'\] can come before the estimator"),
    (lambda: [StandardScaler(), Ridge()],
     r"the last step 'ridge' of the Pipeline is a sklearn.linear_model._ridge.Ridge; it must be "
     r"one of \['LogisticRegression'"),
    (lambda: [StandardScaler(), MinMaxScaler()], r"the last step 'minmaxscaler' .* must be one"),
])
def test_pipeline_refusals_name_the_step(steps, match):
    x, y = _raw(load_breast_cancer)
    pipe = _fit(make_pipeline(*steps()), x, y)
    with pytest.raises(ConfigError, match=match):
        import_sklearn(pipe)


def test_pipeline_with_an_unfitted_scaler_is_refused():
    x, y = _raw(load_breast_cancer)
    lr = _fit(LogisticRegression(max_iter=60), x, y)
    pipe = Pipeline([("scale", StandardScaler()), ("lr", lr)])
    with pytest.raises(ConfigError, match=r"pipeline step 'scale' \(StandardScaler\) is not "
                                          r"fitted"):
        import_sklearn(pipe)


def test_pipeline_skops_round_trip_and_allow_list(tmp_path):
    x, y = _raw(load_digits)
    pipe = _fit(make_pipeline(StandardScaler(), MinMaxScaler(), MaxAbsScaler(),
                              MLPClassifier(hidden_layer_sizes=(16,), max_iter=60,
                                            random_state=0)), x, y)
    path = tmp_path / "pipe.skops"
    sio.dump(pipe, path)
    for t in sio.get_untrusted_types(file=path):
        assert t in SKOPS_ALLOWED_TYPES
    assert {"sklearn.pipeline.Pipeline", "sklearn.preprocessing._data.StandardScaler",
            "sklearn.preprocessing._data.MinMaxScaler",
            "sklearn.preprocessing._data.MaxAbsScaler"} <= SKOPS_ALLOWED_TYPES
    _check_pipeline_classifier(import_skops(path), pipe, x)
    _check_pipeline_classifier(import_model(path), pipe, x)


# --------------------------------------------------------------------------- pickle refusal


class Tripwire:
    """Unpickling this creates ``path``: the proof that a file was (not) unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


PICKLE_MESSAGE = (r"is a pickle/joblib file, which is never loaded \(unpickling runs code from "
                  r"the file\); save the fitted model with skops instead: `import skops.io; "
                  r"skops.io.dump\(model, \"model.skops\"\)`, and pass model.skops")


@pytest.mark.parametrize("name", ["model.pkl", "model.pickle", "model.joblib", "model.skops",
                                  "model"])
def test_pickle_files_are_refused_with_the_skops_fix_and_never_unpickled(tmp_path, name):
    import pickle

    tripwire = tmp_path / "unpickled"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(Tripwire(tripwire), protocol=4))
    assert is_pickle(path)
    with pytest.raises(ConfigError, match=PICKLE_MESSAGE):
        import_model(path)
    with pytest.raises(ConfigError, match=PICKLE_MESSAGE):
        detect_type(path)
    with pytest.raises(ConfigError, match=PICKLE_MESSAGE):
        import_model(path, "sklearn-skops")
    with pytest.raises(ConfigError, match=PICKLE_MESSAGE):
        import_skops(path)
    assert not tripwire.exists()


def test_joblib_dump_of_a_pipeline_is_refused(tmp_path):
    joblib = pytest.importorskip("joblib")
    x, y = _raw(load_breast_cancer)
    path = tmp_path / "pipe.joblib"
    joblib.dump(_fit(make_pipeline(StandardScaler(), LogisticRegression(max_iter=60)), x, y),
                path)
    with pytest.raises(ConfigError, match=r"pipe.joblib' is a pickle/joblib file"):
        import_model(path)


def test_pickle_magic_is_not_looked_for_in_safetensors_files(tmp_path):
    # A safetensors file starts with its header length, little-endian: 640 is b"\x80\x02...".
    path = tmp_path / "w.safetensors"
    path.write_bytes((640).to_bytes(8, "little") + b"{}")
    assert not is_pickle(path)
    assert not is_pickle(tmp_path / "missing.pkl")


# --------------------------------------------------------------------------- plan keys


def test_numerically_named_weights_file_layers_take_the_plan_by_name(tmp_path):
    """A PyTorch nn.Sequential(Linear, ReLU, Linear, ReLU, Linear) export: tensors "0.weight",
    "2.weight", "4.weight", so the layers are named "0", "2", "4". [layers.2] compresses the
    layer named "2" (the second), [layers."#2"] the third, and [layers.1] is refused."""
    from spark_compress.core.compress import compress
    from spark_compress.io.model_config import parse_model_config

    rng = np.random.default_rng(2)
    shapes = {"0": (5, 4), "2": (4, 3), "4": (3, 1)}  # (in, out)
    tensors = {}
    for nm, (nin, nout) in shapes.items():
        tensors[f"{nm}.weight"] = rng.normal(size=(nout, nin)).astype(np.float32)
        tensors[f"{nm}.bias"] = rng.normal(size=nout).astype(np.float32)
    np.savez(tmp_path / "seq.npz", **tensors)
    (tmp_path / "seq.toml").write_text(
        'task = "binary"\nweight_layout = "out_in"\n' + "".join(
            f'[[layers]]\nweight = "{nm}.weight"\nbias = "{nm}.bias"\nactivation = '
            f'"{"sigmoid" if nm == "4" else "relu"}"\n' for nm in shapes))
    model = import_model(tmp_path / "seq.npz")
    assert [l.name for l in model.layers] == ["0", "2", "4"]
    cfg = parse_model_config({"plan": {}, "layers": {"2": {"quantize": "int8"},
                                                     "#2": {"quantize": "int4"}}})
    cm = compress(model, cfg.plan)
    assert [l.w.kind for l in cm.layers] == ["float32", "int8", "int4"]
    bad = parse_model_config({"plan": {}, "layers": {"1": {"quantize": "int8"}}})
    with pytest.raises(ConfigError, match=r"the plan names layer '1', which the model does not "
                                          r"have; it has 3 layer\(s\): #0 '0', #1 '2', #2 '4'; "
                                          r"a plan key is a layer name: for the layer at "
                                          r"position 1 write '#1'"):
        compress(model, bad.plan)
