"""Fixed cost of a tiny job: ``spark-compress quantize`` on 1,000 rows against a bare
``spark-submit`` script that reads and writes the same Parquet, JVM start included, one run.

    .venv/bin/python benchmarks/bench_fixed_cost.py [--reps 3] [--rows 1000] [--out FILE]

Both run from the command line as a user would, in local mode (``local[*]``), timed from the
start of the process to its exit (wall clock), ``--reps`` times each, interleaved (A B A B ...)
so that load on the machine hits both alike; the figure is the ratio of the medians. Both get the
same Spark environment: the installed pyspark, ``PYSPARK_PYTHON`` this interpreter and
``SPARK_CONF_DIR`` the packaged defaults (so both log the same way and read the same
``spark-defaults.conf``); the difference is what the job does beyond reading and writing (the
fit's aggregation passes, the encode, the row count check, the evaluation pass, the codebook and
report) plus the command's own start (argument check, importing the job's parser). Also timed:
``spark-compress quantize --help`` (the command's start without Spark).

The input: an ``id`` and 8 float64 columns of normal values; the config: minmax, 8 bits. The
result is printed as one JSON line and, with ``--out``, written as a Markdown section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spark_compress import cli  # noqa: E402

CONFIG = """\
[job]
passthrough = ["id"]

[defaults]
method = "minmax"
bits = 8
"""

BARE = """\
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("bare read-write").getOrCreate()
spark.read.parquet(sys.argv[1]).write.parquet(sys.argv[2])
spark.stop()
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SPARK_CONF_DIR", "PYSPARK_DRIVER_PYTHON", "SPARK_COMPRESS_SUMMARY_FILE")}
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    return env


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {r.returncode}:\n{r.stderr[-5000:]}")
    return seconds


def measure(rows: int, reps: int, work: Path) -> dict:
    rng = np.random.default_rng(0)
    columns = {"id": np.arange(rows, dtype=np.int64),
               **{f"f{i}": rng.normal(size=rows) for i in range(8)}}
    pq.write_table(pa.table(columns), work / "in.parquet")
    (work / "q.toml").write_text(CONFIG)
    (work / "bare.py").write_text(BARE)
    env = _env()
    home = cli.spark_home()
    bare_env = {**env, "SPARK_HOME": str(home), "SPARK_CONF_DIR": str(cli.defaults_dir()),
                "PATH": os.pathsep.join([str(home / "bin"), str(Path(sys.executable).parent),
                                         env.get("PATH", os.defpath)])}
    command = [sys.executable, "-m", "spark_compress"]
    ours, bare = [], []
    for i in range(reps):
        ours.append(_timed([*command, "quantize", "--input", "in.parquet", "--config", "q.toml",
                            "--output", f"ours-{i}"], env, work))
        bare.append(_timed([str(home / "bin" / "spark-submit"), "--master", "local[*]",
                            "bare.py", "in.parquet", f"bare-{i}"], bare_env, work))
    helps = [_timed([*command, "quantize", "--help"], env, work) for _ in range(reps)]
    m_ours, m_bare = statistics.median(ours), statistics.median(bare)
    return {"rows": rows, "reps": reps, "spark_compress_quantize_s": [round(t, 2) for t in ours],
            "bare_spark_submit_s": [round(t, 2) for t in bare],
            "help_s": [round(t, 2) for t in helps],
            "median_spark_compress_s": round(m_ours, 2), "median_bare_s": round(m_bare, 2),
            "median_help_s": round(statistics.median(helps), 2),
            "ratio": round(m_ours / m_bare, 2)}


def markdown(r: dict) -> str:
    load = os.getloadavg()
    return f"""## Fixed cost of a tiny job (issue #10)

`.venv/bin/python benchmarks/bench_fixed_cost.py --reps {r['reps']} --rows {r['rows']}`, \
{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores \
shared with other work (load average {load[0]:.1f} at the end), Python {platform.python_version()}.

{r['rows']:,} rows (an `id` and 8 float64 columns), minmax 8 bits, `local[*]`, JVM start
included, wall clock from process start to exit, interleaved runs:

| run | seconds (each run) | median |
|---|---|---|
| `spark-compress quantize` (the installed command) | {', '.join(map(str, r['spark_compress_quantize_s']))} | {r['median_spark_compress_s']} |
| bare `spark-submit` script: `spark.read.parquet(in).write.parquet(out)` | {', '.join(map(str, r['bare_spark_submit_s']))} | {r['median_bare_s']} |
| `spark-compress quantize --help` (the command's start, no JVM) | {', '.join(map(str, r['help_s']))} | {r['median_help_s']} |

Ratio of the medians: **{r['ratio']}x** (target <= 1.5x). Both runs get the same environment
(the packaged `spark-defaults.conf` and `log4j2.properties`); the difference is the job's work
beyond one read and one write: the fit's aggregation, the encode, the row-count check and the
evaluation pass, and writing the codebook and report.
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--out", type=Path, help="write the result as Markdown here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fixed-cost-") as tmp:
        result = measure(args.rows, args.reps, Path(tmp))
    print(json.dumps(result))
    if args.out:
        args.out.write_text(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
