"""Score a dataset with a compressed model file, broadcast to every executor.

    spark-compress score --model OUT/model.safetensors --input PATH --output OUT \
        [--config conf/X.toml] [--input-format parquet|csv|orc|json] \
        [--input-option KEY=VALUE] [--overwrite]

spark-submit's own options may be added anywhere on that line. The same job
with spark-submit: ``spark-submit [OPTIONS] "$(spark-compress job-path score)" ARGS`` (or
``jobs/score.py`` in a checkout).

``--model`` is a file written by ``compress_model`` (or its output directory). When ``--input``
is the output directory of ``quantize_features`` (``codebook.json`` and ``data/``), its codes
are scored directly, with the dequantization folded into the model's first layer (``[score]
codes = "decode"`` decodes them to floats first instead); its other encoded columns are
decoded to their values in the output, as ``dequantize_features`` decodes them, or left out with
``[score] passthrough_codes = "drop"`` (``report.json`` lists them under ``passthrough_codes``).
Writes ``OUT/data/`` (Parquet: passthrough columns, ``prediction`` and, for classifiers,
``probability``), ``OUT/report.json`` and ``OUT/_SUCCESS``, atomically. Exit codes: 0 ok, 2 bad
input or config (also a bad row found inside a task, such as a code its codebook does not
allow), 1 failure. A rerun with the same model, input, config and arguments over a finished
output is skipped.
"""

from __future__ import annotations

import sys
import time

from pyspark.sql import functions as F

from spark_compress.errors import ConfigError, DataError
from spark_compress.io import output as O
from spark_compress.io.codebook import Codebook, read_codebook
from spark_compress.io.model_file import hmac_key_from_env
from spark_compress.io.score_config import load_score_config
from spark_compress.spark import features as FT
from spark_compress.spark import jobkit
from spark_compress.spark import score as SC

JOB = "score"


def _fingerprint_extra(args) -> dict:
    return {"hmac_key_id": jobkit.hmac_key_id(hmac_key_from_env())}


FINGERPRINT = jobkit.Fingerprint(inputs=("input", "model"), configs=("config",),
                                 extra=_fingerprint_extra)


def prepare(args):
    """Config, model file (validated once, here on the driver) and paths, before Spark starts."""
    config = load_score_config(args.config)
    jobkit.check_output(args, FINGERPRINT)
    model = SC.load_model_file(O.local_path(args.model, what="--model"),
                               hmac_key=hmac_key_from_env())
    in_path = O.local_path(args.input, what="--input")
    codebook = None
    if (in_path / "codebook.json").is_file() and (in_path / "data").is_dir():
        codebook = read_codebook(in_path / "codebook.json")
        if args.input_format != "parquet":
            raise ConfigError(f"--input {args.input} is a quantize_features output (Parquet); "
                              f"drop --input-format {args.input_format}")
    return config, model, codebook


def run(args, spark, run_id, ctx) -> dict:
    config, model, codebook = ctx
    in_path = O.local_path(args.input, what="--input")
    out = jobkit.staged_output(JOB, args, run_id, FINGERPRINT)
    try:
        with jobkit.phase("read", input=args.input, format=args.input_format):
            data_path = str(in_path / "data") if codebook is not None else args.input
            df = jobkit.read_input(spark, data_path, args.input_format, args.input_option,
                                   accept_codes=codebook is not None)
            if codebook is not None and config.codes == "decode":
                df = FT.decode_features(df, codebook)
        fold = codebook is not None and config.codes == "fold"
        scored = SC.score_with_details(
            df, model, features=config.features, codebook=codebook if fold else None,
            method=config.method, batch_size=config.batch_size,
            prediction_col=config.prediction_col, probability_col=config.probability_col)
        with jobkit.phase("count+quality") as info:
            rows_in, quality = SC.input_quality(df, scored.features,
                                                codebook if fold else None)
            info["rows"] = rows_in
        if rows_in == 0:
            raise DataError(f"--input {args.input}: the dataset has no rows; nothing to score")
        feats = [scored.features] if isinstance(scored.features, str) else list(scored.features)
        passthrough, decoded, dropped = _passthrough(config, df.columns, feats, codebook)
        result = scored.df.select(*passthrough, *scored.output_cols)
        if fold and decoded:
            # The codes of the columns copied to the output become values, with the decode
            # dequantize_features runs (specials -> NaN/inf, unknown categories -> null).
            result = FT.decode_features(result, Codebook(
                tuple(codebook.column(c) for c in decoded)))
        with jobkit.phase("score+write", method=scored.method, codes=fold) as info:
            t0 = time.perf_counter()
            result.write.parquet(out.uri("data"))
            seconds = time.perf_counter() - t0
        written = spark.read.parquet(out.uri("data"))
        counts = written.agg(F.count(F.lit(1)).alias("rows"),
                             F.sum(F.col(config.prediction_col).isNull().cast("long"))
                             .alias("invalid")).first()
        rows_out, invalid = int(counts["rows"]), int(counts["invalid"] or 0)
        FT.check_rows(rows_in, rows_out, JOB)
        report = {
            "job": JOB, "run_id": run_id, "model": args.model, "model_sha256": model.sha256,
            "input": args.input, "input_format": args.input_format, "output": args.output,
            "config": args.config, "input_fingerprint": args.input_fingerprint,
            "rows_in": rows_in, "rows_out": rows_out, "invalid_rows": invalid,
            "method": scored.method, "codes": "fold" if fold else (
                "decode" if codebook is not None else None),
            "features": feats, "passthrough": passthrough,
            "passthrough_codes": {"decoded": decoded, "dropped": dropped},
            "input_quality": quality,
            "output_columns": list(scored.output_cols),
            "broadcast_bytes": scored.broadcast_bytes, "model_file_bytes": len(model.data),
            "seconds": round(seconds, 3),
            "rows_per_second": round(rows_in / seconds, 1) if seconds > 0 else None,
            "python_worker_peak_rss_bytes": (scored.peak_worker_rss.value or None)
            if scored.peak_worker_rss is not None else None,
            "batch_size": config.batch_size,
            "arrow_max_records_per_batch": int(spark.conf.get(
                "spark.sql.execution.arrow.maxRecordsPerBatch", "10000")),
        }
        report["spark_settings"] = jobkit.spark_settings(spark, JOB)
        out.write_json("report.json", report)
        out.commit()
    except BaseException:
        out.abort()
        raise
    return {k: report[k] for k in ("rows_in", "rows_out", "invalid_rows", "method",
                                   "broadcast_bytes", "rows_per_second")} | {
        "output": args.output}


def _passthrough(config, columns: list[str], feats: list[str], codebook: Codebook | None,
                 ) -> tuple[list[str], list[str], list[str]]:
    """The columns copied to the output, and which of them hold codes of ``codebook`` (decoded
    in the output) or were left out because they hold codes (``[score] passthrough_codes =
    "drop"``). Codes are never written under a column's name as if they were its values."""
    encoded = {c.name for c in codebook.columns} if codebook is not None else set()
    if config.passthrough is not None:
        passthrough = list(config.passthrough)
        missing = [c for c in passthrough if c not in columns]
        if missing:
            raise ConfigError(f"{config.source}: [score] passthrough column(s) {missing} are "
                              f"not in the input, whose columns are: {', '.join(columns)}")
        codes = [c for c in passthrough if c in encoded]
        if codes and config.passthrough_codes == "drop":
            raise ConfigError(f"{config.source}: [score] passthrough lists the encoded "
                              f"column(s) {codes} but passthrough_codes = \"drop\"; remove "
                              f"them from passthrough or set passthrough_codes = \"decode\"")
    else:
        passthrough = [c for c in columns if c not in feats]
    codes = [c for c in passthrough if c in encoded]
    if config.passthrough_codes == "drop":
        return [c for c in passthrough if c not in encoded], [], codes
    return passthrough, codes, []


def build_parser():
    """The job's argument parser (no Spark needed: tests and schedulers check flags with it)."""
    parser = jobkit.base_parser(JOB, __doc__.splitlines()[0])
    jobkit.add_input_args(parser)
    parser.add_argument("--model", required=True,
                        help="model file written by compress_model (or its output directory)")
    parser.add_argument("--config", help="TOML config with a [score] table, see conf/")
    return parser


def main(argv=None) -> int:
    return jobkit.run_job(JOB, build_parser(), run, argv, prepare=prepare,
                          fingerprint=FINGERPRINT)


if __name__ == "__main__":
    sys.exit(main())
