"""What every ``spark-submit`` job shares: arguments, session, reading, exit codes, timing logs.

Exit codes: 0 success (or nothing to do); 2 bad input or config (a :class:`SparkCompressError`,
also a :class:`~spark_compress.errors.TaskDataError` raised inside a task, an unreadable input
path or file, a column Spark cannot resolve), with a one-line message on stderr; 3 quality gate
failed (:class:`QualityGateFailed`: the output is written but marked ``_GATE_FAILED`` instead of
``_SUCCESS``, see :mod:`spark_compress.io.gate`; the summary has ``"status": "gate_failed"``);
1 anything else. Every run, whatever its outcome, ends by printing one JSON summary line on
stdout (:func:`emit_summary`): ``{"job": ..., "status": "ok" | "skipped", ...}`` or ``{"job":
..., "status": "error" | "gate_failed", "exit_code": N, "message": ...}``; progress lines and
error messages go to stderr.

Under plain ``spark-submit`` Spark's ``PythonRunner`` starts the Python driver with
``redirectErrorStream(true)`` and copies the merged stream to the launcher JVM's stdout, so
there stdout carries the log lines too and the summary is its *last* line. The
``spark-compress`` command keeps the streams apart with a side channel: it names a file in
:data:`SUMMARY_FILE_ENV`, the job writes its summary there as well, and the command sends
everything ``spark-submit`` prints to stderr and only the summary to stdout.

Idempotent reruns (for schedulers that retry or backfill): a job that passes a
:class:`Fingerprint` to :func:`run_job` records ``input_fingerprint`` in its ``report.json``: the
SHA-256 of the canonical JSON of the job name, the package version and the SHA-256 of its
source files (:func:`code_identity`: an upgrade or a code change reruns), the resolved
``--output``, every input path with, for each data file under it, its relative path, size and
``mtime_ns`` (hidden files and markers such as ``_SUCCESS`` and ``.crc`` skipped), the SHA-256
of every config file's bytes, and every other argument except ``--overwrite`` and
``--log-level``. Before any config is loaded or a SparkSession is built, :func:`run_job`
compares it with the one recorded in an existing output:

- ``OUTPUT/_SUCCESS`` present and the same fingerprint, no ``--overwrite``: nothing to do; exit 0
  and print ``{"job": ..., "status": "skipped", "output": ..., "input_fingerprint": ...}``.
- the output exists otherwise (other inputs, config or arguments, no ``_SUCCESS``, an output
  written elsewhere and copied here, or one without a fingerprint), no ``--overwrite``: exit 2
  with the usual "already exists ... pass --overwrite" message (plus a WARNING log line saying the
  fingerprints differ).
- ``--overwrite``: the job runs and replaces the output atomically, as always.

A fingerprint sees sizes and modification times, not contents, of the input data (cheap on
terabytes): a file rewritten in place with the same size within the filesystem's timestamp
resolution is not noticed; pass ``--overwrite`` after such an edit.

Spark settings: a job does not depend on a properties file the user must remember. For every
key of its table (:data:`JOB_SPARK_DEFAULTS`: the Parquet codec zstd, UTC, Arrow batch size, the
codegen settings the wide encode needs) that the user did not configure, :func:`build_session`
sets the job's value, turns Spark's INFO logs off when the user gave no log config, and
``report.json`` records each effective value and its source under ``spark_settings``
(:func:`spark_settings`). A user's ``--conf`` or properties file always wins.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import hmac
import importlib.resources
import json
import logging
import os
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession

from spark_compress import __version__
from spark_compress.errors import (
    ConfigError,
    QualityGateFailed,
    SparkCompressError,
    task_data_error_message,
)
from spark_compress.io import gate as G
from spark_compress.io import output as O
from spark_compress.io.output import local_path

log = logging.getLogger("spark_compress")

INPUT_FORMATS = ("parquet", "csv", "orc", "json")
EXIT_GATE_FAILED = 3
# Spark error conditions that mean the input itself is bad (exit 2, not 1).
BAD_INPUT_CONDITIONS = ("PATH_NOT_FOUND", "UNABLE_TO_INFER_SCHEMA", "UNRESOLVED_COLUMN",
                        "EMPTY_DATA_SOURCE", "FAILED_READ_FILE", "CANNOT_READ_FILE_FOOTER",
                        "MALFORMED_RECORD_IN_PARSING", "PARQUET_TYPE_ILLEGAL",
                        "PARQUET_TYPE_NOT_SUPPORTED", "PARQUET_TYPE_NOT_RECOGNIZED")


# Names a file the job writes its JSON summary to as well as stdout (the ``spark-compress``
# command's side channel past spark-submit's merged output streams).
SUMMARY_FILE_ENV = "SPARK_COMPRESS_SUMMARY_FILE"

# Arguments that never change what a job writes.
NOT_FINGERPRINTED = ("overwrite", "log_level", "input_fingerprint")


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """Which of a job's arguments are input paths and which are config files, for the input
    fingerprint (see the module docstring). Names are argparse ``dest`` names (``"eval_data"``
    for ``--eval-data``); an argument left at ``None`` is recorded as ``None``.

    ``inputs``: files or directories, listed by :func:`spark_compress.io.output.file_listing`
    (size and mtime, contents not read). ``configs``: files hashed by content. ``extra``: a
    function of the parsed arguments returning more JSON-able facts that decide the output (a
    weights file's sibling spec, whether the output is signed). Every other argument is recorded
    by value.
    """

    inputs: tuple[str, ...] = ()
    configs: tuple[str, ...] = ()
    extra: Callable[[argparse.Namespace], Mapping[str, Any]] | None = None

    def document(self, job: str, args: argparse.Namespace) -> dict:
        """The canonical description the fingerprint hashes. Never reads data files; a missing or
        unreadable path is recorded as such (the job's own checks report it)."""
        values = vars(args)
        named = set(self.inputs) | set(self.configs) | {"output"} | set(NOT_FINGERPRINTED)
        doc: dict = {
            "job": job,
            "version": __version__,
            "code": code_identity(),
            "output": str(local_path(args.output, what="--output")),
            "inputs": {d: _input_entry(values.get(d), d) for d in self.inputs},
            "configs": {d: _config_entry(values.get(d), d) for d in self.configs},
            "args": {k: v for k, v in sorted(values.items()) if k not in named},
        }
        if self.extra is not None:
            doc["extra"] = dict(self.extra(args))
        return doc

    def compute(self, job: str, args: argparse.Namespace) -> str:
        """Hex SHA-256 of :meth:`document`."""
        return O.fingerprint_of(self.document(job, args))


def code_identity(root: Path | None = None) -> str:
    """Hex SHA-256 of the code that runs: every ``*.py`` file under the ``spark_compress``
    package (``root``, by default the imported package, also from a wheel or a zip on
    ``--py-files``), as its relative path (``/``-separated, sorted) and its bytes. An upgrade, a
    local edit, an added or a renamed module changes it, so a rerun after it is not "skipped".
    Computed once per process for the imported package."""
    if root is None:
        return _installed_code_identity()
    return _tree_sha256(root)


@functools.cache
def _installed_code_identity() -> str:
    return _tree_sha256(importlib.resources.files("spark_compress"))


def _tree_sha256(root) -> str:
    files: list[tuple[str, Any]] = []

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                if child.name != "__pycache__":
                    walk(child, rel + "/")
            elif child.name.endswith(".py"):
                files.append((rel, child))

    walk(root, "")
    h = hashlib.sha256()
    for rel, node in sorted(files, key=lambda f: f[0]):
        data = node.read_bytes()
        # Lengths make the stream unambiguous: no two trees hash the same bytes.
        h.update(f"{len(rel.encode())}:{rel}:{len(data)}:".encode())
        h.update(data)
    return h.hexdigest()


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _input_entry(value: object, dest: str) -> object:
    if value is None:
        return None
    path = local_path(str(value), what=_flag(dest))
    if not path.exists():
        return {"path": str(path), "missing": True}
    try:
        return {"path": str(path), "files": O.file_listing(path)}
    except OSError as e:
        return {"path": str(path), "error": type(e).__name__}


def _config_entry(value: object, dest: str) -> object:
    if value is None:
        return None
    path = local_path(str(value), what=_flag(dest))
    try:
        return {"path": str(path), "sha256": O.file_sha256(path)}
    except OSError as e:
        return {"path": str(path), "error": type(e).__name__}


def hmac_key_id(key: bytes | None) -> str | None:
    """A non-secret identifier of an HMAC signing key for fingerprints: HMAC-SHA256 of a fixed
    label under the key (reveals nothing about the key), first 16 hex digits; ``None`` when
    unsigned. A key rotation then changes the fingerprint and the output is rewritten."""
    if not key:
        return None
    return hmac.new(key, b"spark-compress fingerprint key id", hashlib.sha256).hexdigest()[:16]


def _skip_if_done(job: str, args: argparse.Namespace) -> bool:
    """True when the finished output at ``--output`` already holds this fingerprint."""
    target = local_path(args.output, what="--output")
    previous = O.finished_fingerprint(target)
    if previous == args.input_fingerprint:
        log.info("%s: output %s is finished with the same input fingerprint %s: skipped",
                 job, target, previous)
        return True
    if previous is not None:
        log.warning("%s: output %s was written from other inputs, config or arguments "
                    "(input fingerprint %s, now %s)", job, target, previous[:12],
                    args.input_fingerprint[:12])
    return False


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--output", required=True, help="output directory (local or shared FS)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous output of a spark-compress job atomically (never "
                        "a file, a link, a folder holding anything else, or an input)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def add_input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="input dataset path")
    p.add_argument("--input-format", default="parquet", choices=INPUT_FORMATS)
    p.add_argument("--input-option", action="append", default=[], metavar="KEY=VALUE",
                   help="reader option, repeatable (CSV defaults: header=true, "
                        "inferSchema=true)")


def console_progress(configured: str | None, interactive: bool) -> str:
    """The value of Spark's console progress bar setting for a job: what ``spark-submit`` was
    given (``--conf``, ``--properties-file``) when set, else on for an interactive run and off
    otherwise, so a scheduler's log gets no carriage-return progress lines."""
    if configured is not None:
        return configured
    return "true" if interactive else "false"


def _interactive(jvm: Any) -> bool:
    """Whether someone watches the job in a terminal. Under ``spark-submit`` the Python
    driver's output goes through the launcher JVM (never a terminal), so the JVM is asked: its
    ``System.console()`` exists only when it runs in a terminal (Java 22+ always has one and
    says with ``isTerminal()``)."""
    if sys.stderr.isatty():
        return True
    try:
        console = jvm.java.lang.System.console()
        if console is None:
            return False
        try:
            return bool(console.isTerminal())
        except Exception:  # noqa: BLE001 - before Java 22 there is no isTerminal()
            return True
    except Exception:  # noqa: BLE001 - no answer: not interactive
        return False


PROGRESS_KEY = "spark.ui.showConsoleProgress"
LOG_LEVEL_KEY = "spark.log.level"
HUGE_METHOD_KEY = "spark.sql.codegen.hugeMethodLimit"
# HotSpot's flag that lets the JIT compile methods above 8000 bytes of bytecode.
COMPILE_HUGE_METHODS = "-XX:-DontCompileHugeMethods"
# Where the job records, in the session's own conf (and so in the Spark UI's Environment tab),
# which settings it chose itself: JSON {key: reason}. See spark_settings().
JOB_SETTINGS_KEY = "spark.sparkcompress.jobSettings"


# Settings that only take effect on the builder, before the SparkContext exists (a reused
# session keeps what it has); every other job setting is a runtime SQL conf.
STARTUP_KEYS = (PROGRESS_KEY, LOG_LEVEL_KEY)


@dataclasses.dataclass(frozen=True)
class JobSetting:
    """A Spark SQL setting a job's output or speed depends on, with the reason the job sets it
    itself (unless the user configured the key)."""

    value: str
    why: str


# What every job's output depends on, whatever the user remembered to pass to spark-submit.
_COMMON = {
    "spark.sql.parquet.compression.codec": JobSetting(
        "zstd", "Parquet codec: the credit-card table's 8-bit codes are 26% smaller in zstd "
                "than in Spark's default snappy (docs/benchmarks.md)"),
    "spark.sql.session.timeZone": JobSetting(
        "UTC", "timestamps read from CSV/JSON and written to Parquet mean the same on every "
               "machine"),
    "spark.sql.execution.arrow.maxRecordsPerBatch": JobSetting(
        "100000", "100k-row Arrow batches (Spark's default: 10k) cut the Arrow encode "
                  "pass by 20%"),
}
# The wide native projections of the feature encode/decode (one expression per column).
_WIDE_CODEGEN = {
    "spark.sql.codegen.methodSplitThreshold": JobSetting(
        "256", "split generated methods early: the wide encode's projection otherwise makes one "
               "method the JIT will not compile"),
    HUGE_METHOD_KEY: JobSetting(
        "8000", f"without {COMPILE_HUGE_METHODS} HotSpot never JIT-compiles a method over 8000 "
                "bytes of bytecode, and the wide encode's is over (10x slower); past this limit "
                "Spark gives up whole-stage codegen for the plan instead"),
}

#: Per job: the Spark settings the job sets itself (see :func:`decide_settings`).
JOB_SPARK_DEFAULTS: Mapping[str, Mapping[str, JobSetting]] = {
    "quantize_features": {**_COMMON, **_WIDE_CODEGEN},
    "dequantize_features": {**_COMMON, **_WIDE_CODEGEN},
    "score": {**_COMMON, **_WIDE_CODEGEN},
    "compress_model": dict(_COMMON),
}

# Log4j 2 configuration files Spark's classpath (SPARK_CONF_DIR, else SPARK_HOME/conf) may hold.
_LOG4J_FILES = tuple(f"log4j2{t}.{ext}" for t in ("", "-test")
                     for ext in ("properties", "xml", "yaml", "yml", "json", "jsn"))


@dataclasses.dataclass(frozen=True)
class Decision:
    """The effective value of one job setting and where it came from: ``"user"`` (present in the
    conf spark-submit built: ``--conf``, ``--properties-file``, ``spark-defaults.conf``, or an
    embedding application's session), ``"job"`` (set by the job), or ``"spark"`` (left to Spark,
    ``value`` ``None``; ``why`` says why)."""

    value: str | None
    source: str
    why: str


def user_log_config(configured: Mapping[str, str], env: Mapping[str, str]) -> str | None:
    """Where the user's own log4j configuration comes from, or ``None`` when Spark would use its
    built-in default profile (INFO to the console): a ``log4j2.*`` file in ``SPARK_CONF_DIR``
    (else ``SPARK_HOME/conf``), or a ``-Dlog4j...`` option in the driver's Java options or the
    JVM's environment."""
    conf_dir = env.get("SPARK_CONF_DIR") or (
        str(Path(env["SPARK_HOME"]) / "conf") if env.get("SPARK_HOME") else None)
    if conf_dir:
        for name in _LOG4J_FILES:
            if (Path(conf_dir) / name).is_file():
                return str(Path(conf_dir) / name)
    for where, text in (("spark.driver.extraJavaOptions",
                         configured.get("spark.driver.extraJavaOptions", "")),
                        *((v, env.get(v, "")) for v in ("SPARK_SUBMIT_OPTS", "JAVA_TOOL_OPTIONS",
                                                         "_JAVA_OPTIONS"))):
        if "-Dlog4j" in text:
            return where
    return None


def compiles_huge_methods(configured: Mapping[str, str], env: Mapping[str, str]) -> str | None:
    """Where ``-XX:-DontCompileHugeMethods`` reaches the JVMs that run tasks, or ``None``. In
    local mode tasks run in the driver's JVM (its options or the JVM's environment); on a
    cluster in the executors' (``spark.executor.extraJavaOptions``)."""
    master = configured.get("spark.master", "local[*]")
    if master.startswith("local"):
        sources = [("spark.driver.extraJavaOptions",
                    configured.get("spark.driver.extraJavaOptions", ""))]
        sources += [(v, env.get(v, "")) for v in ("SPARK_SUBMIT_OPTS", "JAVA_TOOL_OPTIONS",
                                                  "_JAVA_OPTIONS")]
    else:
        sources = [("spark.executor.extraJavaOptions",
                    configured.get("spark.executor.extraJavaOptions", ""))]
    for where, text in sources:
        if COMPILE_HUGE_METHODS in text.split():
            return where
    return None


def decide_settings(job: str, configured: Mapping[str, str], *, env: Mapping[str, str],
                    log_level: str, interactive: bool) -> dict[str, Decision]:
    """The decision table of a job's Spark settings; pure (no Spark). ``configured``: the
    settings the user gave (the SparkConf spark-submit built); a key present there always keeps
    the user's value. Otherwise the job sets:

    - its :data:`JOB_SPARK_DEFAULTS` (``spark.sql.codegen.hugeMethodLimit`` only when
      :func:`compiles_huge_methods` finds no ``-XX:-DontCompileHugeMethods``: with the flag the
      JIT compiles the huge method, which is faster than giving up whole-stage codegen);
    - ``spark.ui.showConsoleProgress`` per :func:`console_progress`;
    - ``spark.log.level=WARN`` (Spark's INFO chatter off) unless the user has a log config
      (:func:`user_log_config`) or ``log_level`` is ``DEBUG``.
    """
    table = JOB_SPARK_DEFAULTS.get(job, _COMMON)
    out: dict[str, Decision] = {}
    for key, setting in table.items():
        if key in configured:
            out[key] = Decision(configured[key], "user", "configured by the user")
        elif key == HUGE_METHOD_KEY and (where := compiles_huge_methods(configured, env)):
            out[key] = Decision(None, "spark",
                                f"{COMPILE_HUGE_METHODS} in {where}: the JIT compiles huge "
                                "methods, whole-stage codegen stays on")
        else:
            out[key] = Decision(setting.value, "job", setting.why)
    if PROGRESS_KEY in configured:
        out[PROGRESS_KEY] = Decision(configured[PROGRESS_KEY], "user", "configured by the user")
    else:
        out[PROGRESS_KEY] = Decision(console_progress(None, interactive), "job",
                                     "progress bar only when a terminal watches the run")
    if LOG_LEVEL_KEY in configured:
        out[LOG_LEVEL_KEY] = Decision(configured[LOG_LEVEL_KEY], "user", "configured by the user")
    elif log_level == "DEBUG":
        out[LOG_LEVEL_KEY] = Decision(None, "spark", "--log-level DEBUG: Spark's logs kept")
    elif (where := user_log_config(configured, env)) is not None:
        out[LOG_LEVEL_KEY] = Decision(None, "spark", f"the user's log config ({where})")
    else:
        out[LOG_LEVEL_KEY] = Decision("WARN", "job",
                                      "no log config given: Spark's INFO lines off")
    return out


def build_session(job: str, run_id: str, *, log_level: str = "INFO") -> SparkSession:
    """The job's session, named after the job and run so the Spark UI and history server show
    it. Master and the user's Spark settings come from ``spark-submit`` (``--master``,
    ``--conf``, ``--properties-file``, ``spark-defaults.conf``); on top, the job sets what its
    output and speed depend on (:func:`decide_settings`) for every key the user left unset, so a
    run without a properties file writes the same files at the same speed. A session that is
    already active (an embedding application, a test) gets the job's runtime SQL settings for
    the keys it has not set; :func:`release_session` takes them back. ``log_level`` is the
    job's ``--log-level`` (``DEBUG`` keeps Spark's INFO lines)."""
    builder = SparkSession.builder.appName(f"spark-compress {job} {run_id}")
    active = SparkSession.getActiveSession()
    if active is None:
        from pyspark import SparkConf, SparkContext

        SparkContext._ensure_initialized()  # the JVM, so SparkConf() holds spark-submit's settings
        configured = dict(SparkConf().getAll())
        decisions = decide_settings(job, configured, env=os.environ, log_level=log_level,
                                    interactive=_interactive(SparkContext._jvm))
        chosen = {k: d for k, d in decisions.items() if d.source == "job"}
        for key, d in chosen.items():
            builder = builder.config(key, d.value)
        builder = builder.config(JOB_SETTINGS_KEY, _record(chosen))
        return builder.getOrCreate()
    configured = dict(active.conf.getAll)
    # A job already running in this session (one run started inside another) set some keys:
    # they are a job's, not the user's, and are left to that run to take back.
    outer_record = configured.pop(JOB_SETTINGS_KEY, None)
    outer = set(_recorded(outer_record))
    for key in outer:
        configured.pop(key, None)
    decisions = decide_settings(job, configured, env=os.environ, log_level=log_level,
                                interactive=False)
    chosen = {k: d for k, d in decisions.items()
              if d.source == "job" and k not in STARTUP_KEYS}
    for key, d in chosen.items():
        active.conf.set(key, d.value)
    active.conf.set(JOB_SETTINGS_KEY, _record(chosen))
    _REUSED.append((outer_record, set(chosen) - outer))
    return builder.getOrCreate()


# Per reused session run, innermost last: (the record of the run it started inside, or None;
# the keys this run set and must take back).
_REUSED: list[tuple[str | None, set[str]]] = []


def _recorded(record: str | None) -> dict:
    try:
        value = json.loads(record or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def input_paths(args: argparse.Namespace, fingerprint: Fingerprint) -> dict[str, str]:
    """Every input path and config file the run was given, by option (``{"--input": ...}``):
    the ``inputs`` and ``configs`` of the job's :class:`Fingerprint`, which lists all of them.
    Options left out are left out here."""
    values = vars(args)
    return {_flag(d): str(values[d]) for d in (*fingerprint.inputs, *fingerprint.configs)
            if values.get(d) is not None}


def check_output(args: argparse.Namespace, fingerprint: Fingerprint) -> Path:
    """The resolved ``--output``, after :func:`spark_compress.io.output.check_output` with the
    run's inputs (:func:`input_paths`): for a job's ``prepare``, before Spark starts."""
    target = local_path(args.output, what="--output")
    O.check_output(target, overwrite=args.overwrite, inputs=input_paths(args, fingerprint))
    return target


def staged_output(job: str, args: argparse.Namespace, run_id: str,
                  fingerprint: Fingerprint) -> O.StagedOutput:
    """The run's :class:`spark_compress.io.output.StagedOutput` at ``--output``, checked against
    the run's inputs and locked (a :class:`ConfigError` when another run holds the lock)."""
    return O.StagedOutput(local_path(args.output, what="--output"), overwrite=args.overwrite,
                          run_id=run_id, job=job, inputs=input_paths(args, fingerprint))


# The option that sets the format of the data an option names (for the hint of a wrong format).
FORMAT_OPTION = {"--eval-data": "--eval-format", "--train-data": "--eval-format",
                 "--calibration-data": "--eval-format"}
# Reader options that change which files Spark reads: the file check leaves those reads alone.
FILE_SELECTING_OPTIONS = ("pathGlobFilter", "recursiveFileLookup", "modifiedBefore",
                          "modifiedAfter", "ignoreCorruptFiles", "basePath")
PARQUET_MAGIC = b"PAR1"
PARQUET_MAGICS = (PARQUET_MAGIC, b"PARE")  # PARE: a Parquet file with an encrypted footer


def data_path(path: str, fmt: str, *, what: str = "--input", accept_codes: bool = False) -> Path:
    """The local path Spark reads for the input option ``what`` given as ``path``.

    A spark-compress output directory (see :func:`spark_compress.io.output.output_job`) is read
    through its ``data/`` (Parquet, so ``fmt`` must be ``"parquet"``); one without ``data/`` (a
    ``compress_model`` output: a model) is a :class:`ConfigError`. A ``quantize_features`` output,
    or its ``data/`` given directly, holds integer codes, not values: refused unless
    ``accept_codes`` (the scoring job, which reads them with their codebook). Anything else is
    ``path`` itself; a missing path is a :class:`ConfigError`."""
    p = local_path(path, what=what)
    if not p.exists():
        raise ConfigError(f"{what} {path}: no such file or directory")
    job = O.output_job(p)
    if job is None and p.name == "data" and O.output_job(p.parent) == "quantize_features":
        if not accept_codes:
            raise ConfigError(f"{what} {path} is the data/ of a quantize_features output: integer "
                              f"codes, not values; decode {p.parent} with dequantize_features "
                              f"first (score reads it directly as --input {p.parent})")
        return p
    if job is None:
        return p
    fmt_option = FORMAT_OPTION.get(what, "--input-format")
    if not (p / "data").is_dir():
        raise ConfigError(f"{what} {path} is a {job} output with no data/ to read (a model "
                          f"output is a --model, not data)")
    if fmt != "parquet":
        raise ConfigError(f"{what} {path} is a {job} output (Parquet in data/): drop "
                          f"{fmt_option} {fmt}")
    if job == "quantize_features" and not accept_codes:
        raise ConfigError(f"{what} {path} is a quantize_features output: its data/ holds integer "
                          f"codes, not values; decode it with dequantize_features first (score "
                          f"reads it directly)")
    return p / "data"


def _not_parquet(path: Path) -> tuple[Path, str] | None:
    """The first data file under ``path`` (a file or a directory; hidden files and markers
    skipped, as Spark does) that does not start and end with Parquet's magic ``PAR1`` (``PARE``
    when its footer is encrypted), with a guess of what it is (:func:`_guess_format`, or
    ``"truncated"`` when it starts like Parquet but does not end so); ``None`` when all are
    Parquet.
    Empty files are left to Spark. Two small reads per file, no footer parsed."""
    for f in O.data_files(path, ""):
        try:
            size = f.stat().st_size
            if size == 0:
                continue
            with open(f, "rb") as fh:
                head = fh.read(512)
                fh.seek(max(size - 4, 0))
                tail = fh.read(4)
        except OSError:
            continue  # Spark reports an unreadable file itself
        if head[:4] in PARQUET_MAGICS:
            if tail == head[:4]:
                continue
            return f, "truncated"
        return f, _guess_format(f, head)
    return None


def _guess_format(f: Path, head: bytes) -> str:
    """``"csv"``, ``"json"`` or ``"orc"`` when the name or the first bytes say so, else ``""``."""
    suffixes = [s.lower() for s in f.suffixes]
    if head.startswith(b"ORC") or ".orc" in suffixes:
        return "orc"
    if any(s in suffixes for s in (".json", ".jsonl", ".ndjson")) or \
            head.lstrip()[:1] in (b"{", b"["):
        return "json"
    if any(s in suffixes for s in (".csv", ".tsv", ".txt")) or b"," in head.split(b"\n", 1)[0]:
        return "csv"
    return ""


def _record(chosen: Mapping[str, Decision]) -> str:
    return json.dumps({k: d.why for k, d in sorted(chosen.items())}, sort_keys=True)


def commit_report(job: str, spark: SparkSession, out: O.StagedOutput, report: dict) -> None:
    """Finish a job whose ``report`` already holds ``warnings`` and ``gate``
    (:mod:`spark_compress.io.gate`): log the warnings, record the effective Spark settings
    (:func:`spark_settings`), write ``report.json`` and commit ``out``, with ``_SUCCESS`` when
    the gate passed and marked ``_GATE_FAILED`` otherwise (the caller then raises
    :class:`~spark_compress.errors.QualityGateFailed`)."""
    for w in report["warnings"]:
        log.warning("%s: %s", job, w)
    report["spark_settings"] = spark_settings(spark, job)
    out.write_json("report.json", report)
    if report["gate"]["passed"]:
        out.commit()
    else:
        G.commit_gate_failed(out, report["gate"])


def release_session(spark: SparkSession) -> None:
    """Undo what :func:`build_session` set at runtime on a session the job did not create (an
    embedding application's), so its later queries see its own settings again."""
    if _REUSED:
        outer_record, keys = _REUSED.pop()
    else:
        outer_record, keys = None, set(_recorded(spark.conf.get(JOB_SETTINGS_KEY, None)))
    for key in keys:
        spark.conf.unset(key)
    if outer_record is None:
        spark.conf.unset(JOB_SETTINGS_KEY)
    else:
        spark.conf.set(JOB_SETTINGS_KEY, outer_record)


def spark_settings(spark: SparkSession, job: str) -> dict[str, dict]:
    """The effective value of every setting of the job's decision table, for ``report.json``:
    ``{key: {"value": ..., "source": "user" | "job" | "spark"}}`` (``"spark"``: left to Spark's
    own default, whose value is given when Spark reports one), so two runs that differ can be
    told apart by their reports."""
    try:
        chosen = json.loads(spark.conf.get(JOB_SETTINGS_KEY, "{}") or "{}")
    except ValueError:
        chosen = {}
    keys = [*JOB_SPARK_DEFAULTS.get(job, _COMMON), PROGRESS_KEY, LOG_LEVEL_KEY]
    configured = dict(spark.conf.getAll)
    out = {}
    for key in keys:
        if key in chosen:
            source = "job"
        elif key in configured:
            source = "user"
        else:
            source = "spark"
        value = configured.get(key)
        if value is None:
            try:
                value = spark.conf.get(key)
            except Exception:  # noqa: BLE001 - a key with no default: Spark reports none
                value = None
        out[key] = {"value": value, "source": source}
    return out


def read_input(spark: SparkSession, path: str, fmt: str, options: Sequence[str], *,
               what: str = "--input", accept_codes: bool = False) -> DataFrame:
    """Read the input dataset at :func:`data_path` (a spark-compress output is read through its
    ``data/``); a missing local path, a data file that is not Parquet when ``fmt`` is
    ``"parquet"`` (checked by its magic bytes before Spark reads anything, with a hint of the
    right format option), and one Spark cannot read as ``fmt`` (no data files, a corrupt footer,
    a type Spark does not support), is a :class:`ConfigError` naming ``what`` (the option that
    gave the path) and the path. Errors found later, while tasks read the rows, are mapped by
    :func:`run_job`."""
    opts = {"header": "true", "inferSchema": "true"} if fmt == "csv" else {}
    for kv in options:
        if "=" not in kv:
            raise ConfigError(f"--input-option {kv!r} must look like KEY=VALUE")
        k, v = kv.split("=", 1)
        opts[k] = v
    p = data_path(path, fmt, what=what, accept_codes=accept_codes)
    if fmt == "parquet" and not any(k in opts for k in FILE_SELECTING_OPTIONS):
        bad = _not_parquet(p)
        if bad is not None:
            f, guess = bad
            option = FORMAT_OPTION.get(what, "--input-format")
            where = f"{what} {path}" if f == p else f"{what} {path}: {f.relative_to(p)}"
            if guess == "truncated":
                raise ConfigError(f"{where} is a truncated Parquet file (it starts with "
                                  f"{PARQUET_MAGIC.decode()} but does not end with it, as an "
                                  f"unfinished copy or write leaves it): write it again")
            hint = (f"it looks like {guess.upper()}: pass {option} {guess}" if guess else
                    f"pass {option} csv, json or orc to match it")
            raise ConfigError(f"{where} is not a Parquet file (it does not start and end with "
                              f"{PARQUET_MAGIC.decode()}); {hint}")
    try:
        return spark.read.format(fmt).options(**opts).load(p.as_uri())
    except (PySparkException, Py4JJavaError) as e:
        message = _bad_input_message(e)
        if message is None:
            raise
        raise ConfigError(f"{what} {path}: cannot read the input as {fmt}: {message}") from e


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


def emit_summary(job: str, summary: Mapping[str, Any], exit_code: int) -> int:
    """Emit the run's one JSON summary line and return ``exit_code``: into the file named by
    :data:`SUMMARY_FILE_ENV` when that is set (the ``spark-compress`` command prints it on its
    own stdout, so it is not printed here too: under spark-submit this stdout reaches the
    command's stderr), else on stdout.

    ``summary`` holds ``"status"`` (``"ok"``, ``"skipped"``, ``"error"``, or a status of the
    job's own such as a failed quality gate) and the job's figures; ``"job"`` is added, and
    ``"exit_code"`` when it is not 0. Keys are sorted so the line is stable. A summary file
    that cannot be written is reported on stderr and the line goes to stdout instead."""
    document = {"job": job, **summary}
    if exit_code != 0:
        document["exit_code"] = exit_code
    line = json.dumps(document, sort_keys=True, default=str)
    target = os.environ.get(SUMMARY_FILE_ENV)
    if target:
        try:
            # Write then rename: the reader never sees half a line.
            tmp = f"{target}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(line + "\n")
            os.replace(tmp, target)
            return exit_code
        except OSError as e:
            print(f"{job}: warning: cannot write the summary to {target}: {e}", file=sys.stderr)
    print(line, flush=True)
    return exit_code


def emit_error(job: str, exit_code: int, message: str) -> int:
    """Print ``message`` as the job's one-line error on stderr and emit the error summary
    (``"status": "error"``, ``exit_code``, the message without the job prefix)."""
    print(f"{job}: error: {message}", file=sys.stderr, flush=True)
    return emit_summary(job, {"status": "error", "message": message}, exit_code)


class _ArgumentError(Exception):
    """An argv error found by argparse (usage already printed on stderr)."""


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, raising :class:`_ArgumentError` with argparse's message
    instead of exiting, so the error gets its summary line too. ``--help`` still exits 0."""
    def error(message: str):
        parser.print_usage(sys.stderr)
        raise _ArgumentError(message)

    parser.error = error  # type: ignore[method-assign]
    return parser.parse_args(argv)


def _one_line(e: BaseException) -> str:
    """The exception's type and first non-empty line of text (a JVM stack is dozens)."""
    text = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def run_job(job: str, parser: argparse.ArgumentParser,
            body: Callable[[argparse.Namespace, SparkSession, str, object], dict],
            argv: Sequence[str] | None = None,
            prepare: Callable[[argparse.Namespace], object] | None = None,
            fingerprint: Fingerprint | None = None) -> int:
    """Parse ``argv``, run ``prepare`` (config and path checks, before any JVM starts), build
    the session, run ``body`` and map errors to exit codes. A session that was already active
    (an embedding application, a test) is reused and left running.

    With ``fingerprint``, ``args.input_fingerprint`` holds the run's input fingerprint (``body``
    records it in ``report.json`` under :data:`spark_compress.io.output.FINGERPRINT_KEY`), and a
    run whose finished output already holds it returns 0 at once, without ``prepare`` or a
    session, printing a ``"status": "skipped"`` summary (unless ``--overwrite``). Without it,
    ``args.input_fingerprint`` is ``None``.

    ``body`` returns the summary's fields; with a ``"status"`` other than ``"ok"`` it also
    carries ``"exit_code"`` (a failed quality gate: 3), which becomes the exit code. Every
    outcome ends in one :func:`emit_summary` line."""
    try:
        args = _parse(parser, argv)
    except _ArgumentError as e:
        return emit_error(job, 2, str(e))
    logging.basicConfig(level="WARNING", stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("spark_compress").setLevel(args.log_level)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    spark = None
    owned = SparkSession.getActiveSession() is None
    args.input_fingerprint = None
    try:
        if fingerprint is not None:
            args.input_fingerprint = fingerprint.compute(job, args)
            if not args.overwrite and _skip_if_done(job, args):
                return emit_summary(job, {"status": "skipped", "output": args.output,
                                          "input_fingerprint": args.input_fingerprint}, 0)
        ctx = prepare(args) if prepare is not None else None
        spark = build_session(job, run_id, log_level=args.log_level)
        summary = dict(body(args, spark, run_id, ctx))
    except SparkCompressError as e:
        return emit_error(job, 2, str(e))
    except QualityGateFailed as e:
        # The output is written (marked, see spark_compress.io.gate); the summary says so.
        print(str(e), file=sys.stderr)
        return emit_summary(job, {"status": "gate_failed", **e.summary}, EXIT_GATE_FAILED)
    except (PySparkException, Py4JJavaError) as e:
        # A TaskDataError raised in a task reaches the driver as Spark's exception text.
        task_message = task_data_error_message(e)
        if task_message is not None:
            return emit_error(job, 2, task_message)
        message = _bad_input_message(e)
        if message is not None:
            return emit_error(job, 2, f"cannot read the input: {message}")
        log.exception("%s failed", job)
        return emit_summary(job, {"status": "error", "message": _one_line(e)}, 1)
    except Exception as e:  # noqa: BLE001 - the job's last line of defence: report and exit 1
        log.exception("%s failed", job)
        return emit_summary(job, {"status": "error", "message": _one_line(e)}, 1)
    finally:
        if spark is not None and owned:
            spark.stop()
        elif spark is not None:
            release_session(spark)
    exit_code = int(summary.pop("exit_code", 0))
    summary.setdefault("status", "ok")
    return emit_summary(job, summary, exit_code)
