"""Compress a trained model and evaluate it against the original on held-out data, distributed.

Compression prunes, quantizes, shares weights or factorizes, as the config's plan says.

    spark-compress compress --model PATH [--model-type mllib|sklearn-skops|weights] \
        --config conf/X.toml --eval-data PATH [--eval-format parquet|csv|orc|json] \
        [--train-data PATH] --output OUT [--overwrite]

spark-submit's own options may be added anywhere on that line. The same job
with spark-submit: ``spark-submit [OPTIONS] "$(spark-compress job-path compress)" ARGS`` (or
``jobs/compress_model.py`` in a checkout).

Writes ``OUT/model.safetensors`` (one safe, self-describing file; signed with HMAC-SHA256 when
``SPARK_COMPRESS_HMAC_KEY`` is set), ``OUT/report.json`` and ``OUT/_SUCCESS``, atomically. The
report holds exact metrics of both models (ROC AUC and average precision equal scikit-learn's on
the same scores), ``metric_definitions``, ``warnings`` (e.g. a file larger than the model) and
``gate``: the config's ``[gate]`` limits checked. Exit codes: 0 ok, 2 bad input or config,
3 quality gate failed (the output is written with ``_GATE_FAILED`` instead of ``_SUCCESS``; see
``spark_compress.io.gate``), 1 failure. A rerun with the same model, data, config and arguments
over a finished output is skipped (``"status": "skipped"``; see ``spark_compress.spark.jobkit``).
"""

from __future__ import annotations

import dataclasses
import sys

from spark_compress.core import compress as C
from spark_compress.core.finetune import prune_finetune_compress
from spark_compress.errors import ConfigError, DataError, QualityGateFailed
from spark_compress.io import gate as G
from spark_compress.io import model_file as MF
from spark_compress.io import output as O
from spark_compress.io.importers import detect_type, import_model
from spark_compress.io.model_config import check_gate_task, load_model_config
from spark_compress.spark import jobkit
from spark_compress.spark.evaluate import check_columns, evaluate_models
from spark_compress.spark.quality import input_quality, problems
from spark_compress.spark.modeljob import calibration_matrix, model_report

JOB = "compress_model"


def prepare(args):
    """Config, model import and output checks: all before Spark starts."""
    config = load_model_config(args.config)
    jobkit.check_output(args, FINGERPRINT)
    model_path = O.local_path(args.model, what="--model")
    if not model_path.exists():
        raise ConfigError(f"--model {args.model}: no such file or directory")
    model_type = args.model_type or detect_type(model_path)
    model = import_model(model_path, model_type)
    check_gate_task(config, model.task)
    features = config.eval.features or (model.input_names or None)
    if features is None:
        raise ConfigError(f"{config.source}: [eval] features is required: the model does not "
                          f"name its input columns")
    if not isinstance(features, str) and len(features) != model.n_features:
        raise ConfigError(f"{config.source}: [eval] features lists {len(features)} column(s) "
                          f"but the model takes {model.n_features} inputs")
    if not model.input_names and not isinstance(features, str):
        # The file records the columns it scores (issue #4 reads them back).
        model = dataclasses.replace(model, input_names=tuple(features))
    if config.eval.label is None:
        raise ConfigError(f"{config.source}: [eval] label is required (the label column)")
    return config, model, features, model_path, model_type


def run(args, spark, run_id, ctx) -> dict:
    config, model, features, model_path, model_type = ctx
    out = jobkit.staged_output(JOB, args, run_id, FINGERPRINT)
    try:
        if config.finetune_epochs:
            if not args.calibration_data:
                raise ConfigError(f"{config.source}: [plan] finetune_epochs needs --train-data "
                                  f"(labelled training rows)")
            with jobkit.phase("prune+finetune+compress", epochs=config.finetune_epochs) as info:
                train = jobkit.read_input(spark, args.calibration_data, args.eval_format, [],
                                           what="--train-data")
                x, y = calibration_matrix(train, features, config.finetune_rows,
                                          label=config.eval.label, seed=config.plan.seed,
                                          class_labels=model.task != "regression")
                info["rows"] = len(y)
                # Bias correction, if asked for, aims at the fine-tuned float model: it runs
                # inside, where that model exists.
                x_calib = None
                if config.bias_correction_rows:
                    x_calib = calibration_matrix(train, features, config.bias_correction_rows,
                                                 seed=config.plan.seed)
                    info["bias_correction_rows"] = len(x_calib)
                cm = prune_finetune_compress(model, config.plan, x, y,
                                             epochs=config.finetune_epochs,
                                             seed=config.plan.seed, x_calib=x_calib)
        else:
            with jobkit.phase("compress", layers=len(model.layers)):
                cm = C.compress(model, config.plan)
        if config.bias_correction_rows and not config.finetune_epochs:
            if not args.calibration_data:
                raise ConfigError(f"{config.source}: [plan] bias_correction needs "
                                  f"--calibration-data (rows from the training data)")
            with jobkit.phase("bias-correction", rows=config.bias_correction_rows):
                calib = jobkit.read_input(spark, args.calibration_data, args.eval_format, [],
                                           what="--calibration-data")
                x = calibration_matrix(calib, features, config.bias_correction_rows,
                                       seed=config.plan.seed)
                cm = C.bias_correction(model, cm, x)
        data = MF.model_to_bytes(cm, plan=config.plan, hmac_key=MF.hmac_key_from_env(),
                                 source={"path": str(model_path), "type": model_type})
        (out.staging / "model.safetensors").write_bytes(data)
        with jobkit.phase("evaluate", input=args.eval_data) as info:
            df = jobkit.read_input(spark, args.eval_data, args.eval_format, args.input_option,
                                   what="--eval-data")
            check_columns(df.schema, features, config.eval.label, model.n_features,
                          {"original": model})
            rows_in, quality = input_quality(df, features, also=[config.eval.label])
            bad = problems(quality)
            if bad:
                raise DataError(f"--eval-data {args.eval_data}: rows the models cannot be "
                                f"evaluated on, per column: {'; '.join(bad)}. Drop or impute "
                                f"them before evaluating")
            metrics = evaluate_models(df, {"original": model, "compressed": C.decompress(cm)},
                                      features=features, label=config.eval.label)
            info["rows"] = metrics["original"].get("count")
        if metrics["original"].get("count") == 0:
            raise DataError(f"--eval-data {args.eval_data}: the dataset has no rows; nothing to "
                            f"evaluate the models on")
        report = model_report(model, cm, data, metrics)
        report.update(job=JOB, run_id=run_id, model=args.model, config=args.config,
                      eval_data=args.eval_data, output=args.output, rows_in=rows_in,
                      input_quality=quality,
                      input_fingerprint=args.input_fingerprint)
        report["warnings"] = G.model_warnings(report)
        report["gate"] = G.model_gate(config.gate, report)
        jobkit.commit_report(JOB, spark, out, report)
    except BaseException:
        out.abort()
        raise
    summary = {k: report[k] for k in ("original_bytes", "compressed_bytes", "compression_ratio")
               } | {"output": args.output}
    if not report["gate"]["passed"]:
        raise QualityGateFailed(G.gate_message(JOB, report["gate"], args.output),
                                summary | {"gate": report["gate"]})
    return summary


def _fingerprint_extra(args) -> dict:
    """What else decides the output file: a weights file's sibling layer spec (read by the
    importer when present) and the signing key."""
    model = O.local_path(args.model, what="--model")
    specs = {}
    for suffix in (".json", ".toml"):
        spec = model.with_suffix(suffix)
        if model.is_file() and spec != model and spec.is_file():
            specs[spec.name] = O.file_sha256(spec)
    return {"weights_spec": specs, "hmac_key_id": jobkit.hmac_key_id(MF.hmac_key_from_env())}


FINGERPRINT = jobkit.Fingerprint(inputs=("model", "eval_data", "calibration_data"),
                                 configs=("config",), extra=_fingerprint_extra)


def build_parser():
    """The job's argument parser (no Spark needed: tests and schedulers check flags with it)."""
    parser = jobkit.base_parser(JOB, __doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory or file")
    parser.add_argument("--model-type", choices=["mllib", "sklearn-skops", "weights"],
                        help="detected from the path when left out")
    parser.add_argument("--config", required=True, help="TOML config, see conf/")
    parser.add_argument("--eval-data", required=True, help="held-out data with the label")
    parser.add_argument("--eval-format", default="parquet", choices=jobkit.INPUT_FORMATS)
    parser.add_argument("--input-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--train-data", "--calibration-data", dest="calibration_data",
                        help="labelled training rows for [plan] finetune_epochs and "
                             "bias_correction")
    return parser


def main(argv=None) -> int:
    return jobkit.run_job(JOB, build_parser(), run, argv, prepare=prepare,
                          fingerprint=FINGERPRINT)


if __name__ == "__main__":
    sys.exit(main())
