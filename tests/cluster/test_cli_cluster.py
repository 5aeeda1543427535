"""``spark-compress quantize --master spark://...`` from the installed package (a wheel built from
this checkout, ``pip install --target``, see tests/conftest.py) on the real standalone cluster of
tests/cluster/conftest.py: the command adds a zip of the installed package with ``--py-files``,
the executors receive it, and the output equals the same command's in local mode.

The input has a dictionary column, so the executors run the package's Python code (the
``mapInArrow`` lookup), not only native Spark expressions. (No quantile or percentile column:
their sketch-based edges differ today between local[2] and this cluster on the same file, in the
6th significant digit; that is the sketch's determinism across partitionings, tested elsewhere.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import spark_compress

pytestmark = pytest.mark.cluster

# What Cluster.submit passes (tests/cluster/conftest.py SUBMIT_CONF): the workers' sizes.
SETTINGS = ["--conf", "spark.executor.memory=1g", "--conf", "spark.cores.max=2",
            "--conf", "spark.sql.execution.arrow.maxRecordsPerBatch=1000"]

ROWS = 20_000
CONFIG = """\
[job]
passthrough = ["id"]

[defaults]
method = "minmax"
bits = 8
strings = "dictionary"
"""


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli-cluster")
    rng = np.random.default_rng(3)
    columns = {"id": np.arange(ROWS, dtype=np.int64), "x": rng.normal(size=ROWS),
               "q": rng.lognormal(size=ROWS),
               "city": rng.choice(["Lyon", "Oslo", "Pune", "Lima"], size=ROWS)}
    pq.write_table(pa.table(columns), root / "in.parquet", row_group_size=2_000)
    (root / "q.toml").write_text(CONFIG)
    return root / "in.parquet", root / "q.toml"


def _summary(run) -> dict:
    lines = run.stdout.splitlines()
    assert len(lines) == 1, run.stdout[-3000:] + run.stderr[-5000:]
    return json.loads(lines[0])


def _rows(out: Path) -> list[tuple]:
    return sorted(tuple(r.values()) for r in pq.read_table(out / "data").to_pylist())


def test_cluster_run_from_the_install_ships_the_package_and_equals_local(
        cluster, installed_package, table, tmp_path):
    src, conf = table
    args = ["quantize", "--input", src, "--config", conf]

    local = installed_package.run(*args, "--output", tmp_path / "local",
                                  "--master", "local[2]", cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-5000:]
    assert "--py-files" not in local.stderr.splitlines()[0]

    known = {a["id"] for a in cluster.state()["completedapps"]}
    remote = installed_package.run(*args, "--master", cluster.master_url, *SETTINGS,
                                   "--output", tmp_path / "cluster", cwd=tmp_path)
    assert remote.returncode == 0, remote.stderr[-8000:]
    zip_name = f"spark_compress-{spark_compress.__version__}.zip"
    command = remote.stderr.splitlines()[0]
    assert command.startswith("spark-compress: ") and f"/{zip_name} " in command, command
    assert f"{installed_package.target}/spark_compress/jobs/quantize_features.py" in command

    # The executors that ran its tasks fetched the zip into their work dirs.
    summary = _summary(remote)
    (app,) = [a for a in cluster.state()["completedapps"] if a["id"] not in known]
    assert app["name"].startswith("spark-compress quantize_features"), app
    fetched = [p for w in cluster.work_dirs for p in (w / app["id"]).glob(f"*/{zip_name}")]
    assert fetched, (app["id"], [sorted(w.rglob("*")) for w in cluster.work_dirs])
    assert all(p.read_bytes() == fetched[0].read_bytes() for p in fetched)

    assert summary == {**_summary(local), "output": str(tmp_path / "cluster")}
    assert (tmp_path / "cluster" / "codebook.json").read_bytes() == (
        tmp_path / "local" / "codebook.json").read_bytes()
    assert _rows(tmp_path / "cluster") == _rows(tmp_path / "local")


def test_no_py_files_leaves_the_package_to_the_workers(cluster, installed_package, table,
                                                       tmp_path):
    """With ``--no-py-files`` no zip is built or shipped (the workers here import the package
    from the venv they run in, as workers with the wheel installed would)."""
    src, conf = table

    run = installed_package.run("quantize", "--input", src, "--config", conf, "--no-py-files",
                                "--master", cluster.master_url, *SETTINGS,
                                "--output", tmp_path / "o", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-8000:]
    assert "--py-files" not in run.stderr.splitlines()[0]
    assert _summary(run)["rows_out"] == ROWS
