"""Turn trained models from other tools into a :class:`~spark_compress.core.model.Model`.

Nothing here runs code that came with the model: MLlib directories are read as JSON + Parquet
(no SparkSession), skops files are loaded only when every type they need is on an allowlist,
weight files are ``.npz`` (``allow_pickle=False``) or ``.safetensors``. Pickle and joblib are
never used. Every importer returns a model that passed :func:`validate`.

==============  =============================================  ===========================
``model_type``  what                                           entry point
==============  =============================================  ===========================
``mllib``       a directory written by ``model.save(path)``    :func:`import_mllib`
``sklearn-skops`` a ``.skops`` file of a supported estimator   :func:`import_skops`
``weights``     ``.npz``/``.safetensors`` + a JSON/TOML spec   :func:`import_weights`
==============  =============================================  ===========================

A fitted scikit-learn object in memory goes through :func:`import_sklearn`; a ``Pipeline`` of
scalers (:data:`SKLEARN_SCALERS`) followed by one of :data:`SKLEARN_CLASSES` imports with the
scaling folded into the first layer. Classifiers give class *indices* (``0 .. k-1``, in the
order of the source's classes), not the labels. A pickle or joblib file is refused with the way
to save the model with skops; it is never unpickled.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from spark_compress.core.model import (
    ACTIVATIONS,
    Dense,
    Embedding,
    Model,
    linear,
    mlp_from_mllib_flat,
    validate,
)
from spark_compress.errors import ConfigError, FormatError

MODEL_TYPES = ("mllib", "sklearn-skops", "weights")

_MLLIB = "org.apache.spark.ml."
MLLIB_CLASSES = (
    _MLLIB + "classification.LogisticRegressionModel",
    _MLLIB + "regression.LinearRegressionModel",
    _MLLIB + "classification.MultilayerPerceptronClassificationModel",
)

SKLEARN_CLASSES = ("LogisticRegression", "LinearRegression", "MLPClassifier", "MLPRegressor")
SKLEARN_SCALERS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler")

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")

# Types a skops file of the estimators above may need beyond what skops trusts by default.
# Anything else in a file is refused before it is loaded.
SKOPS_ALLOWED_TYPES = frozenset({
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._base.LinearRegression",
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "sklearn.neural_network._multilayer_perceptron.MLPRegressor",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.preprocessing._label.LabelBinarizer",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._data.MinMaxScaler",
    "sklearn.preprocessing._data.MaxAbsScaler",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.float32",
    "numpy.float64",
    "numpy.int32",
    "numpy.int64",
    "numpy.bool_",
    "numpy.str_",
    "numpy.random.mtrand.RandomState",
    "numpy.random._mt19937.MT19937",
})

_SKLEARN_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid",
                        "identity": "identity", "softmax": "softmax"}

_SPEC_KEYS = {"task", "layers", "input_names", "embeddings", "n_features", "weight_layout"}
_SPEC_LAYER_KEYS = {"weight", "bias", "activation", "name"}
_SPEC_EMBEDDING_KEYS = {"table", "input", "combiner"}
_WEIGHT_LAYOUTS = ("in_out", "out_in")
_SPEC_SUFFIXES = (".json", ".toml")


# --------------------------------------------------------------------------- dispatcher


def import_model(
    path: str | Path, model_type: str | None = None, *, spec_path: str | Path | None = None
) -> Model:
    """Import the model at ``path``; ``model_type`` is one of :data:`MODEL_TYPES` or ``None``.

    ``None`` detects the type: a directory with ``metadata/`` is ``mllib``, a ``.skops`` file is
    ``sklearn-skops``, a ``.npz``/``.safetensors`` file with a spec is ``weights``. The spec of a
    weights file is ``spec_path``, else the sibling ``<stem>.json`` or ``<stem>.toml``. Anything
    else raises :class:`ConfigError` asking for ``--model-type``.
    """
    path = Path(path)
    if model_type is not None and model_type not in MODEL_TYPES:
        raise ConfigError(
            f"The 'model_type' parameter must be one of {MODEL_TYPES} or None. "
            f"Got {model_type!r} instead."
        )
    if model_type is None:
        model_type = detect_type(path, spec_path)
    refuse_pickle(path)
    if model_type == "mllib":
        return import_mllib(path)
    if model_type == "sklearn-skops":
        return import_skops(path)
    spec = Path(spec_path) if spec_path is not None else _sibling_spec(path)
    if spec is None:
        raise ConfigError(
            f"no spec found for the weights file {str(path)!r}: pass spec_path or put "
            f"{path.stem}.json or {path.stem}.toml next to it"
        )
    return import_weights(path, spec)


def detect_type(path: Path, spec_path: str | Path | None = None) -> str:
    """The ``model_type`` of ``path`` from its layout (see the module docstring); raises
    :class:`ConfigError` when it cannot tell, and (see :func:`refuse_pickle`) for a pickle or
    joblib file."""
    path = Path(path)
    refuse_pickle(path)
    if path.is_dir() and (path / "metadata").is_dir():
        return "mllib"
    suffix = path.suffix.lower()
    if path.is_file() and suffix == ".skops":
        return "sklearn-skops"
    if path.is_file() and suffix in (".npz", ".safetensors") and (
        spec_path is not None or _sibling_spec(path) is not None
    ):
        return "weights"
    raise ConfigError(
        f"cannot tell the model type of {str(path)!r} (expected an MLlib directory with "
        f"metadata/, a .skops file, or a .npz/.safetensors file with a sibling .json/.toml "
        f"spec); pass --model-type, one of {MODEL_TYPES}"
    )


def is_pickle(path: str | Path) -> bool:
    """True when ``path`` is a file named ``.pkl``/``.pickle``/``.joblib`` or, unless it is a
    ``.safetensors`` file (whose 8-byte header length can start with the same bytes), whose
    bytes start like a pickle (protocol 2 to 5: ``0x80`` then the protocol number). Reads 2
    bytes at most and never unpickles."""
    path = Path(path)
    if not path.is_file():
        return False
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return True
    if suffix == ".safetensors":
        return False
    try:
        with path.open("rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def refuse_pickle(path: str | Path) -> None:
    """Raise :class:`ConfigError` for a pickle/joblib file (see :func:`is_pickle`), saying how
    to save the model with skops instead; unpickling would run code from the file."""
    if is_pickle(path):
        raise ConfigError(
            f"{str(path)!r} is a pickle/joblib file, which is never loaded (unpickling runs code "
            f"from the file); save the fitted model with skops instead: `import skops.io; "
            f"skops.io.dump(model, \"model.skops\")`, and pass model.skops"
        )


def _sibling_spec(path: Path) -> Path | None:
    for suffix in _SPEC_SUFFIXES:
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------- Spark MLlib


def import_mllib(path: str | Path) -> Model:
    """The model of a Spark MLlib directory written by ``model.save(path)``, read without Spark.

    Supports :data:`MLLIB_CLASSES`: binomial LogisticRegression (1 sigmoid output, the
    probability of class 1), multinomial (softmax, ``binary`` for 2 classes), LinearRegression
    (1 identity output) and MultilayerPerceptronClassifier (sigmoid hidden layers, softmax).
    ``input_names`` stays empty: MLlib's input is one vector column. A non-default
    ``threshold``/``thresholds`` warns: :func:`predict` always uses 0.5 / the argmax.

    Raises :class:`ConfigError` for another class, :class:`FormatError` naming the file when
    ``metadata/`` or ``data/`` is missing or corrupt.
    """
    path = Path(path)
    meta_file, meta = _read_mllib_metadata(path)
    cls = meta.get("class")
    if cls not in MLLIB_CLASSES:
        raise ConfigError(
            f"{str(meta_file)!r} holds a {cls!r}, which cannot be imported; supported MLlib "
            f"classes: {list(MLLIB_CLASSES)}"
        )
    params: dict[str, Any] = {}
    for key in ("defaultParamMap", "paramMap"):
        section = meta.get(key, {})
        if not isinstance(section, dict):
            raise FormatError(f"{str(meta_file)!r}: {key!r} must be a JSON object")
        params.update(section)
    data_file, row = _read_mllib_data(path)
    try:
        if cls.endswith("LogisticRegressionModel"):
            model = _mllib_logistic(row, params)
        elif cls.endswith("LinearRegressionModel"):
            weights = _vector(row["coefficients"], "coefficients")
            model = linear(weights, float(row["intercept"]), "regression")
        else:
            layers = row.get("layers") or params.get("layers")
            if not layers:
                raise FormatError("the MLP layer sizes are in neither the data nor the params")
            model = mlp_from_mllib_flat([int(s) for s in layers],
                                        _vector(row["weights"], "weights"))
    except (KeyError, TypeError) as exc:
        raise FormatError(f"{str(data_file)!r} does not hold a {cls}: missing or bad field "
                          f"{exc}") from exc
    except FormatError as exc:
        raise FormatError(f"{str(data_file)!r}: {exc}") from exc
    _warn_thresholds(params, model, path)
    return model


def _read_mllib_metadata(path: Path) -> tuple[Path, dict[str, Any]]:
    parts = sorted((path / "metadata").glob("part-*"))
    parts = [p for p in parts if not p.name.endswith(".crc")]
    if not parts:
        raise FormatError(f"{str(path / 'metadata')!r} has no part-* file; is {str(path)!r} a "
                          f"directory written by MLlib's model.save()?")
    meta_file = parts[0]
    try:
        line = meta_file.read_text(encoding="utf-8").splitlines()[0]
        meta = json.loads(line)
    except (OSError, UnicodeDecodeError, IndexError, json.JSONDecodeError) as exc:
        raise FormatError(f"{str(meta_file)!r} is not MLlib metadata (one JSON line): "
                          f"{exc}") from exc
    if not isinstance(meta, dict):
        raise FormatError(f"{str(meta_file)!r} is not MLlib metadata: not a JSON object")
    return meta_file, meta


def _read_mllib_data(path: Path) -> tuple[Path, dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(p for p in (path / "data").glob("part-*") if not p.name.endswith(".crc"))
    if not files:
        raise FormatError(f"{str(path / 'data')!r} has no part-* Parquet file")
    rows: list[dict[str, Any]] = []
    for f in files:
        try:
            rows.extend(pq.read_table(f).to_pylist())
        except (OSError, pa.ArrowException) as exc:
            raise FormatError(f"{str(f)!r} is not a readable Parquet file: {exc}") from exc
    if len(rows) != 1:
        raise FormatError(f"{str(path / 'data')!r} must hold exactly 1 row; it holds {len(rows)}")
    return files[0], rows[0]


def _vector(v: Mapping[str, Any], name: str) -> np.ndarray:
    """A Spark ML vector struct (type 0 sparse: size/indices/values; 1 dense: values)."""
    values = np.asarray(v["values"], dtype=np.float64)
    if v["type"] == 1:
        return values
    if v["type"] == 0:
        out = np.zeros(int(v["size"]), dtype=np.float64)
        out[np.asarray(v["indices"], dtype=np.int64)] = values
        return out
    raise FormatError(f"{name} has unknown vector type {v['type']!r}")


def _matrix(m: Mapping[str, Any], name: str) -> np.ndarray:
    """A Spark ML matrix struct as a ``(numRows, numCols)`` array.

    Dense values are column-major, or row-major when ``isTransposed``; sparse ones are CSC, or
    CSR when ``isTransposed`` (then ``colPtrs`` index rows and ``rowIndices`` hold columns).
    """
    rows, cols = int(m["numRows"]), int(m["numCols"])
    values = np.asarray(m["values"], dtype=np.float64)
    transposed = bool(m["isTransposed"])
    if m["type"] == 1:
        if values.size != rows * cols:
            raise FormatError(f"{name} is {rows}x{cols} but holds {values.size} values")
        return values.reshape(rows, cols) if transposed else values.reshape(cols, rows).T
    if m["type"] != 0:
        raise FormatError(f"{name} has unknown matrix type {m['type']!r}")
    ptrs = np.asarray(m["colPtrs"], dtype=np.int64)
    idx = np.asarray(m["rowIndices"], dtype=np.int64)
    major, minor = (rows, cols) if transposed else (cols, rows)
    if ptrs.size != major + 1 or idx.size != values.size or ptrs[-1] != values.size:
        raise FormatError(f"{name} is a sparse {rows}x{cols} matrix with inconsistent pointers")
    out = np.zeros((major, minor), dtype=np.float64)
    for j in range(major):
        out[j, idx[ptrs[j]:ptrs[j + 1]]] = values[ptrs[j]:ptrs[j + 1]]
    return out if transposed else out.T


def _mllib_logistic(row: Mapping[str, Any], params: Mapping[str, Any]) -> Model:
    if "coefficientMatrix" not in row:  # Spark < 2.1 wrote a binomial model as a vector
        return linear(_vector(row["coefficients"], "coefficients"), float(row["intercept"]),
                      "binary")
    coef = _matrix(row["coefficientMatrix"], "coefficientMatrix")  # (k, n_features)
    intercept = _vector(row["interceptVector"], "interceptVector")
    if not row["isMultinomial"]:
        return linear(coef[0], intercept[0], "binary")
    task = "binary" if coef.shape[0] == 2 else "multiclass"
    return linear(coef.T, intercept, task)


def _warn_thresholds(params: Mapping[str, Any], model: Model, path: Path) -> None:
    if model.task == "regression":
        return
    threshold = params.get("threshold", 0.5)
    thresholds = params.get("thresholds")
    if (model.n_outputs == 1 and not math.isclose(float(threshold), 0.5)) or thresholds:
        warnings.warn(
            f"{str(path)!r} sets threshold={threshold!r} thresholds={thresholds!r}; the imported "
            f"probabilities are MLlib's, but predict() uses 0.5 / the argmax, so labels may "
            f"differ from MLlib's",
            UserWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- scikit-learn


def import_sklearn(estimator: Any) -> Model:
    """The model of a fitted scikit-learn estimator, one of :data:`SKLEARN_CLASSES`, or of a
    ``Pipeline`` of scalers followed by one (see :func:`import_sklearn_pipeline`).

    LogisticRegression: binary gives 1 sigmoid output (the probability of ``classes_[1]``),
    more classes softmax (multinomial; a one-vs-rest model is refused). LinearRegression: one
    identity output per target. MLPClassifier: hidden ``relu``/``tanh``/``logistic``/
    ``identity``, output sigmoid (binary) or softmax; multilabel is refused. MLPRegressor:
    identity outputs. ``input_names`` come from ``feature_names_in_`` when it exists.

    Raises :class:`ConfigError` for another class or an unfitted estimator.
    """
    try:
        from sklearn.linear_model import LinearRegression, LogisticRegression
        from sklearn.neural_network import MLPClassifier, MLPRegressor
        from sklearn.pipeline import Pipeline
    except ModuleNotFoundError as exc:  # pragma: no cover - sklearn is what made the object
        raise ConfigError("import_sklearn needs scikit-learn: pip install scikit-learn") from exc
    if isinstance(estimator, Pipeline):
        return import_sklearn_pipeline(estimator)
    name = type(estimator).__name__
    if not isinstance(estimator, (LogisticRegression, LinearRegression, MLPClassifier,
                                  MLPRegressor)):
        raise ConfigError(
            f"cannot import a {type(estimator).__module__}.{name}; supported scikit-learn "
            f"estimators: {list(SKLEARN_CLASSES)}"
        )
    fitted = "coefs_" if isinstance(estimator, (MLPClassifier, MLPRegressor)) else "coef_"
    if not hasattr(estimator, fitted):
        raise ConfigError(f"the {name} is not fitted; call fit() before importing it")
    names = tuple(str(n) for n in getattr(estimator, "feature_names_in_", ()))
    if isinstance(estimator, LogisticRegression):
        return _sklearn_logistic(estimator, names)
    if isinstance(estimator, LinearRegression):
        coef = np.asarray(estimator.coef_, dtype=np.float64)
        return linear(coef.T, estimator.intercept_, "regression", input_names=names)
    return _sklearn_mlp(estimator, isinstance(estimator, MLPClassifier), names)


def _sklearn_logistic(est: Any, names: tuple[str, ...]) -> Model:
    coef = np.asarray(est.coef_, dtype=np.float64)
    intercept = np.asarray(est.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:
        return linear(coef[0], intercept[0], "binary", input_names=names)
    # sklearn < 1.7 could fit one-vs-rest (normalized sigmoids), which is not a softmax layer.
    multi = getattr(est, "multi_class", "deprecated")
    if multi == "ovr" or (multi == "auto" and getattr(est, "solver", "") == "liblinear"):
        raise ConfigError(
            "cannot import a one-vs-rest LogisticRegression (multi_class='ovr' or liblinear): "
            "its probabilities are not a softmax; refit with multi_class='multinomial'"
        )
    return linear(coef.T, intercept, "multiclass", input_names=names)


def _sklearn_mlp(est: Any, classifier: bool, names: tuple[str, ...]) -> Model:
    hidden = _SKLEARN_ACTIVATIONS.get(est.activation)
    if hidden is None or hidden == "softmax":
        raise ConfigError(f"MLP hidden activation {est.activation!r} is not supported; use one "
                          f"of ['relu', 'tanh', 'logistic', 'identity']")
    out_act = _SKLEARN_ACTIVATIONS.get(est.out_activation_)
    if out_act is None:
        raise ConfigError(f"MLP output activation {est.out_activation_!r} (from loss="
                          f"{getattr(est, 'loss', '?')!r}) is not supported; use the default "
                          f"loss")
    n_out = np.shape(est.coefs_[-1])[1]
    if classifier:
        if out_act == "sigmoid" and n_out > 1:
            raise ConfigError(f"cannot import a multilabel MLPClassifier ({n_out} sigmoid "
                              f"outputs); only binary and multiclass are supported")
        task = "binary" if out_act == "sigmoid" or n_out == 2 else "multiclass"
    else:
        task = "regression"
    layers = []
    for i, (w, b) in enumerate(zip(est.coefs_, est.intercepts_)):
        last = i == len(est.coefs_) - 1
        layers.append(Dense(np.asarray(w, dtype=np.float32), np.asarray(b, dtype=np.float32),
                            out_act if last else hidden))
    model = Model(task, tuple(layers), int(np.shape(est.coefs_[0])[0]), input_names=names)
    validate(model)
    return model


def import_sklearn_pipeline(pipeline: Any) -> Model:
    """The model of a fitted ``Pipeline``: any number of :data:`SKLEARN_SCALERS` (also in
    nested pipelines; ``"passthrough"``/``None`` steps are skipped), then one estimator of
    :data:`SKLEARN_CLASSES`, with the scalers folded into the estimator's first layer.

    Each scaler is the affine map ``x -> x * a + c`` that its ``transform`` applies:
    ``StandardScaler`` ``a = 1 / scale_`` (1 with ``with_std=False``), ``c = -mean_ / scale_``
    (0 with ``with_mean=False``); ``MinMaxScaler`` ``a = scale_``, ``c = min_``;
    ``MaxAbsScaler`` ``a = 1 / scale_``, ``c = 0``. Zero-variance or zero-range features keep
    the ``scale_`` scikit-learn gave them (1, or the feature range for ``MinMaxScaler``), so the
    result is what ``transform`` computes for every input. The chain composes to one ``(a, c)``
    and the first layer ``x' @ W + b`` becomes ``x @ W' + b'`` with ``W' = a[:, None] * W`` and
    ``b' = b + c @ W`` (for a ``StandardScaler``: ``W' = W / scale``, ``b' = b - sum(mean /
    scale * W)``), computed in float64 from the estimator's own parameters, then stored as
    float32. ``input_names`` come from the pipeline's ``feature_names_in_``.

    Raises :class:`ConfigError` naming the step for a ``MinMaxScaler(clip=True)`` (clipping is
    not affine), any other transformer, a last step that is not a supported estimator, an
    unfitted step, or a scaler whose width differs from the estimator's input.
    """
    steps = _pipeline_steps(pipeline)
    if not steps:
        raise ConfigError("the Pipeline has no steps other than 'passthrough'; it needs a "
                          f"final estimator, one of {list(SKLEARN_CLASSES)}")
    *scalers, (last_name, last) = steps
    if type(last).__name__ in SKLEARN_SCALERS or type(last).__name__ not in SKLEARN_CLASSES:
        raise ConfigError(
            f"the last step {last_name!r} of the Pipeline is a {type(last).__module__}."
            f"{type(last).__name__}; it must be one of {list(SKLEARN_CLASSES)}, after any "
            f"number of {list(SKLEARN_SCALERS)}"
        )
    model = import_sklearn(last)
    w, b = _first_layer_f64(last)
    a = np.ones(w.shape[0])
    c = np.zeros(w.shape[0])
    for name, scaler in scalers:
        sa, sc = _scaler_affine(name, scaler, w.shape[0])
        a, c = a * sa, c * sa + sc
    first = model.layers[0]
    if w.shape != first.weight.shape:  # pragma: no cover - both come from the same estimator
        raise ConfigError(f"step {last_name!r}: first layer {w.shape} != {first.weight.shape}")
    folded = Dense((a[:, None] * w).astype(np.float32), (b + c @ w).astype(np.float32),
                   first.activation, first.name)
    names = tuple(str(n) for n in getattr(pipeline, "feature_names_in_", ()))
    out = Model(model.task, (folded,) + tuple(model.layers[1:]), model.n_features,
                input_names=names)
    validate(out)
    return out


def _pipeline_steps(pipeline: Any) -> list[tuple[str, Any]]:
    """``(name, step)`` of ``pipeline`` in order, nested pipelines flattened, passthrough
    steps dropped."""
    from sklearn.pipeline import Pipeline

    out: list[tuple[str, Any]] = []
    for name, step in pipeline.steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        if isinstance(step, Pipeline):
            out.extend((f"{name}__{inner}", s) for inner, s in _pipeline_steps(step))
        else:
            out.append((name, step))
    return out


def _first_layer_f64(est: Any) -> tuple[np.ndarray, np.ndarray]:
    """The first layer of ``est`` as :func:`import_sklearn` builds it, ``(in, out)`` weight and
    ``(out,)`` bias, in float64."""
    if hasattr(est, "coefs_"):
        return (np.asarray(est.coefs_[0], dtype=np.float64),
                np.asarray(est.intercepts_[0], dtype=np.float64).reshape(-1))
    coef = np.atleast_2d(np.asarray(est.coef_, dtype=np.float64))  # (k, in)
    bias = np.asarray(est.intercept_, dtype=np.float64).reshape(-1)
    if bias.size == 1 and coef.shape[0] != 1:
        bias = np.full(coef.shape[0], bias[0])
    return coef.T, bias


def _scaler_affine(name: str, scaler: Any, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, c)`` with ``scaler.transform(x) == x * a + c`` (float64, ``(width,)`` each)."""
    kind = type(scaler).__name__
    where = f"pipeline step {name!r} ({kind})"
    if kind not in SKLEARN_SCALERS:
        raise ConfigError(
            f"{where} is a {type(scaler).__module__}.{kind}; only {list(SKLEARN_SCALERS)} can "
            f"come before the estimator (they are folded into its first layer). Apply other "
            f"transformations before the data reaches the model"
        )
    n_in = getattr(scaler, "n_features_in_", None)
    if n_in is None:
        raise ConfigError(f"{where} is not fitted; fit the Pipeline before saving it")
    if int(n_in) != width:
        raise ConfigError(f"{where} transforms {n_in} features but the estimator takes {width}")
    ones, zeros = np.ones(width), np.zeros(width)
    if kind == "StandardScaler":
        scale = ones if not scaler.with_std else np.asarray(scaler.scale_, dtype=np.float64)
        mean = zeros if not scaler.with_mean else np.asarray(scaler.mean_, dtype=np.float64)
        return 1.0 / scale, -mean / scale
    if kind == "MinMaxScaler":
        if scaler.clip:
            raise ConfigError(
                f"{where} has clip=True: clipping to feature_range={scaler.feature_range!r} is "
                f"not an affine map and cannot be folded into the first layer; refit it with "
                f"clip=False (the default)"
            )
        return (np.asarray(scaler.scale_, dtype=np.float64),
                np.asarray(scaler.min_, dtype=np.float64))
    return 1.0 / np.asarray(scaler.scale_, dtype=np.float64), zeros


# --------------------------------------------------------------------------- skops


def import_skops(path: str | Path) -> Model:
    """The model of a ``.skops`` file holding one of :data:`SKLEARN_CLASSES`, or a
    ``Pipeline`` of :data:`SKLEARN_SCALERS` followed by one (:func:`import_sklearn_pipeline`).

    The file is loaded only if every type skops does not trust by default is in
    :data:`SKOPS_ALLOWED_TYPES`; otherwise :class:`ConfigError` lists the refused types and
    nothing in the file is constructed. A pickle/joblib file gets the :class:`ConfigError` of
    :func:`refuse_pickle`; another file that is not a skops archive raises
    :class:`FormatError` naming it.
    """
    try:
        import skops.io as sio
    except ModuleNotFoundError as exc:
        raise ConfigError("importing .skops files needs skops: pip install skops") from exc
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"skops file {str(path)!r} does not exist")
    refuse_pickle(path)
    try:
        untrusted = list(sio.get_untrusted_types(file=path))
    except Exception as exc:  # skops raises zipfile/json/key errors for a non-skops file
        raise FormatError(f"{str(path)!r} is not a readable skops file: {exc}") from exc
    refused = sorted(t for t in untrusted if t not in SKOPS_ALLOWED_TYPES)
    if refused:
        raise ConfigError(
            f"{str(path)!r} needs types that are not allowed, so it was not loaded: {refused}; "
            f"only {list(SKLEARN_CLASSES)}, Pipelines of {list(SKLEARN_SCALERS)} followed "
            f"by one of them, and their parts can be imported"
        )
    try:
        estimator = sio.load(path, trusted=untrusted)
    except Exception as exc:
        raise FormatError(f"{str(path)!r} could not be loaded by skops: {exc}") from exc
    return import_sklearn(estimator)


# --------------------------------------------------------------------------- weight files


def import_weights(weights_path: str | Path, spec_path: str | Path) -> Model:
    """A model from a ``.npz``/``.safetensors`` weight file and a ``.json``/``.toml`` spec.

    The spec::

        {"task": "binary",
         "layers": [{"weight": "fc1.w", "bias": "fc1.b", "activation": "relu",
                     "name": "fc1"}, ...],                          # name optional
         "input_names": ["age", "income"],                         # optional
         "embeddings": [{"table": "emb.city", "input": "city_id",
                         "combiner": "mean"}],                     # optional
         "n_features": 2,                                          # optional
         "weight_layout": "in_out"}                                # or "out_in" (PyTorch)

    ``bias`` may be omitted or null for no bias. A layer without ``name`` is named after its
    weight tensor without the last dotted part (``"fc1.weight"`` -> ``"fc1"``) when those names
    are unique, so a plan can address it as ``[layers.fc1]`` (a PyTorch ``nn.Sequential``
    export's ``"0.weight"``, ``"2.weight"`` give layers named ``"0"``, ``"2"``: ``[layers.2]`` is
    the second of them, see :func:`~spark_compress.core.compress.parse_layer_key`).
    ``n_features`` defaults to the number of ``input_names``, else the first layer's inputs
    minus the embedding dims. Raises
    :class:`FormatError` naming a missing tensor, a corrupt file, or (via :func:`validate`)
    the layer whose shapes don't fit; :class:`ConfigError` for a bad spec.
    """
    weights_path, spec_path = Path(weights_path), Path(spec_path)
    spec = _read_spec(spec_path)
    tensors = _read_tensors(weights_path)

    def tensor(name: Any, where: str) -> np.ndarray:
        if not isinstance(name, str):
            raise ConfigError(f"{str(spec_path)!r}: {where} must be a tensor name (a string). "
                              f"Got {name!r} instead.")
        if name not in tensors:
            raise FormatError(f"tensor {name!r} ({where}) is not in {str(weights_path)!r}; it "
                              f"holds {sorted(tensors)}")
        return tensors[name]

    layout = spec.get("weight_layout", "in_out")
    if layout not in _WEIGHT_LAYOUTS:
        raise ConfigError(f"{str(spec_path)!r}: 'weight_layout' must be one of "
                          f"{_WEIGHT_LAYOUTS}. Got {layout!r} instead.")
    layer_specs = spec.get("layers")
    if not isinstance(layer_specs, list) or not layer_specs:
        raise ConfigError(f"{str(spec_path)!r}: 'layers' must be a non-empty list of "
                          f"{{weight, bias, activation}} tables")
    layers = []
    for i, ls in enumerate(layer_specs):
        where = f"layers[{i}]"
        _check_keys(ls, _SPEC_LAYER_KEYS, f"{str(spec_path)!r} {where}", required=("weight",))
        w = tensor(ls["weight"], f"{where}.weight")
        if layout == "out_in" and w.ndim == 2:
            w = w.T
        b = tensor(ls["bias"], f"{where}.bias") if ls.get("bias") is not None else None
        act = ls.get("activation", "identity")
        if act not in ACTIVATIONS:
            raise ConfigError(f"{str(spec_path)!r}: {where}.activation must be one of "
                              f"{ACTIVATIONS}. Got {act!r} instead.")
        name = ls.get("name", "")
        if not isinstance(name, str):
            raise ConfigError(f"{str(spec_path)!r}: {where}.name must be a string. "
                              f"Got {name!r} instead.")
        layers.append(Dense(w, b, act, name))
    named = [layer.name or str(ls["weight"]).rsplit(".", 1)[0]
             for layer, ls in zip(layers, layer_specs)]
    if len(set(named)) == len(named):
        layers = [Dense(layer.weight, layer.bias, layer.activation, name)
                  for layer, name in zip(layers, named)]
    embeddings = []
    emb_specs = spec.get("embeddings", [])
    if not isinstance(emb_specs, list):
        raise ConfigError(f"{str(spec_path)!r}: 'embeddings' must be a list")
    for j, es in enumerate(emb_specs):
        where = f"embeddings[{j}]"
        _check_keys(es, _SPEC_EMBEDDING_KEYS, f"{str(spec_path)!r} {where}",
                    required=("table", "input"))
        embeddings.append(Embedding(tensor(es["table"], f"{where}.table"), str(es["input"]),
                                    es.get("combiner", "mean")))
    names = spec.get("input_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{str(spec_path)!r}: 'input_names' must be a list of strings")
    n_features = spec.get("n_features")
    if n_features is None:
        if names:
            n_features = len(names)
        else:
            first = layers[0].weight
            n_in = first.shape[0] if first.ndim == 2 else 0
            n_features = n_in - sum(e.dim for e in embeddings if e.table.ndim == 2)
    model = Model(spec.get("task"), tuple(layers), n_features, embeddings=tuple(embeddings),
                  input_names=tuple(names))
    try:
        validate(model)
    except FormatError as exc:
        raise FormatError(f"{str(weights_path)!r} with spec {str(spec_path)!r}: {exc}") from exc
    return model


def _read_spec(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in _SPEC_SUFFIXES:
        raise ConfigError(f"spec {str(path)!r} must be a .json or .toml file")
    try:
        text = path.read_text(encoding="utf-8")
        spec = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except FileNotFoundError as exc:
        raise FormatError(f"spec file {str(path)!r} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FormatError(f"spec file {str(path)!r} cannot be parsed: {exc}") from exc
    _check_keys(spec, _SPEC_KEYS, f"spec {str(path)!r}", required=("task", "layers"))
    return spec


def _check_keys(table: Any, allowed: set[str], where: str, *, required: tuple[str, ...]) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table/object. Got {type(table).__name__} instead.")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = [k for k in required if k not in table]
    if missing:
        raise ConfigError(f"{where} is missing the key(s) {missing}")


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FormatError(f"weights file {str(path)!r} does not exist")
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (OSError, ValueError, EOFError) as exc:
            # ValueError also covers object arrays, which would need pickle.
            raise FormatError(f"{str(path)!r} is not a readable .npz file without pickle: "
                              f"{exc}") from exc
        except Exception as exc:  # zipfile.BadZipFile and friends
            raise FormatError(f"{str(path)!r} is not a readable .npz file: {exc}") from exc
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"reading {str(path)!r} needs safetensors: pip install safetensors"
            ) from exc
        try:
            return dict(load_file(str(path)))
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise FormatError(f"{str(path)!r} is not a readable .safetensors file: "
                              f"{exc}") from exc
    raise ConfigError(f"weights file {str(path)!r} must be .npz or .safetensors")
