"""Evaluate several models on a DataFrame in one pass: metrics per model and agreement with the
first.

Each partition runs :func:`spark_compress.core.model.forward` for every model on each Arrow batch
and keeps the mergeable statistics of :mod:`spark_compress.core.metrics`; it sends one small row
to the driver (the statistics flattened to float64, their layout as JSON), where they are merged
and finalized: a few dozen numbers per partition, whatever the row count.

Binary models also get exact ranking metrics (``roc_auc``, ``average_precision``, equal to
scikit-learn's on the same scores; see :mod:`spark_compress.core.metrics`), without collecting
rows to the driver: each Arrow batch also emits ``(model, score, positives, negatives)`` per
distinct class-1 score (:func:`~spark_compress.core.metrics.score_counts`); Spark sorts them
by decreasing score (a range-partitioned shuffle: rows of equal scores land in one partition,
next to each other, and are summed there); one aggregation over the sorted partitions collects
each partition's label totals (a few numbers per partition), and a pass, given the totals of
the partitions above, computes each partition's share of the areas
(:func:`~spark_compress.core.metrics.ranking_block`), added on the driver in exact integers and
``math.fsum``. The scores are the float32 probabilities of class 1 that ``forward`` computes
(the values the score job writes and a user loading the model file gets), ranked as float64.

Data errors found on the executors (null or NaN features, bad labels, arrays of the wrong length)
are sent back as a row and raised on the driver as the same :mod:`spark_compress.errors` class,
so callers see a :class:`DataError`, not a wrapped Python worker traceback.
"""

from __future__ import annotations

import json
from typing import Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_compress import errors
from spark_compress.core import metrics
from spark_compress.core.model import Model, forward, validate
from spark_compress.errors import ConfigError, DataError, SchemaError, SparkCompressError
from spark_compress.spark.features import NUMERIC_TYPES, col

# One schema for both kinds of rows a partition sends: a statistics (or error) row, with
# ``model`` null, and score-count rows, with ``error``/``layout``/``values`` null.
_RESULT_SCHEMA = T.StructType([
    T.StructField("error", T.StringType()),
    T.StructField("layout", T.StringType()),
    T.StructField("values", T.ArrayType(T.DoubleType())),
    T.StructField("model", T.IntegerType()),
    T.StructField("score", T.DoubleType()),
    T.StructField("pos", T.LongType()),
    T.StructField("neg", T.LongType()),
])
_RESULT_ARROW = pa.schema([("error", pa.string()), ("layout", pa.string()),
                           ("values", pa.list_(pa.float64())), ("model", pa.int32()),
                           ("score", pa.float64()), ("pos", pa.int64()), ("neg", pa.int64())])
_AREAS_SCHEMA = T.StructType([
    T.StructField("model", T.IntegerType()), T.StructField("top", T.DoubleType()),
    T.StructField("n_pos", T.LongType()), T.StructField("n_neg", T.LongType()),
    # An exact integer that can exceed int64 (pairs of rows): sent as decimal text.
    T.StructField("roc_twice", T.StringType()), T.StructField("ap_sum", T.DoubleType()),
])
_LABEL = "__label"
SCORE_DEFINITION = ("float32 probability of class 1 from spark_compress.core.model.forward (what "
                    "the score job writes and a user loading the model file gets), ranked as "
                    "float64")


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
    (regression; 0.0 for the first); binary models also the exact ``roc_auc`` and
    ``average_precision`` of their class-1 scores (:data:`SCORE_DEFINITION`), ``None`` with a
    reason under ``undefined`` when the labels lack a class. An empty ``df`` gives ``count`` 0
    and ``None`` metrics.

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

    binary = task == "binary"

    def per_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        try:
            merged = None
            for b in batches:
                x, y = _batch_arrays(b, feature_cols, label, n_features, array_input)
                outs = [forward(m, x, batch_size=step) for m in model_list]
                part = [metrics.partial_stats(task, y, out, outs[0]) for out in outs]
                merged = part if merged is None else [
                    metrics.merge_stats(a, p) for a, p in zip(merged, part)]
                if binary and len(y):
                    yield _counts_batch([metrics.score_counts(y, metrics.class1_scores(out))
                                         for out in outs])
            if merged is not None:
                yield _stats_batch(merged)
        except SparkCompressError as e:
            yield _rows_batch(error=[f"{type(e).__name__}:{e}"])

    scored = data.mapInArrow(per_partition, _RESULT_SCHEMA)
    if binary:
        # Read twice (statistics, then score counts): the forward passes run once.
        scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        rows = scored.where(F.col("model").isNull()).select("error", "layout", "values").collect()
        for r in rows:
            if r["error"] is not None:
                kind, _, message = r["error"].partition(":")
                cls = getattr(errors, kind, DataError)
                raise cls(message)
        ranking = _ranking(scored.where(F.col("model").isNotNull()), len(names)) if binary \
            else [None] * len(names)
    finally:
        if binary:
            scored.unpersist()
    # Zero statistics to start from: partitions without rows send nothing.
    totals = [metrics.partial_stats(task, np.zeros(0), np.zeros((0, m.n_outputs)),
                                    np.zeros((0, model_list[0].n_outputs)))
              for m in model_list]
    for r in rows:
        for i, s in enumerate(_unflatten(r["layout"], r["values"], len(names))):
            totals[i] = metrics.merge_stats(totals[i], s)
    return {n: metrics.finalize(task, s, ranking=rk)
            for n, s, rk in zip(names, totals, ranking)}


def _ranking(counts: DataFrame, n_models: int) -> list[dict]:
    """Exact ranking metrics per model from the score-count rows (see the module docstring)."""
    # Range partitioning sends every row of one (model, score) to the same partition and gives
    # the partitions disjoint ranges, so equal scores need no separate aggregation (they are
    # adjacent after the sort and summed in _runs), and a partition's run of one model is
    # named by its top score.
    ordered = counts.select("model", "score", "pos", "neg") \
        .orderBy(F.col("model").asc(), F.col("score").desc()) \
        .persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # Pass 1, in the JVM: each partition's label totals per model (a few numbers each).
        runs = ordered.groupBy(F.spark_partition_id().alias("part"), "model").agg(
            F.max("score").alias("top"), F.sum("pos").alias("n_pos"),
            F.sum("neg").alias("n_neg")).collect()
        before: dict[tuple[int, float], tuple[int, int]] = {}
        tp = [0] * n_models
        fp = [0] * n_models
        for r in sorted(runs, key=lambda r: (r["model"], -r["top"])):
            m = r["model"]
            before[(m, r["top"])] = (tp[m], fp[m])
            tp[m] += int(r["n_pos"])
            fp[m] += int(r["n_neg"])

        def areas(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            return _run_areas(batches, before)

        # Pass 2: each partition's share of the areas, given the totals above it.
        parts = ordered.mapInArrow(areas, _AREAS_SCHEMA).collect()
    finally:
        ordered.unpersist()
    blocks: list[list[dict]] = [[] for _ in range(n_models)]
    for r in parts:
        blocks[r["model"]].append({"n_pos": int(r["n_pos"]), "n_neg": int(r["n_neg"]),
                                   "roc_twice": int(r["roc_twice"]),
                                   "ap_sum": float(r["ap_sum"])})
    return [metrics.finalize_ranking(b) for b in blocks]


def _runs(batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[int, float, np.ndarray,
                                                                np.ndarray]]:
    """``(model, top score, pos, neg)`` of every model's run of one sorted partition: the counts
    of each distinct score (rows of equal scores summed), in decreasing score order. A run may
    span Arrow batches."""
    current = None
    for b in batches:
        model = b.column(0).to_numpy(zero_copy_only=False)
        score = b.column(1).to_numpy(zero_copy_only=False)
        pos = b.column(2).to_numpy(zero_copy_only=False).astype(np.int64)
        neg = b.column(3).to_numpy(zero_copy_only=False).astype(np.int64)
        starts = np.flatnonzero(np.r_[True, model[1:] != model[:-1]])
        for i, start in enumerate(starts):
            stop = starts[i + 1] if i + 1 < len(starts) else len(model)
            m = int(model[start])
            piece = (score[start:stop], pos[start:stop], neg[start:stop])
            if current is not None and current[0] == m:
                current[1].append(piece)
                continue
            if current is not None:
                yield _collapse(*current)
            current = (m, [piece])
    if current is not None:
        yield _collapse(*current)


def _collapse(model: int, pieces: list) -> tuple[int, float, np.ndarray, np.ndarray]:
    score = np.concatenate([p[0] for p in pieces])
    pos = np.concatenate([p[1] for p in pieces])
    neg = np.concatenate([p[2] for p in pieces])
    starts = np.flatnonzero(np.r_[True, score[1:] != score[:-1]])
    return model, float(score[0]), np.add.reduceat(pos, starts), np.add.reduceat(neg, starts)


def _run_areas(batches: Iterator[pa.RecordBatch],
               before: Mapping[tuple[int, float], tuple[int, int]]) -> Iterator[pa.RecordBatch]:
    rows = []
    for m, top, p, q in _runs(batches):
        tp, fp = before[(m, top)]
        blk = metrics.ranking_block(p, q, tp_before=tp, fp_before=fp)
        rows.append((m, top, blk["n_pos"], blk["n_neg"], str(blk["roc_twice"]), blk["ap_sum"]))
    if rows:
        cols = list(zip(*rows))
        yield pa.RecordBatch.from_arrays(
            [pa.array(cols[0], pa.int32()), pa.array(cols[1], pa.float64()),
             pa.array(cols[2], pa.int64()), pa.array(cols[3], pa.int64()),
             pa.array(cols[4], pa.string()), pa.array(cols[5], pa.float64())],
            names=["model", "top", "n_pos", "n_neg", "roc_twice", "ap_sum"])


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


def _rows_batch(n: int = 1, **columns) -> pa.RecordBatch:
    """A batch of :data:`_RESULT_SCHEMA` with the given columns and every other column null."""
    arrays = [pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
              for f in _RESULT_ARROW]
    return pa.RecordBatch.from_arrays(arrays, schema=_RESULT_ARROW)


def _stats_batch(stats: list[dict[str, np.ndarray]]) -> pa.RecordBatch:
    layout, parts = [], []
    for i, s in enumerate(stats):
        for key in sorted(s):
            v = np.asarray(s[key], dtype=np.float64)
            layout.append([i, key, list(v.shape)])
            parts.append(v.reshape(-1))
    values = np.concatenate(parts) if parts else np.zeros(0)
    return _rows_batch(layout=[json.dumps(layout)], values=[values])


def _counts_batch(counts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> pa.RecordBatch:
    """Score-count rows of every model for one Arrow batch."""
    model = np.concatenate([np.full(len(v), i, np.int32) for i, (v, _, _) in enumerate(counts)])
    n = len(model)
    return _rows_batch(n, model=model, score=np.concatenate([c[0] for c in counts]),
                       pos=np.concatenate([c[1] for c in counts]),
                       neg=np.concatenate([c[2] for c in counts]))


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
