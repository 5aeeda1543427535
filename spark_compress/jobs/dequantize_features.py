"""Decode the output of quantize_features back to float (and category) columns.

    spark-compress dequantize --input OUT --output PATH [--overwrite]

spark-submit's own options may be added anywhere on that line. The same job
with spark-submit: ``spark-submit [OPTIONS] "$(spark-compress job-path dequantize)" ARGS`` (or
``jobs/dequantize_features.py`` in a checkout).

``--input`` is a finished ``quantize_features`` output (``data/``, ``codebook.json``,
``_SUCCESS``). Writes ``PATH/data/`` (Parquet), ``PATH/report.json`` (with ``input_quality``:
per column the codes that decode to null, NaN, +inf, -inf or an unknown category) and
``PATH/_SUCCESS`` atomically. Exit codes: 0 ok, 2 bad input, 1 failure. A rerun with the same
input over a finished output is skipped (``"status": "skipped"``; see
``spark_compress.spark.jobkit``).
"""

from __future__ import annotations

import sys

from pyspark.sql import functions as F

from spark_compress.core import quantize as Q
from spark_compress.errors import ConfigError
from spark_compress.io import output as O
from spark_compress.io.codebook import read_codebook
from spark_compress.spark import features as FT
from spark_compress.spark import jobkit

JOB = "dequantize_features"


def prepare(args):
    """Check the input is a finished quantize_features output and read its codebook."""
    src = O.local_path(args.input, what="--input")
    job = O.output_job(src)
    if job is not None and job != "quantize_features":
        raise ConfigError(f"--input {args.input} is a {job} output, not a quantize_features "
                          f"output: only codes with their codebook can be dequantized")
    if not (src / O.SUCCESS).exists():
        raise ConfigError(f"--input {args.input}: not a finished quantize_features output "
                          f"(no {O.SUCCESS}); re-run quantize_features")
    jobkit.check_output(args, FINGERPRINT)
    return src, read_codebook(src / "codebook.json")


def code_counts(codes, names, *, chunk: int = 20) -> tuple[int, dict[str, dict[str, int]]]:
    """Row count and, per codebook column, how many codes decode to null, NaN, +inf, -inf or
    an out-of-vocabulary category (null): the input's data-quality counts, one aggregation per
    ``chunk`` columns (5 aggregates each: wider aggregations make Spark's generated code slow)."""
    special = {"nan_count": Q.CODE_NAN, "posinf_count": Q.CODE_POSINF,
               "neginf_count": Q.CODE_NEGINF, "oov_count": Q.CODE_OOV}
    rows, out = None, {}
    for start in range(0, max(len(names), 1), chunk):
        part = names[start:start + chunk]
        exprs = [F.count(F.lit(1)).alias("rows")]
        for i, name in enumerate(part):
            c = F.col("`" + name.replace("`", "``") + "`")
            exprs.append(F.sum(F.when(c.isNull(), 1).otherwise(0)).alias(f"c{i}_null_count"))
            exprs += [F.sum(F.when(c == code, 1).otherwise(0)).alias(f"c{i}_{key}")
                      for key, code in special.items()]
        row = codes.agg(*exprs).first()
        rows = int(row["rows"])
        for i, name in enumerate(part):
            out[name] = {key: int(row[f"c{i}_{key}"] or 0)
                         for key in ("null_count", *special)}
    return rows, out


def run(args, spark, run_id, ctx) -> dict:
    src, codebook = ctx
    out = jobkit.staged_output(JOB, args, run_id, FINGERPRINT)
    try:
        codes = spark.read.parquet((src / "data").as_uri())
        decoded = FT.decode_features(codes, codebook)  # checks columns and types, lazily
        with jobkit.phase("count") as info:
            rows_in, quality = code_counts(codes, [c.name for c in codebook.columns])
            info["rows"] = rows_in
        with jobkit.phase("decode+write"):
            decoded.write.parquet(out.uri("data"))
        rows_out = spark.read.parquet(out.uri("data")).count()
        FT.check_rows(rows_in, rows_out, JOB)
        report = {"job": JOB, "run_id": run_id, "input": args.input, "output": args.output,
                  "input_fingerprint": args.input_fingerprint,
                  "rows_in": rows_in, "rows_out": rows_out,
                  "bytes_in": O.tree_bytes(src / "data"),
                  "bytes_out": O.tree_bytes(out.staging / "data"),
                  "columns": [c.name for c in codebook.columns], "input_quality": quality}
        report["spark_settings"] = jobkit.spark_settings(spark, JOB)
        out.write_json("report.json", report)
        out.commit()
    except BaseException:
        out.abort()
        raise
    return {"rows_in": rows_in, "rows_out": rows_out, "output": args.output}


# codebook.json and report.json under --input are listed (size, mtime) with the data files.
FINGERPRINT = jobkit.Fingerprint(inputs=("input",))


def build_parser():
    """The job's argument parser (no Spark needed: tests and schedulers check flags with it)."""
    parser = jobkit.base_parser(JOB, __doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="a quantize_features output directory")
    return parser


def main(argv=None) -> int:
    return jobkit.run_job(JOB, build_parser(), run, argv, prepare=prepare,
                          fingerprint=FINGERPRINT)


if __name__ == "__main__":
    sys.exit(main())
