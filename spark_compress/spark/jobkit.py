"""What every ``spark-submit`` job shares: arguments, session, reading, exit codes, timing logs.

Exit codes: 0 success; 2 bad input or config (a :class:`SparkCompressError`, an unreadable input
path or file, a column Spark cannot resolve), with a one-line message on stderr; 1 anything else.
The last line a successful run prints on stdout is one JSON summary. (Under ``spark-submit`` the
Python driver's stderr is merged into spark-submit's stdout by Spark's PythonRunner, so there the
messages and logs arrive on stdout too; the summary is still the last line.)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession

from spark_compress.errors import ConfigError, SparkCompressError
from spark_compress.io.output import local_path

log = logging.getLogger("spark_compress")

INPUT_FORMATS = ("parquet", "csv", "orc", "json")
# Spark error conditions that mean the input itself is bad (exit 2, not 1).
BAD_INPUT_CONDITIONS = ("PATH_NOT_FOUND", "UNABLE_TO_INFER_SCHEMA", "UNRESOLVED_COLUMN",
                        "EMPTY_DATA_SOURCE", "FAILED_READ_FILE", "CANNOT_READ_FILE_FOOTER",
                        "MALFORMED_RECORD_IN_PARSING")


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--output", required=True, help="output directory (local or shared FS)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output atomically")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def add_input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="input dataset path")
    p.add_argument("--input-format", default="parquet", choices=INPUT_FORMATS)
    p.add_argument("--input-option", action="append", default=[], metavar="KEY=VALUE",
                   help="reader option, repeatable (CSV defaults: header=true, "
                        "inferSchema=true)")


def build_session(job: str, run_id: str) -> SparkSession:
    """The job's session, named after the job and run so the Spark UI and history server show
    it. Master and Spark settings come from ``spark-submit`` (``--master``, ``--conf``,
    ``--properties-file``)."""
    return SparkSession.builder.appName(f"spark-compress {job} {run_id}").getOrCreate()


def read_input(spark: SparkSession, path: str, fmt: str, options: Sequence[str]) -> DataFrame:
    """Read the input dataset; a missing local path is a :class:`ConfigError`."""
    opts = {"header": "true", "inferSchema": "true"} if fmt == "csv" else {}
    for kv in options:
        if "=" not in kv:
            raise ConfigError(f"--input-option {kv!r} must look like KEY=VALUE")
        k, v = kv.split("=", 1)
        opts[k] = v
    p = local_path(path, what="--input")
    if not p.exists():
        raise ConfigError(f"--input {path}: no such file or directory")
    return spark.read.format(fmt).options(**opts).load(p.as_uri())


def _bad_input_message(e: Exception) -> str | None:
    """One line describing ``e`` when its Spark error condition means bad input, else None."""
    text = str(e)
    condition = (e.getCondition() or "") if isinstance(e, PySparkException) else ""
    if not condition.startswith(BAD_INPUT_CONDITIONS):
        # Errors raised inside tasks reach Python as a bare Py4JJavaError: find the condition
        # in the JVM exception's text.
        lines = [ln for ln in text.splitlines()
                 if any(f"[{c}" in ln for c in BAD_INPUT_CONDITIONS)]
        if not lines:
            return None
        text = lines[0].split("] ", 1)[-1] if "] " in lines[0] else lines[0]
    first = text.strip().splitlines()[0]
    # A JVM cause (e.g. a missing codec) says more than the generic first line.
    if "ClassNotFoundException: " in str(e):
        cause = str(e).split("ClassNotFoundException: ", 1)[1].splitlines()[0]
        first += f" (missing class {cause}: re-write the input with a codec Spark reads, e.g. zstd)"
    return first


@contextmanager
def phase(name: str, **fields: object) -> Iterator[dict]:
    """Log the start and end of a job phase with its duration; ``info`` collects counts."""
    info: dict = dict(fields)
    log.info("%s: start%s", name, "".join(f" {k}={v}" for k, v in fields.items()))
    t0 = time.perf_counter()
    yield info
    info["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("%s: done in %.1f s%s", name, info["seconds"],
             "".join(f" {k}={v}" for k, v in info.items() if k != "seconds"))


def run_job(job: str, parser: argparse.ArgumentParser,
            body: Callable[[argparse.Namespace, SparkSession, str, object], dict],
            argv: Sequence[str] | None = None,
            prepare: Callable[[argparse.Namespace], object] | None = None) -> int:
    """Parse ``argv``, run ``prepare`` (config and path checks, before any JVM starts), build
    the session, run ``body`` and map errors to exit codes. A session that was already active
    (an embedding application, a test) is reused and left running."""
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING", stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("spark_compress").setLevel(args.log_level)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    spark = None
    owned = SparkSession.getActiveSession() is None
    try:
        ctx = prepare(args) if prepare is not None else None
        spark = build_session(job, run_id)
        summary = body(args, spark, run_id, ctx)
    except SparkCompressError as e:
        print(f"{job}: error: {e}", file=sys.stderr)
        return 2
    except (PySparkException, Py4JJavaError) as e:
        message = _bad_input_message(e)
        if message is not None:
            print(f"{job}: error: cannot read the input: {message}", file=sys.stderr)
            return 2
        log.exception("%s failed", job)
        return 1
    except Exception:  # noqa: BLE001 - the job's last line of defence: report and exit 1
        log.exception("%s failed", job)
        return 1
    finally:
        if spark is not None and owned:
            spark.stop()
    print(json.dumps({"job": job, "status": "ok", **summary}, sort_keys=True))
    return 0
