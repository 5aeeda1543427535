"""Feature compression on Spark: plan, distributed fit, one-pass encode and decode, evaluation.

Where the time goes (measured, see docs/benchmarks.md): affine codes are cheapest as native Spark
column expressions (no Python, no Arrow round trip) provided whole-stage codegen does not choke on
the wide projection (``spark.sql.codegen.methodSplitThreshold`` and the JVM flag
``-XX:-DontCompileHugeMethods``: the jobs set the first themselves, and without the flag
``spark.sql.codegen.hugeMethodLimit``, see ``spark_compress.spark.jobkit``). Table lookups
(quantile bins, dictionaries) run in one ``mapInArrow`` pass over all such columns with the numpy
core, so Spark results equal the core's bit for bit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_compress.core import quantize as Q
from spark_compress.core import sketch
from spark_compress.errors import DataError, SchemaError, TaskDataError, marked
from spark_compress.io.codebook import Codebook, ColumnCodebook
from spark_compress.io.config import FeatureConfig, toml_table

log = logging.getLogger(__name__)

NUMERIC_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType,
                 T.DecimalType)
INTEGRAL_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
DICTIONARY_TYPES = INTEGRAL_TYPES + (T.StringType,)
AGG_CHUNK = 100  # aggregate expressions per agg pass, see _agg


def col(name: str) -> Column:
    """A column reference that works for any name (dots, spaces, backticks)."""
    return F.col("`" + name.replace("`", "``") + "`")


@dataclass(frozen=True)
class ColumnPlan:
    """A column to encode, with its resolved settings."""

    name: str
    method: str
    bits: int
    clip: float
    max_categories: int
    source_type: str


@dataclass(frozen=True)
class FeaturePlan:
    """What happens to every input column, in input order."""

    encode: tuple[ColumnPlan, ...]
    passthrough: tuple[str, ...]
    drop: tuple[str, ...]
    order: tuple[str, ...]  # output column order


def plan_features(schema: T.StructType, config: FeatureConfig) -> FeaturePlan:
    """Decide for every column of ``schema`` whether it is encoded, passed through or dropped.

    Raises :class:`SchemaError` naming the column for a column the config names but the data lacks,
    a string column with a numeric method or not configured, or a type that cannot be encoded.
    """
    names = [f.name for f in schema.fields]
    named = list(config.passthrough) + list(config.drop) + list(config.columns)
    missing = [n for n in named if n not in names]
    if missing:
        hint = ""
        lower = {n.lower(): n for n in names}
        close = [f"'{m}' (did you mean '{lower[m.lower()]}'?)" for m in missing
                 if m.lower() in lower]
        if close:
            hint = "; " + ", ".join(close)
        raise SchemaError(f"{config.source}: column(s) {', '.join(repr(m) for m in missing)} "
                          f"not found in the input, whose columns are: {', '.join(names)}{hint}")
    encode, passthrough, drop, order = [], [], [], []
    for f in schema.fields:
        name, dtype = f.name, f.dataType
        if name in config.passthrough:
            passthrough.append(name)
            order.append(name)
            continue
        if name in config.drop:
            drop.append(name)
            continue
        s = config.settings_for(name)
        explicit = name in config.columns and config.columns[name].method is not None
        method = s.method
        if isinstance(dtype, T.StringType) and not explicit:
            if config.defaults.strings == "dictionary":
                method = "dictionary"
            elif config.defaults.strings == "passthrough":
                passthrough.append(name)
                order.append(name)
                continue
            else:
                raise SchemaError(
                    f"{config.source}: string column '{name}' is not configured: add "
                    f"{toml_table('columns', name)} method = \"dictionary\", list it in [job] "
                    f"passthrough or "
                    f"drop, or set [defaults] strings = \"dictionary\"")
        if method == "dictionary":
            if not isinstance(dtype, DICTIONARY_TYPES):
                raise SchemaError(f"{config.source}: column '{name}' has type "
                                  f"{dtype.simpleString()}; method \"dictionary\" needs a string "
                                  f"or integer column")
        elif not isinstance(dtype, NUMERIC_TYPES):
            fix = ("use method = \"dictionary\"" if isinstance(dtype, T.StringType)
                   else "list it in [job] passthrough or drop")
            raise SchemaError(f"{config.source}: column '{name}' has type "
                              f"{dtype.simpleString()}, which method \"{method}\" cannot encode; "
                              f"{fix}")
        encode.append(ColumnPlan(name, method, s.bits, s.clip, s.max_categories,
                                 dtype.simpleString()))
        order.append(name)
    return FeaturePlan(tuple(encode), tuple(passthrough), tuple(drop), tuple(order))


# ------------------------------------------------------------------------------------ fit


def _finite(c: Column) -> Column:
    return ~F.isnan(c) & (F.abs(c) != F.lit(math.inf))


def _default_relative_error(plans: Sequence[ColumnPlan]) -> float:
    levels = [1 << p.bits for p in plans if p.method == "quantile"]
    clips = [p.clip for p in plans if p.method == "percentile"]
    need = [0.25 / lv for lv in levels] + [c / 4 for c in clips]
    return max(1e-5, min([1e-3] + need))


def fit_codebook(df: DataFrame, plan: FeaturePlan, *, relative_error: float | None = None,
                 ) -> tuple[Codebook, int]:
    """Fit every column of ``plan`` on ``df``; return the codebook and the row count.

    Passes over the data: for minmax/symmetric/dictionary columns one ``agg`` (row count, null
    counts, min/max) and a second ``agg`` over only the columns that hold NaN or infinities;
    for percentile/quantile columns one ``mapInArrow`` pass that counts and sketches them
    (:func:`_fit_quantiles` states the memory bound, the rank error and when the result is
    exact); one grouped count for the dictionary columns. Only these aggregates reach the
    driver.
    """
    sketched = [p for p in plan.encode if p.method in ("percentile", "quantile")]
    aggregated = [p for p in plan.encode if p.method not in ("percentile", "quantile")]
    stats: dict[str, dict] = {}
    quantiles: dict[str, dict[float, float]] = {}
    rows = None
    if aggregated or not sketched:
        rows, agg_stats = _fit_stats(df, aggregated)
        stats.update(agg_stats)
    if sketched:
        sketch_rows, sketch_stats, quantiles = _fit_quantiles(df, sketched, relative_error)
        stats.update(sketch_stats)
        rows = sketch_rows if rows is None else rows
        for s in stats.values():
            s["count"] = rows
    vocabularies = _fit_vocabularies(df, [p for p in plan.encode if p.method == "dictionary"])

    columns = []
    for p in plan.encode:
        s = stats[p.name]
        lo, hi = s.get("min"), s.get("max")
        if p.method in ("minmax", "symmetric"):
            enc = Q.choose_affine(lo, hi, bits=p.bits, method=p.method)
        elif p.method == "percentile":
            qs = quantiles[p.name]
            if qs:
                lo, hi = qs[p.clip], qs[1.0 - p.clip]
            enc = Q.choose_affine(lo, hi, bits=p.bits, method="percentile")
        elif p.method == "quantile":
            qs = quantiles[p.name]
            probs = Q.quantile_probabilities(p.bits)
            enc = Q.choose_quantile([qs[pr] for pr in probs] if qs else None, bits=p.bits)
        else:
            values, counts = vocabularies[p.name]
            enc = Q.choose_dictionary(values, counts, max_categories=p.max_categories)
            s["distinct_count"] = len(values) if len(values) < p.max_categories else None
        columns.append(ColumnCodebook(p.name, p.source_type, enc,
                                      p.clip if p.method == "percentile" else None, s))
    return Codebook(tuple(columns), plan.passthrough), rows


def _fit_stats(df: DataFrame, plans: Sequence[ColumnPlan]) -> tuple[int, dict[str, dict]]:
    """Row count and, per column, null/NaN/inf counts and the finite min/max, by aggregation."""
    # Pass 1, cheap: counts and plain min/max. Spark orders NaN above +inf, so a column holds
    # NaN or infinities exactly when its max is NaN/+inf or its min is -inf.
    exprs = [F.count(F.lit(1)).alias("__rows")]
    for i, p in enumerate(plans):
        exprs.append(F.count(col(p.name)).alias(f"n{i}"))
        if p.method != "dictionary":
            x = col(p.name).cast("double")
            exprs += [F.min(x).alias(f"min{i}"), F.max(x).alias(f"max{i}")]
    row = _agg(df, exprs)
    rows = int(row["__rows"])
    stats = {}
    special = []
    for i, p in enumerate(plans):
        s = {"count": rows, "null_count": rows - int(row[f"n{i}"])}
        if p.method != "dictionary":
            lo, hi = row[f"min{i}"], row[f"max{i}"]
            s.update(nan_count=0, posinf_count=0, neginf_count=0, min=lo, max=hi)
            if lo is not None and not (math.isfinite(lo) and math.isfinite(hi)):
                special.append((i, p))
        stats[p.name] = s
    # Pass 2, only for the columns with NaN or infinities: count them, range of finite values.
    if special:
        exprs = []
        for i, p in special:
            x = col(p.name).cast("double")
            exprs += [
                F.count_if(F.isnan(x)).alias(f"nan{i}"),
                F.count_if(x == F.lit(math.inf)).alias(f"pinf{i}"),
                F.count_if(x == F.lit(-math.inf)).alias(f"ninf{i}"),
                F.min(F.when(_finite(x), x)).alias(f"min{i}"),
                F.max(F.when(_finite(x), x)).alias(f"max{i}"),
            ]
        row = _agg(df, exprs)
        for i, p in special:
            stats[p.name].update(nan_count=int(row[f"nan{i}"]), posinf_count=int(row[f"pinf{i}"]),
                                 neginf_count=int(row[f"ninf{i}"]), min=row[f"min{i}"],
                                 max=row[f"max{i}"])
    return rows, stats


def _agg(df: DataFrame, exprs: Sequence[Column]) -> dict:
    """Evaluate many aggregate expressions, ``AGG_CHUNK`` per ``agg`` call (one pass each).

    One pass over everything would be fewer scans, but past about a hundred aggregates Spark's
    generated aggregation code grows too large to compile and the pass gets slower than several
    (measured: 97 aggregates over 2M rows 2.4 s, 161 aggregates 12 s).
    """
    out: dict = {}
    for start in range(0, len(exprs), AGG_CHUNK):
        out.update(df.agg(*exprs[start:start + AGG_CHUNK]).collect()[0].asDict())
    return out


_COUNTS = ("rows", "nulls", "nans", "pinf", "ninf")
_SKETCH_SCHEMA = T.StructType(
    [T.StructField("i", T.IntegerType()), T.StructField("pid", T.IntegerType()),
     T.StructField("values", T.ArrayType(T.DoubleType())),
     T.StructField("sizes", T.ArrayType(T.LongType())),
     T.StructField("lo", T.DoubleType()), T.StructField("hi", T.DoubleType())]
    + [T.StructField(c, T.LongType()) for c in _COUNTS])
_QUANTILES_SCHEMA = T.StructType(
    [T.StructField("i", T.IntegerType()),
     T.StructField("quantiles", T.ArrayType(T.DoubleType())),
     T.StructField("lo", T.DoubleType()), T.StructField("hi", T.DoubleType()),
     T.StructField("points", T.LongType()), T.StructField("exact", T.BooleanType())]
    + [T.StructField(c, T.LongType()) for c in _COUNTS])
# Level 0's least capacity in the fit: a column with at most max(this, k) finite values is
# summarised exactly (module docstring of core.sketch). A module constant so tests can lower it.
SKETCH_EXACT_POINTS = sketch.EXACT_POINTS


def _seed(i: int, pid: int) -> int:
    """Coin seed of column ``i``'s sketch in partition ``pid`` (-1: the column's merge)."""
    return (i << 32) | (pid & 0xFFFFFFFF)


def _one_row(schema: T.StructType, values: dict) -> pa.RecordBatch:
    arrays = []
    for f in schema.fields:
        v = values[f.name]
        if isinstance(f.dataType, T.ArrayType):
            kind = pa.float64() if isinstance(f.dataType.elementType, T.DoubleType) \
                else pa.int64()
            # from_arrays wraps the numpy buffer; pa.array([ndarray]) converts value by value
            # (measured: 1.7 s against 2 ms for eight 53k-value sketches).
            v = pa.array(np.asarray(v), kind)
            arrays.append(pa.ListArray.from_arrays(pa.array([0, len(v)], pa.int32()), v))
        else:
            kind = {T.IntegerType: pa.int32(), T.LongType: pa.int64(),
                    T.DoubleType: pa.float64(), T.BooleanType: pa.bool_()}[type(f.dataType)]
            arrays.append(pa.array([v], kind))
    return pa.RecordBatch.from_arrays(arrays, names=schema.names)


def _fit_quantiles(df: DataFrame, plans: Sequence[ColumnPlan], relative_error: float | None,
                   ) -> tuple[int, dict[str, dict], dict[str, dict[float, float]]]:
    """Row count, per-column statistics and quantiles of the finite values, in one Arrow pass.

    Each partition adds its Arrow batches to one sketch per column
    (:mod:`spark_compress.core.sketch`); one small shuffle keyed by column brings a column's
    partition sketches, in partition order, to one task that merges them and computes the
    quantiles the codebook needs, so the driver receives only those. Guarantees:

    * memory: a task holds at most ``sketch.memory_bound(k)`` float64 values per column
      (``k = sketch.k_for(relative_error)``; at the 16-bit default ``relative_error`` of 1e-5
      6.86M values, 55 MB; at the 8-bit default 0.14M, 1.1 MB) plus one Arrow batch, however
      many rows it reads; the merging task holds two sketches per column plus one input batch;
    * rank error: every quantile within ``relative_error`` of its rank, with probability at
      least 1 - 1e-9 (the exact statement is the sketch's);
    * exact: a column with at most ``max(SKETCH_EXACT_POINTS, k)`` finite values (65,536 at 8
      bits) gets its exact quantiles, whatever the partitioning, so the codebook is
      byte-identical across partitionings; above that it is byte-identical for the same input
      and partitioning (the coins are seeded by column and partition index) and within
      ``relative_error`` across partitionings.

    The statistics (null, NaN and infinity counts, finite min/max) come from the same pass: the
    sketches keep the minimum and maximum exactly.
    """
    rel = relative_error if relative_error is not None else _default_relative_error(plans)
    k = sketch.k_for(rel)
    exact_points = SKETCH_EXACT_POINTS
    probs: set[float] = set()
    for p in plans:
        probs.update([p.clip, 1.0 - p.clip] if p.method == "percentile"
                     else Q.quantile_probabilities(p.bits))
    prob_list = sorted(probs)
    log.info("quantile fit of %d column(s), %d probabilities, rank error <= %g, at most %d "
             "sketch values per column per task", len(plans), len(prob_list), rel,
             sketch.memory_bound(k, exact_points))
    # float columns cross to Python as float32 (half the bytes); the sketch works in float64.
    values = df.select(*[(col(p.name) if p.source_type in ("float", "double")
                          else col(p.name).cast("double")).alias(f"q{i}")
                         for i, p in enumerate(plans)])

    def per_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        pid = TaskContext.get().partitionId()
        sketches = [sketch.new(k, _seed(i, pid), exact_points=exact_points)
                    for i in range(len(plans))]
        counts = np.zeros((len(plans), len(_COUNTS)), dtype=np.int64)
        for b in batches:
            for i in range(b.num_columns):
                arr = b.column(i)
                x = arr.to_numpy(zero_copy_only=False)  # nulls come out as NaN
                nan = int(np.isnan(x).sum())
                counts[i] += (b.num_rows, arr.null_count, nan - arr.null_count,
                              int((x == np.inf).sum()), int((x == -np.inf).sum()))
                sketches[i] = sketch.add(sketches[i], x)
        for i, sk in enumerate(sketches):
            flat, sizes = sketch.to_levels(sk)
            yield _one_row(_SKETCH_SCHEMA, {"i": i, "pid": pid, "values": flat, "sizes": sizes,
                                            "lo": sk.lo, "hi": sk.hi,
                                            **dict(zip(_COUNTS, counts[i].tolist()))})
            sketches[i] = None  # sent: let it go before the next column's copy is made

    def per_column(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        # Rows arrive sorted by (column, partition): a canonical merge order, so the same
        # partitioning gives the same codebook on every run; one sketch is held per column.
        acc, totals, current = None, None, None

        def result(i: int, sk: sketch.Sketch, tot: np.ndarray) -> pa.RecordBatch:
            qs = sketch.quantiles(sk, prob_list) if sk.lo is not None else np.empty(0)
            return _one_row(_QUANTILES_SCHEMA, {"i": i, "quantiles": qs, "lo": sk.lo,
                                                "hi": sk.hi, "points": sk.points,
                                                "exact": sk.exact,
                                                **dict(zip(_COUNTS, tot.tolist()))})

        for b in batches:
            vals = b.column("values")
            offsets = vals.offsets.to_numpy()
            flat = vals.values.to_numpy(zero_copy_only=False)
            cols = {name: b.column(name).to_pylist()
                    for name in ("i", "sizes", "lo", "hi", *_COUNTS)}
            for r in range(b.num_rows):
                i = cols["i"][r]
                if i != current:
                    if acc is not None:
                        yield result(current, acc, totals)
                    acc = sketch.new(k, _seed(i, -1), exact_points=exact_points)
                    totals, current = np.zeros(len(_COUNTS), dtype=np.int64), i
                part = sketch.from_levels(k, 0, flat[offsets[r]:offsets[r + 1]],
                                          cols["sizes"][r], cols["lo"][r], cols["hi"][r],
                                          exact_points=exact_points)
                acc = sketch.merge(acc, part)
                totals += np.asarray([cols[c][r] for c in _COUNTS], dtype=np.int64)
        if acc is not None:
            yield result(current, acc, totals)

    reducers = max(1, min(len(plans), df.sparkSession.sparkContext.defaultParallelism))
    merged = (values.mapInArrow(per_partition, _SKETCH_SCHEMA)
              .repartition(reducers, "i").sortWithinPartitions("i", "pid")
              .mapInArrow(per_column, _QUANTILES_SCHEMA).collect())
    rows = 0
    stats: dict[str, dict] = {}
    quantiles: dict[str, dict[float, float]] = {p.name: {} for p in plans}
    for r in merged:
        p = plans[r["i"]]
        rows = int(r["rows"])
        stats[p.name] = {"null_count": int(r["nulls"]), "nan_count": int(r["nans"]),
                         "posinf_count": int(r["pinf"]), "neginf_count": int(r["ninf"]),
                         "min": r["lo"], "max": r["hi"]}
        if r["lo"] is not None:
            quantiles[p.name] = dict(zip(prob_list, [float(q) for q in r["quantiles"]]))
        log.info("column %r: %s quantiles from %d sketch values", p.name,
                 "exact" if r["exact"] else "approximate", r["points"])
    for p in plans:  # an empty input has no partitions to report anything
        stats.setdefault(p.name, {"null_count": 0, "nan_count": 0, "posinf_count": 0,
                                  "neginf_count": 0, "min": None, "max": None})
    return rows, stats, quantiles


def _fit_vocabularies(df: DataFrame, plans: Sequence[ColumnPlan],
                      ) -> dict[str, tuple[list, list[int]]]:
    """Top ``max_categories`` values per dictionary column, by count then value, in one pass."""
    if not plans:
        return {}
    from pyspark.sql.window import Window

    structs = [F.struct(F.lit(i).alias("i"), col(p.name).cast("string").alias("v"))
               for i, p in enumerate(plans)]
    counts = (df.select(F.explode(F.array(*structs)).alias("s"))
              .where(F.col("s.v").isNotNull())
              .groupBy(F.col("s.i").alias("i"), F.col("s.v").alias("v")).count())
    caps = F.element_at(F.array(*[F.lit(p.max_categories) for p in plans]), F.col("i") + 1)
    # Rank ties by value so the vocabulary does not depend on partitioning. Integers rank by
    # their numeric value, strings by their text.
    key = F.when(F.col("i").isin([i for i, p in enumerate(plans)
                                   if p.source_type != "string"]),
                 F.col("v").cast("long")).otherwise(F.lit(None))
    w = Window.partitionBy("i").orderBy(F.col("count").desc(), key.asc(), F.col("v").asc())
    top = counts.withColumn("r", F.row_number().over(w)).where(F.col("r") <= caps)
    out: dict[str, tuple[list, list[int]]] = {p.name: ([], []) for p in plans}
    for r in top.collect():
        p = plans[r["i"]]
        v = r["v"] if p.source_type == "string" else int(r["v"])
        out[p.name][0].append(v)
        out[p.name][1].append(int(r["count"]))
    return out


# --------------------------------------------------------------------------------- encode


def _affine_code(c: Column, q: Q.AffineQuantizer, code_type: str) -> Column:
    x = c.cast("double")
    t = F.least(F.greatest(F.rint(x / F.lit(q.scale) + F.lit(q.zero_point)), F.lit(0.0)),
                F.lit(float(q.qmax)))
    # Finite values take the first branch (one comparison: NaN compares above +inf and null
    # compares as null). No otherwise: a null input stays null.
    return (F.when(F.abs(x) < F.lit(math.inf), t)
            .when(F.isnan(x), F.lit(float(Q.CODE_NAN)))
            .when(x > F.lit(0.0), F.lit(float(Q.CODE_POSINF)))
            .when(x < F.lit(0.0), F.lit(float(Q.CODE_NEGINF)))
            .cast(code_type))


def _arrow_int_type(code_type: str) -> pa.DataType:
    return {"tinyint": pa.int8(), "smallint": pa.int16(), "int": pa.int32()}[code_type]


def _arrow_float_type(source_type: str) -> pa.DataType:
    return pa.float32() if source_type == "float" else pa.float64()


def _null_mask(arr: pa.Array) -> np.ndarray | None:
    if arr.null_count == 0:
        return None
    return arr.is_null().to_numpy(zero_copy_only=False)


def _as_float64(arr: pa.Array) -> np.ndarray:
    """``arr`` as float64, nulls as NaN. A bigint beyond 2**53 rounds to the nearest double, as
    Spark's ``cast("double")`` rounds it on the native path and in the fit (pyarrow's default
    safe cast refuses such values), so both encode paths give the same codes."""
    return arr.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)


def _encode_arrow(cb: ColumnCodebook, arr: pa.Array) -> pa.Array:
    mask = _null_mask(arr)
    t = _arrow_int_type(cb.code_type)
    enc = cb.encoder
    if isinstance(enc, Q.DictionaryEncoder):
        vocab = pa.array(list(enc.vocabulary), type=arr.type if len(enc.vocabulary) else None)
        if len(enc.vocabulary) == 0:
            codes = np.full(len(arr), Q.CODE_OOV, dtype=np.int64)
        else:
            idx = pc.index_in(arr, value_set=vocab.cast(arr.type))
            codes = idx.fill_null(Q.CODE_OOV).to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        x = _as_float64(arr)
        codes = Q.encode(enc, x)
    return pa.array(codes.astype(t.to_pandas_dtype()), type=t, mask=mask)


def _decode_arrow(cb: ColumnCodebook, arr: pa.Array) -> pa.Array:
    mask = _null_mask(arr)
    enc = cb.encoder
    # Null codes stay null; they are filled with a code every codebook accepts, then masked.
    fill = Q.CODE_OOV if isinstance(enc, Q.DictionaryEncoder) else Q.CODE_NAN
    codes = arr.cast(pa.int64()).fill_null(fill).to_numpy(zero_copy_only=False)
    try:  # runs in a task: the driver recovers the message of a TaskDataError (exit 2)
        if isinstance(enc, Q.DictionaryEncoder):
            values, missing = Q.decode_dictionary(enc, codes)
            missing = missing if mask is None else (missing | mask)
            return pa.array(values, type=_spark_to_arrow(cb.source_type), mask=missing)
        x = Q.decode(enc, codes)
    except DataError as e:
        raise TaskDataError(f"column '{cb.name}': {e}") from None
    t = _arrow_float_type(cb.source_type)
    return pa.array(x.astype(t.to_pandas_dtype()), type=t, mask=mask)


def _spark_to_arrow(source_type: str) -> pa.DataType:
    return {"string": pa.string(), "tinyint": pa.int8(), "smallint": pa.int16(),
            "int": pa.int32(), "bigint": pa.int64()}[source_type]


def _map_columns(df: DataFrame, targets: dict[str, ColumnCodebook], fn, out_types: dict,
                 ) -> DataFrame:
    """Replace ``targets`` columns of ``df`` in one ``mapInArrow`` pass, applying ``fn``."""
    if not targets:
        return df
    fields = [T.StructField(f.name, out_types[f.name], True) if f.name in targets else f
              for f in df.schema.fields]
    names = [f.name for f in df.schema.fields]

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for b in batches:
            cols = [fn(targets[n], b.column(i)) if n in targets else b.column(i)
                    for i, n in enumerate(names)]
            yield pa.RecordBatch.from_arrays(cols, names=names)

    return df.mapInArrow(run, T.StructType(fields))


_SPARK_INT = {"tinyint": T.ByteType(), "smallint": T.ShortType(), "int": T.IntegerType()}


def _spark_type(simple: str) -> T.DataType:
    return {"float": T.FloatType(), "double": T.DoubleType(), "string": T.StringType(),
            "tinyint": T.ByteType(), "smallint": T.ShortType(), "int": T.IntegerType(),
            "bigint": T.LongType()}.get(simple, T.DoubleType())


def _check_columns(df: DataFrame, names: Iterable[str], what: str) -> None:
    have = set(df.columns)
    missing = [n for n in names if n not in have]
    if missing:
        raise SchemaError(f"{what}: column(s) {', '.join(repr(m) for m in missing)} are not in "
                          f"the data, whose columns are: {', '.join(df.columns)}")


def encode_features(df: DataFrame, codebook: Codebook, *, keep: Sequence[str] | None = None,
                    engine: str = "auto") -> DataFrame:
    """Encode every codebook column of ``df`` in one pass; keep passthrough columns unchanged.

    Output columns follow ``keep`` (default: passthrough and encoded columns in input order).
    ``engine="auto"`` runs affine columns as native expressions and table lookups in one
    ``mapInArrow``; ``engine="arrow"`` runs every column through ``mapInArrow``.
    """
    if engine not in ("auto", "arrow"):
        raise ValueError(f"engine must be 'auto' or 'arrow', got {engine!r}")
    encoded = {c.name: c for c in codebook.columns}
    _check_columns(df, list(encoded) + list(codebook.passthrough), "encode")
    order = list(keep) if keep is not None else [
        n for n in df.columns if n in encoded or n in codebook.passthrough]
    native = {n: c for n, c in encoded.items()
              if engine == "auto" and isinstance(c.encoder, Q.AffineQuantizer)}
    out = df.select(*[_affine_code(col(n), native[n].encoder, native[n].code_type).alias(n)
                      if n in native else col(n) for n in order])
    lookups = {n: c for n, c in encoded.items() if n not in native}
    return _map_columns(out, lookups, _encode_arrow,
                        {n: _SPARK_INT[c.code_type] for n, c in lookups.items()})


def _affine_value(c: Column, q: Q.AffineQuantizer, name: str, source_type: str) -> Column:
    code = c.cast("int")
    x = (code.cast("double") - F.lit(q.zero_point)) * F.lit(q.scale)
    bad = F.raise_error(F.concat(F.lit(marked(f"column '{name}': code ")), code.cast("string"),
                                 F.lit(f" is not valid (0..{q.qmax} or -1/-2/-3); the data does "
                                       f"not match its codebook")))
    out = (F.when(code.isNull(), F.lit(None))
           .when(code == Q.CODE_NAN, F.lit(math.nan))
           .when(code == Q.CODE_POSINF, F.lit(math.inf))
           .when(code == Q.CODE_NEGINF, F.lit(-math.inf))
           .when((code < 0) | (code > q.qmax), bad.cast("double"))
           .otherwise(x))
    return out.cast("float" if source_type == "float" else "double")


def decode_features(df: DataFrame, codebook: Codebook, *, engine: str = "auto") -> DataFrame:
    """Decode the codebook's columns back to values: floats keep their type, other numeric
    sources come back as double, dictionary columns as their original type (OOV -> null)."""
    if engine not in ("auto", "arrow"):
        raise ValueError(f"engine must be 'auto' or 'arrow', got {engine!r}")
    encoded = {c.name: c for c in codebook.columns}
    _check_columns(df, encoded, "decode")
    for f in df.schema.fields:
        if f.name in encoded and not isinstance(f.dataType, INTEGRAL_TYPES):
            raise SchemaError(f"decode: column '{f.name}' has type {f.dataType.simpleString()}, "
                              f"not integer codes; is this the output of quantize_features?")
    native = {n: c for n, c in encoded.items()
              if engine == "auto" and isinstance(c.encoder, Q.AffineQuantizer)}
    out = df.select(*[_affine_value(col(n), native[n].encoder, n, native[n].source_type).alias(n)
                      if n in native else col(n) for n in df.columns])
    lookups = {n: c for n, c in encoded.items() if n not in native}
    types = {n: (_spark_type(c.source_type) if c.method == "dictionary"
                 else T.FloatType() if c.source_type == "float" else T.DoubleType())
             for n, c in lookups.items()}
    return _map_columns(out, lookups, _decode_arrow, types)


# ------------------------------------------------------------------------------- evaluate

_EVAL_SCHEMA = T.StructType([
    T.StructField("name", T.StringType()), T.StructField("finite", T.LongType()),
    T.StructField("sse", T.DoubleType()), T.StructField("max_abs", T.DoubleType()),
    T.StructField("clipped", T.LongType()), T.StructField("oov", T.LongType()),
])


def _column_errors(cb: ColumnCodebook, arr: pa.Array) -> tuple[int, float, float, int, int]:
    enc = cb.encoder
    if isinstance(enc, Q.DictionaryEncoder):
        valid = arr.drop_null()
        oov = int((_encode_arrow(cb, valid).to_numpy(zero_copy_only=False) == Q.CODE_OOV).sum())
        return 0, 0.0, 0.0, 0, oov
    x = _as_float64(arr)
    finite = np.isfinite(x)  # nulls came out as NaN
    x = x[finite]
    if x.size == 0:
        return 0, 0.0, 0.0, 0, 0
    x_hat = Q.decode(enc, Q.encode(enc, x))
    if cb.source_type == "float":
        x_hat = x_hat.astype(np.float32).astype(np.float64)
    if pa.types.is_int64(arr.type):
        # Measured against the exact integer, not its float64 rounding (up to 1,024 off near
        # 2**63): high and low halves are each exact in float64.
        ints = arr.fill_null(0).to_numpy(zero_copy_only=False)[finite]
        high = (ints >> 32) << 32
        d = np.abs((high.astype(np.float64) - x_hat) + (ints - high).astype(np.float64))
    else:
        d = np.abs(x - x_hat)
    if isinstance(enc, Q.AffineQuantizer) and enc.lo is not None:
        clipped = int(((x < enc.lo) | (x > enc.hi)).sum())
    elif isinstance(enc, Q.QuantileQuantizer):
        lo, hi = cb.fit.get("min"), cb.fit.get("max")
        clipped = int(((x < lo) | (x > hi)).sum()) if lo is not None else 0
    else:
        clipped = 0
    return int(x.size), float(d @ d), float(d.max()), clipped, 0


def evaluate_features(df: DataFrame, codebook: Codebook) -> dict[str, dict]:
    """Reconstruction error of every codebook column on ``df``, in one ``mapInArrow`` pass.

    Returns per column: ``rmse`` and ``max_abs_error`` over finite values (after the decoded
    value is cast back to the column's float type), ``clipped_count`` (finite values outside
    the fitted range, which decode to its edge) and ``oov_count`` (dictionary values outside the
    vocabulary).
    """
    cbs = list(codebook.columns)
    _check_columns(df, [c.name for c in cbs], "evaluate")
    if not cbs:
        return {}

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        acc = {c.name: [0, 0.0, 0.0, 0, 0] for c in cbs}
        for b in batches:
            for i, c in enumerate(cbs):
                n, sse, mx, clipped, oov = _column_errors(c, b.column(i))
                a = acc[c.name]
                a[0] += n
                a[1] += sse
                a[2] = max(a[2], mx)
                a[3] += clipped
                a[4] += oov
        names = list(acc)
        vals = list(zip(*acc.values()))
        yield pa.RecordBatch.from_arrays(
            [pa.array(names, pa.string()), pa.array(vals[0], pa.int64()),
             pa.array(vals[1], pa.float64()), pa.array(vals[2], pa.float64()),
             pa.array(vals[3], pa.int64()), pa.array(vals[4], pa.int64())],
            schema=pa.schema([(f.name, t) for f, t in zip(
                _EVAL_SCHEMA.fields, [pa.string(), pa.int64(), pa.float64(), pa.float64(),
                                      pa.int64(), pa.int64()])]))

    partial = df.select(*[col(c.name) for c in cbs]).mapInArrow(run, _EVAL_SCHEMA).collect()
    # One small row per partition and column, merged here: math.fsum is exact, so the result
    # does not depend on the order the partitions arrive in (a Spark sum of doubles does).
    merged: dict[str, dict] = {}
    for r in partial:
        m = merged.setdefault(r["name"], {"name": r["name"], "finite": 0, "sse": [],
                                          "max_abs": 0.0, "clipped": 0, "oov": 0})
        m["finite"] += int(r["finite"])
        m["sse"].append(float(r["sse"]))
        m["max_abs"] = max(m["max_abs"], float(r["max_abs"]))
        m["clipped"] += int(r["clipped"])
        m["oov"] += int(r["oov"])
    rows = [dict(m, sse=math.fsum(m["sse"])) for m in merged.values()]
    out = {}
    for r in rows:
        n = int(r["finite"] or 0)
        out[r["name"]] = {
            "rmse": math.sqrt(r["sse"] / n) if n else 0.0,
            "max_abs_error": float(r["max_abs"] or 0.0),
            "clipped_count": int(r["clipped"] or 0),
            "oov_count": int(r["oov"] or 0),
        }
    for c in cbs:
        out.setdefault(c.name, {"rmse": 0.0, "max_abs_error": 0.0, "clipped_count": 0,
                                "oov_count": 0})
    return out


def check_rows(rows_in: int, rows_out: int, what: str) -> None:
    """Nothing is lost: raise :class:`DataError` when the counts differ."""
    if rows_in != rows_out:
        raise DataError(f"{what}: {rows_in} rows in but {rows_out} rows out; nothing was "
                        f"committed")


def feature_report(codebook: Codebook, errors: dict[str, dict], *, rows_in: int, rows_out: int,
                   bytes_in: int, bytes_out: int, column_bytes_in: dict[str, int] | None = None,
                   column_bytes_out: dict[str, int] | None = None) -> dict:
    """The ``report.json`` body: totals and, per encoded column, method, bits, counts, errors,
    scale and (when the formats tell) bytes before and after."""
    columns = {}
    for c in codebook.columns:
        e, fit = errors.get(c.name, {}), c.fit
        enc = c.encoder
        entry = {
            "method": c.method, "bits": c.bits, "code_type": c.code_type,
            "source_type": c.source_type,
            "null_count": fit.get("null_count", 0), "nan_count": fit.get("nan_count", 0),
            "posinf_count": fit.get("posinf_count", 0), "neginf_count": fit.get("neginf_count", 0),
            "clipped_count": e.get("clipped_count", 0), "rmse": e.get("rmse"),
            "max_abs_error": e.get("max_abs_error"),
            "scale": getattr(enc, "scale", None), "zero_point": getattr(enc, "zero_point", None),
            "min": fit.get("min"), "max": fit.get("max"),
        }
        if isinstance(enc, Q.DictionaryEncoder):
            entry.update(rmse=None, max_abs_error=None, vocabulary_size=len(enc.vocabulary),
                         oov_count=e.get("oov_count", 0))
        if column_bytes_in and c.name in column_bytes_in:
            entry["bytes_in"] = column_bytes_in[c.name]
        if column_bytes_out and c.name in column_bytes_out:
            entry["bytes_out"] = column_bytes_out[c.name]
        columns[c.name] = entry
    return {
        "rows_in": rows_in, "rows_out": rows_out, "bytes_in": bytes_in, "bytes_out": bytes_out,
        "compression_ratio": round(bytes_in / bytes_out, 4) if bytes_out else None,
        "passthrough": list(codebook.passthrough), "columns": columns,
    }
