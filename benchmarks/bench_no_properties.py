"""A job run without ``conf/spark-defaults.conf`` against the same job with it: bytes and time.

    .venv/bin/python benchmarks/bench_no_properties.py [--reps 3] [--out bench-out/no-properties]
        [--with-before] [--dataset creditcard|fashion-mnist]

The 8-bit minmax feature job (``jobs/quantize_features.py``, every feature column minmax at 8
bits, the label passed through) on a real table, converted once to Parquet: the credit-card
fraud table (284,807 rows x 30 float32 features + ``Class``; ``make data`` installs the CSV) or,
wider, Fashion-MNIST's 10,000 test images as 784 float32 pixel columns + ``label`` (Debian
``dataset-fashion-mnist``: ``python scripts/fetch_data.py --with-apt``). Run through
``spark-submit --master local[2]`` as a scheduler's operator runs it:

- ``no-properties``: no ``--properties-file``, no ``SPARK_CONF_DIR``: only what the job sets
  itself (``spark_compress.spark.jobkit.JOB_SPARK_DEFAULTS``);
- ``properties``: the same plus ``--properties-file conf/spark-defaults.conf`` (the JVM flag
  ``-XX:-DontCompileHugeMethods`` and ``spark.driver.memory=4g``, which a job cannot set);
- with ``--with-before``, also ``spark-defaults``: the job with Spark's own defaults forced by
  ``--conf`` (snappy, no codegen settings, 10k-row Arrow batches), i.e. what a run without the
  properties file wrote before the jobs set their own settings.

Runs are interleaved (A B, then B A, ...) so that load on the machine hits both alike; each
figure is the median of ``--reps``. Per run: the wall time of the whole ``spark-submit`` (JVM
start included), the job's own ``encode+write`` phase time (from its log line), the bytes of
``OUT/data``. The codebooks of all variants must be identical (same fit). Prints a Markdown table
and the ratios no-properties / properties (target: within 5% in bytes and in time), and writes
``OUT/no_properties-DATASET.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spark_compress.datasets import ensure  # noqa: E402
from spark_compress.io.output import tree_bytes  # noqa: E402

VENV_BIN = Path(sys.executable).parent
JOB = ROOT / "jobs" / "quantize_features.py"
CONFIG = """# 8-bit minmax on every feature column (bench_no_properties.py)
[job]
passthrough = ["{label}"]
[defaults]
method = "minmax"
bits = 8
"""
BEFORE = {  # Spark's own defaults for what the jobs now set themselves
    "spark.sql.parquet.compression.codec": "snappy",
    "spark.sql.codegen.methodSplitThreshold": "1024",
    "spark.sql.codegen.hugeMethodLimit": "65535",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
}
VARIANTS = {
    "no-properties": [],
    "properties": ["--properties-file", str(ROOT / "conf" / "spark-defaults.conf")],
    "spark-defaults": [a for k, v in BEFORE.items() for a in ("--conf", f"{k}={v}")],
}
PHASE = re.compile(r"spark_compress: (\S+): done in ([0-9.]+) s")


def env() -> dict[str, str]:
    """spark-submit's environment: the venv first on PATH, loopback, the venv's Python for the
    workers, and no Spark or log configuration of the caller's."""
    e = {k: v for k, v in os.environ.items()
         if k not in ("SPARK_CONF_DIR", "SPARK_HOME", "PYSPARK_DRIVER_PYTHON",
                      "SPARK_SUBMIT_OPTS", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS")}
    e |= {"PATH": os.pathsep.join([str(VENV_BIN), e.get("PATH", "")]),
          "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    return e


def creditcard_parquet(path: Path) -> Path:
    """The credit-card CSV as Parquet (float32 features, int ``Class``, 4 files), made once."""
    if (path / "_SUCCESS").exists():
        return path
    script = f"""
from pyspark.sql import SparkSession, functions as F
spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
         .config("spark.sql.parquet.compression.codec", "zstd").getOrCreate())
csv = {str(ensure("creditcard"))!r}
df = spark.read.option("header", True).option("inferSchema", True).csv(csv)
feats = [c for c in df.columns if c != "Class"]
(df.select(*[F.col(c).cast("float").alias(c) for c in feats], F.col("Class").cast("int"))
 .repartition(4).write.mode("overwrite").option("parquet.enable.dictionary", "false")
 .parquet({str(path)!r}))
"""
    subprocess.run([sys.executable, "-c", script], check=True, env=env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


def _idx(path: Path):
    """An idx file of unsigned bytes (gzip) as a numpy array."""
    import numpy as np

    raw = gzip.decompress(path.read_bytes())
    if raw[:3] != b"\0\0\x08":
        raise ValueError(f"{path} is not an idx file of unsigned bytes (magic {raw[:4]!r})")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_parquet(path: Path) -> Path:
    """Fashion-MNIST's 10,000 test images as 784 float32 columns ``p0..p783`` (pixel / 255)
    and an int ``label``, one Parquet file of 4 row groups, made once."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = path / "part-0.parquet"
    if target.exists():
        return path
    d = ensure("fashion-mnist")
    x = (_idx(d / "t10k-images-idx3-ubyte.gz").reshape(-1, 784) / np.float32(255)).astype(
        np.float32)
    y = _idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int32)
    cols = {f"p{j}": x[:, j] for j in range(784)} | {"label": y}
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path / ".tmp.parquet", compression="zstd",
                   use_dictionary=False, row_group_size=2500)
    (path / ".tmp.parquet").rename(target)
    return path


DATASETS = {"creditcard": (creditcard_parquet, "Class",
                           "credit-card fraud table, 284,807 rows x 30 float32 features + Class"),
            "fashion-mnist": (fashion_parquet, "label",
                              "Fashion-MNIST test set, 10,000 rows x 784 float32 pixels + label")}


def run(variant: str, data: Path, config: Path, out: Path) -> dict:
    """One spark-submit run of the job; its wall time, phase times, output bytes."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(VENV_BIN / "spark-submit"), "--master", "local[2]",
           "--conf", "spark.ui.enabled=false", *VARIANTS[variant], str(JOB),
           "--input", str(data), "--config", str(config), "--output", str(out)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"bench_no_properties: {variant} failed (exit {r.returncode}):\n"
                 f"{(r.stdout + r.stderr)[-4000:]}")
    phases = {m[1]: float(m[2]) for m in PHASE.finditer(r.stdout + r.stderr)}
    report = json.loads((out / "report.json").read_text())
    return {"variant": variant, "wall_s": round(wall, 3), "phases_s": phases,
            "data_bytes": tree_bytes(out / "data"),
            "codebook": (out / "codebook.json").read_text(),
            "spark_settings": report.get("spark_settings"),
            "log_lines": len((r.stdout + r.stderr).splitlines()),
            "load_avg_1min": round(os.getloadavg()[0], 1)}


def median(runs: list[dict], key) -> float:
    return statistics.median(key(r) for r in runs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "bench-out" / "no-properties")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="creditcard")
    p.add_argument("--with-before", action="store_true",
                   help="also run the job with Spark's own defaults forced (the old behaviour)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    make, label, what = DATASETS[args.dataset]
    data = make(args.out / f"{args.dataset}.parquet")
    config = args.out / f"minmax8-{args.dataset}.toml"
    config.write_text(CONFIG.format(label=label))
    variants = ["no-properties", "properties"] + (["spark-defaults"] if args.with_before else [])
    load_before = os.getloadavg()
    runs: list[dict] = []
    for rep in range(args.reps):
        order = variants if rep % 2 == 0 else variants[::-1]
        for v in order:
            r = run(v, data, config, args.out / f"out-{args.dataset}-{v}")
            r["rep"] = rep
            runs.append(r)
            print(f"rep {rep} {v}: wall {r['wall_s']:.1f} s, encode+write "
                  f"{r['phases_s'].get('encode+write', float('nan')):.1f} s, "
                  f"{r['data_bytes']:,} B, load {r['load_avg_1min']}", file=sys.stderr)
    codebooks = {r["codebook"] for r in runs}
    if len(codebooks) != 1:
        sys.exit("bench_no_properties: the variants fitted different codebooks")

    by = {v: [r for r in runs if r["variant"] == v] for v in variants}
    summary = {v: {"wall_s": median(rs, lambda r: r["wall_s"]),
                   "encode_write_s": median(rs, lambda r: r["phases_s"]["encode+write"]),
                   "job_phases_s": median(rs, lambda r: sum(r["phases_s"].values())),
                   "data_bytes": median(rs, lambda r: r["data_bytes"]),
                   "log_lines": median(rs, lambda r: r["log_lines"]),
                   "wall_runs": [r["wall_s"] for r in rs],
                   "spark_settings": rs[0]["spark_settings"]} for v, rs in by.items()}
    base = summary["properties"]
    ratios = {f"{v} / properties": {k: round(s[k] / base[k], 3) for k in
                                    ("data_bytes", "wall_s", "job_phases_s", "encode_write_s")}
              for v, s in summary.items() if v != "properties"}
    machine = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "python": platform.python_version(),
               "pyspark": __import__("pyspark").__version__,
               "load_avg_before": [round(x, 1) for x in load_before],
               "load_avg_after": [round(x, 1) for x in os.getloadavg()],
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (args.out / f"no_properties-{args.dataset}.json").write_text(json.dumps(
        {"dataset": what, "machine": machine, "summary": summary, "ratios": ratios,
         "runs": [{k: v for k, v in r.items() if k != "codebook"} for r in runs]},
        indent=2, sort_keys=True))

    print(f"{what}, 8-bit minmax; medians of {args.reps} interleaved runs; {machine['machine']}, "
          f"load average {machine['load_avg_before'][0]} before, "
          f"{machine['load_avg_after'][0]} after; {machine['date']}")
    print()
    print("| variant | output bytes | spark-submit wall s | job phases s | encode+write s "
          "| log lines |")
    print("|---|---|---|---|---|---|")
    for v, s in summary.items():
        print(f"| {v} | {s['data_bytes']:,} | {s['wall_s']:.1f} | {s['job_phases_s']:.1f} "
              f"| {s['encode_write_s']:.1f} | {s['log_lines']:.0f} |")
    print()
    print("| ratio | bytes | wall | job phases | encode+write | within 5% (bytes, wall) |")
    print("|---|---|---|---|---|---|")
    for name, r in ratios.items():
        met = ("yes" if abs(r["data_bytes"] - 1) <= 0.05 and abs(r["wall_s"] - 1) <= 0.05
               else "no")
        print(f"| {name} | {r['data_bytes']:.3f} | {r['wall_s']:.3f} | {r['job_phases_s']:.3f} "
              f"| {r['encode_write_s']:.3f} | {met if name.startswith('no-') else '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
