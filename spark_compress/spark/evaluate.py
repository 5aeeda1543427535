"""Evaluate several models on a DataFrame in one pass: metrics per model and agreement with the
first.

Each partition runs :func:`spark_compress.core.model.forward` for every model on each Arrow batch
and keeps the mergeable statistics of :mod:`spark_compress.core.metrics`; it sends one small row
to the driver (the statistics flattened to float64, their layout as JSON), where they are merged
and finalized. The driver therefore receives one row per partition, about ``2 * bins`` doubles per
binary model (160 KB with the default 10,000 bins), whatever the row count.

Data errors found on the executors (null or NaN features, bad labels, arrays of the wrong length)
are sent back as a row and raised on the driver as the same :mod:`spark_compress.errors` class,
so callers see a :class:`DataError`, not a wrapped Python worker traceback.
"""

from __future__ import annotations

import json
from typing import Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from spark_compress import errors
from spark_compress.core import metrics
from spark_compress.core.model import Model, forward, validate
from spark_compress.errors import ConfigError, DataError, SchemaError, SparkCompressError
from spark_compress.spark.features import NUMERIC_TYPES, col

_RESULT_SCHEMA = T.StructType([
    T.StructField("error", T.StringType()),
    T.StructField("layout", T.StringType()),
    T.StructField("values", T.ArrayType(T.DoubleType())),
])
_LABEL = "__label"


def evaluate_models(df: DataFrame, models: Mapping[str, Model], *, features: Sequence[str] | str,
                    label: str, batch_size: int = 4096) -> dict[str, dict[str, float | None]]:
    """Metrics of every model of ``models`` on the rows of ``df``, from one pass over ``df``.

    ``features`` is a list of numeric columns (in the models' input order) or the name of one
    ``array<numeric>`` column of length ``n_features``; ML vectors are not read (convert them
    with ``pyspark.ml.functions.vector_to_array``). ``label`` is the numeric label column: class
    indices ``0..k-1`` for classification models, values for regression. All models must share
    the task and ``n_features`` and have no embeddings. ``batch_size`` bounds the rows each
    forward pass evaluates at once, independently of Arrow's batch size.

    Returns, per model name, :func:`spark_compress.core.metrics.finalize` of its statistics,
    which always include ``count`` (rows evaluated) and, compared with the first model of
    ``models``, ``agreement`` (classification; 1.0 for the first model) or ``rmse_between``
    (regression; 0.0 for the first). An empty ``df`` gives ``count`` 0 and ``None`` metrics.

    Raises :class:`SchemaError` for missing columns (naming all of them), non-numeric columns or
    an ML vector column; :class:`ConfigError` for bad models or ``batch_size``; and
    :class:`DataError` for a null or NaN feature or label (naming the column), an array of the
    wrong length, or labels outside the task's range.
    """
    names, task, n_features = _check_models(models)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ConfigError(
            f"The 'batch_size' parameter must be an int >= 1. Got {batch_size!r} instead.")
    feature_cols = check_columns(df.schema, features, label, n_features, models)
    array_input = isinstance(features, str)
    if array_input:
        projected = [col(features).cast("array<double>").alias(features)]
    else:
        projected = [col(c).cast("double").alias(f"f{i}") for i, c in enumerate(feature_cols)]
    data = df.select(*projected, col(label).cast("double").alias(_LABEL))

    model_list = [models[n] for n in names]
    step = int(batch_size)

    def per_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        try:
            merged = None
            for b in batches:
                x, y = _batch_arrays(b, feature_cols, label, n_features, array_input)
                outs = [forward(m, x, batch_size=step) for m in model_list]
                part = [metrics.partial_stats(task, y, out, outs[0]) for out in outs]
                merged = part if merged is None else [
                    metrics.merge_stats(a, p) for a, p in zip(merged, part)]
            if merged is not None:
                yield _stats_batch(merged)
        except SparkCompressError as e:
            yield pa.RecordBatch.from_arrays(
                [pa.array([f"{type(e).__name__}:{e}"]), pa.array([None], pa.string()),
                 pa.array([None], pa.list_(pa.float64()))], names=["error", "layout", "values"])

    rows = data.mapInArrow(per_partition, _RESULT_SCHEMA).collect()
    for r in rows:
        if r["error"] is not None:
            kind, _, message = r["error"].partition(":")
            cls = getattr(errors, kind, DataError)
            raise cls(message)
    # Zero statistics to start from: partitions without rows send nothing.
    totals = [metrics.partial_stats(task, np.zeros(0), np.zeros((0, m.n_outputs)),
                                    np.zeros((0, model_list[0].n_outputs)))
              for m in model_list]
    for r in rows:
        for i, s in enumerate(_unflatten(r["layout"], r["values"], len(names))):
            totals[i] = metrics.merge_stats(totals[i], s)
    return {n: metrics.finalize(task, s) for n, s in zip(names, totals)}


def _check_models(models: Mapping[str, Model]) -> tuple[list[str], str, int]:
    if not isinstance(models, Mapping) or not models:
        raise ConfigError("The 'models' parameter must be a non-empty mapping of name -> Model. "
                          f"Got {models!r} instead.")
    names = list(models)
    tasks, widths = set(), set()
    for name in names:
        m = models[name]
        if not isinstance(m, Model):
            raise ConfigError(f"models[{name!r}] is a {type(m).__name__}, not a Model")
        validate(m)
        if m.embeddings:
            raise ConfigError(f"models[{name!r}] has embeddings, which evaluate_models does not "
                              f"feed; evaluate models with numeric inputs only")
        tasks.add(m.task)
        widths.add(m.n_features)
    if len(tasks) > 1:
        raise ConfigError("all models must have the same task; got "
                          + ", ".join(f"{n!r}: {models[n].task}" for n in names))
    if len(widths) > 1:
        raise ConfigError("all models must take the same number of features; got "
                          + ", ".join(f"{n!r}: {models[n].n_features}" for n in names))
    return names, tasks.pop(), widths.pop()


def check_columns(schema: T.StructType, features: Sequence[str] | str, label: str,
                  n_features: int, models: Mapping[str, Model]) -> list[str]:
    """The feature column names, after checking ``schema`` against ``features``, ``label`` and
    the models (raises as :func:`evaluate_models` documents for its schema checks)."""
    if isinstance(features, str):
        feature_cols = [features]
    else:
        feature_cols = list(features)
        if not feature_cols or not all(isinstance(c, str) for c in feature_cols):
            raise ConfigError("The 'features' parameter must be a column name or a non-empty "
                              f"list of column names. Got {features!r} instead.")
    types = {f.name: f.dataType for f in schema.fields}
    missing = [c for c in [*feature_cols, label] if c not in types]
    if missing:
        raise SchemaError(f"column(s) {', '.join(repr(c) for c in missing)} not found in the "
                          f"input, whose columns are: {', '.join(types)}")
    if isinstance(features, str):
        dtype = types[features]
        if isinstance(dtype, T.UserDefinedType) and "Vector" in type(dtype).__name__:
            raise SchemaError(
                f"feature column {features!r} is an ML vector; convert it to an array first: "
                f"df.withColumn({features!r}, pyspark.ml.functions.vector_to_array({features!r}))")
        if not (isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, NUMERIC_TYPES)):
            raise SchemaError(f"feature column {features!r} has type {dtype.simpleString()}; a "
                              f"single feature column must be an array of numbers")
    else:
        if len(feature_cols) != n_features:
            raise SchemaError(f"{len(feature_cols)} feature column(s) given but the models take "
                              f"{n_features}")
        for c in feature_cols:
            if not isinstance(types[c], NUMERIC_TYPES):
                raise SchemaError(f"feature column {c!r} has type {types[c].simpleString()}; "
                                  f"features must be numeric")
        for name, m in models.items():
            if m.input_names and tuple(m.input_names) != tuple(feature_cols):
                raise SchemaError(f"models[{name!r}] takes the inputs {list(m.input_names)} in "
                                  f"that order; got features {feature_cols}")
    if not isinstance(types[label], NUMERIC_TYPES):
        raise SchemaError(f"label column {label!r} has type {types[label].simpleString()}; it "
                          f"must be numeric")
    return feature_cols


def _batch_arrays(b: pa.RecordBatch, feature_cols: list[str], label: str, n_features: int,
                  array_input: bool) -> tuple[np.ndarray, np.ndarray]:
    """The batch as a float32 ``(n, n_features)`` matrix and float64 labels."""
    n = b.num_rows
    y_arr = b.column(b.num_columns - 1)
    if y_arr.null_count:
        raise DataError(f"label column {label!r} holds null in {y_arr.null_count} row(s)")
    y = y_arr.to_numpy(zero_copy_only=False)
    if array_input:
        arr = b.column(0)
        name = feature_cols[0]
        if arr.null_count:
            raise DataError(f"feature column {name!r} holds null arrays in {arr.null_count} "
                            f"row(s)")
        lengths = np.asarray(arr.value_lengths().to_numpy(zero_copy_only=False))
        if (lengths != n_features).any():
            raise DataError(f"feature column {name!r} holds an array of length "
                            f"{int(lengths[np.argmax(lengths != n_features)])}; the models take "
                            f"{n_features} features")
        values = arr.flatten()
        if values.null_count:
            raise DataError(f"feature column {name!r} holds null elements in arrays")
        x = values.to_numpy(zero_copy_only=False).reshape(n, n_features)
        if np.isnan(x).any():
            raise DataError(f"feature column {name!r} holds NaN in "
                            f"{int(np.isnan(x).any(axis=1).sum())} row(s)")
    else:
        x = np.empty((n, n_features), dtype=np.float64)
        for i, name in enumerate(feature_cols):
            arr = b.column(i)
            if arr.null_count:
                raise DataError(f"feature column {name!r} holds null in {arr.null_count} row(s)")
            x[:, i] = arr.to_numpy(zero_copy_only=False)
            if np.isnan(x[:, i]).any():
                raise DataError(f"feature column {name!r} holds NaN in "
                                f"{int(np.isnan(x[:, i]).sum())} row(s)")
    return x.astype(np.float32), y


def _stats_batch(stats: list[dict[str, np.ndarray]]) -> pa.RecordBatch:
    layout, parts = [], []
    for i, s in enumerate(stats):
        for key in sorted(s):
            v = np.asarray(s[key], dtype=np.float64)
            layout.append([i, key, list(v.shape)])
            parts.append(v.reshape(-1))
    values = np.concatenate(parts) if parts else np.zeros(0)
    return pa.RecordBatch.from_arrays(
        [pa.array([None], pa.string()), pa.array([json.dumps(layout)]),
         pa.array([values], pa.list_(pa.float64()))], names=["error", "layout", "values"])


def _unflatten(layout_json: str, values: Sequence[float], n_models: int,
               ) -> list[dict[str, np.ndarray]]:
    flat = np.asarray(values, dtype=np.float64)
    out: list[dict[str, np.ndarray]] = [{} for _ in range(n_models)]
    off = 0
    for i, key, shape in json.loads(layout_json):
        size = int(np.prod(shape)) if shape else 1
        out[i][key] = flat[off:off + size].reshape(shape)
        off += size
    return out
