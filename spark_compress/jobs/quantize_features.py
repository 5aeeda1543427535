"""Quantize the feature columns of a dataset and write compact Parquet plus a codebook.

    spark-compress quantize --input PATH --output OUT --config conf/X.toml \
        [--input-format parquet|csv|orc|json] [--input-option KEY=VALUE] [--overwrite]

spark-submit's own options may be added anywhere on that line. The same job
with spark-submit: ``spark-submit [OPTIONS] "$(spark-compress job-path quantize)" ARGS`` (or
``jobs/quantize_features.py`` in a checkout).

Writes ``OUT/data/`` (Parquet, integer codes), ``OUT/codebook.json``, ``OUT/report.json`` and
``OUT/_SUCCESS``, atomically. The report holds ``warnings`` (output larger than the input, columns
with many clipped rows) and ``gate``: the config's ``[gate]`` limits (``max_rmse``,
``max_clipped_fraction``) checked per column. Exit codes: 0 ok, 2 bad input or config, 3 quality
gate failed (the output is written with ``_GATE_FAILED`` instead of ``_SUCCESS``; see
``spark_compress.io.gate``), 1 failure. A rerun with the same input, config and arguments over a
finished output is skipped (``"status": "skipped"``; see ``spark_compress.spark.jobkit``).
"""

from __future__ import annotations

import sys

from pyspark import StorageLevel

from spark_compress.io import gate as G
from spark_compress.io import output as O
from spark_compress.io.codebook import write_codebook
from spark_compress.io.config import load_feature_config
from spark_compress.spark import features as FT
from spark_compress.spark import jobkit
from spark_compress.errors import ConfigError, DataError, QualityGateFailed

JOB = "quantize_features"


def prepare(args):
    """Everything that can be checked before Spark starts: config and paths."""
    config = load_feature_config(args.config)
    jobkit.check_output(args, FINGERPRINT)
    O.local_path(args.input, what="--input")
    return config


def run(args, spark, run_id, config) -> dict:
    out = jobkit.staged_output(JOB, args, run_id, FINGERPRINT)
    df = None
    try:
        with jobkit.phase("read", input=args.input, format=args.input_format):
            df = jobkit.read_input(spark, args.input, args.input_format, args.input_option)
            if args.input_format in ("csv", "json"):
                # Text formats are re-parsed on every pass (fit, quantiles, encode, evaluate).
                df = df.persist(StorageLevel.MEMORY_AND_DISK)
            plan = FT.plan_features(df.schema, config)
            _check_gate_columns(config, plan)
        with jobkit.phase("fit", columns=len(plan.encode)) as info:
            codebook, rows_in = FT.fit_codebook(df, plan, relative_error=config.relative_error)
            info["rows"] = rows_in
        if rows_in == 0:
            raise DataError(f"--input {args.input}: the dataset has no rows; nothing to fit")
        write_codebook(codebook, out.staging / "codebook.json")
        with jobkit.phase("encode+write") as info:
            FT.encode_features(df, codebook).write.parquet(out.uri("data"))
        data_dir = out.staging / "data"
        rows_out = spark.read.parquet(out.uri("data")).count()
        FT.check_rows(rows_in, rows_out, JOB)
        with jobkit.phase("evaluate"):
            errors = FT.evaluate_features(df, codebook)
        in_path = jobkit.data_path(args.input, args.input_format)  # what was read
        report = FT.feature_report(
            codebook, errors, rows_in=rows_in, rows_out=rows_out,
            bytes_in=O.tree_bytes(in_path), bytes_out=O.tree_bytes(data_dir),
            column_bytes_in=(O.parquet_column_bytes(in_path)
                             if args.input_format == "parquet" else None),
            column_bytes_out=O.parquet_column_bytes(data_dir))
        report.update(job=JOB, run_id=run_id, input=args.input, input_format=args.input_format,
                      output=args.output, config=args.config, dropped=list(plan.drop),
                      input_fingerprint=args.input_fingerprint)
        report["warnings"] = G.feature_warnings(report)
        report["gate"] = G.feature_gate(config.gate.defaults, config.gate.columns, report)
        jobkit.commit_report(JOB, spark, out, report)
    except BaseException:
        out.abort()
        raise
    finally:
        if df is not None:
            df.unpersist()
    summary = {k: report[k] for k in ("rows_in", "rows_out", "bytes_in", "bytes_out",
                                      "compression_ratio")} | {"output": args.output}
    if not report["gate"]["passed"]:
        raise QualityGateFailed(G.gate_message(JOB, report["gate"], args.output),
                                summary | {"gate": report["gate"]})
    return summary


def _check_gate_columns(config, plan) -> None:
    """A ``[gate.columns.X]`` must name an encoded column, and ``max_rmse`` a numeric one."""
    methods = {p.name: p.method for p in plan.encode}
    for name, limits in config.gate.columns.items():
        if name not in methods:
            raise ConfigError(f"{config.source}: [gate.columns.{name}] names a column that is "
                              f"not encoded (encoded: {', '.join(methods) or 'none'})")
        if methods[name] == "dictionary" and "max_rmse" in limits:
            raise ConfigError(f"{config.source}: [gate.columns.{name}] max_rmse: column "
                              f"'{name}' is dictionary-encoded and has no RMSE; gate it with "
                              f"max_clipped_fraction or remove the key")


FINGERPRINT = jobkit.Fingerprint(inputs=("input",), configs=("config",))


def build_parser():
    """The job's argument parser (no Spark needed: tests and schedulers check flags with it)."""
    parser = jobkit.base_parser(JOB, __doc__.splitlines()[0])
    jobkit.add_input_args(parser)
    parser.add_argument("--config", required=True, help="TOML config, see conf/")
    return parser


def main(argv=None) -> int:
    return jobkit.run_job(JOB, build_parser(), run, argv, prepare=prepare,
                          fingerprint=FINGERPRINT)


if __name__ == "__main__":
    sys.exit(main())
