"""Faults on a real standalone cluster: processes killed by PID while ``quantize_features`` runs.

The job runs through ``spark-submit`` on the credit-card fraud table (284,807 rows x 31 columns)
with ``conf/creditcard.toml``, read from :data:`FILES` Parquet files with one Spark partition per
file, so every stage has several tasks on each of the two 1-core executors. The first Python
task starts half-way through the job (the quantile fit: the ``Amount`` column is a
``percentile`` column). Each fault run selects the test-only worker module
``hooks/pyspark_fault_hook.py``: that task writes its process id to a file and waits there, and
the test kills the process (or its executor, or its worker) exactly then. So the fault lands
mid-job, in a running task, by construction: no guess from CPU time, no timing.

What Spark promises and the tests check: a task that fails is retried (``spark.task.maxFailures``,
4 on a cluster), also on another executor, and an executor that is lost has its tasks re-run,
so one fault does not fail the job, and the output equals a clean run's: the same codebook bytes,
the same report figures, the same rows (compared as multisets; the job promises no row order).
With ``spark.task.maxFailures=1`` the same fault fails the job: exit 1, and the output that was
there before is left as it was, with no staging directory beside it.

Every report figure, the codebook bytes and the rows are compared exactly (``evaluate_features``
adds the partitions' squared errors with ``math.fsum``, whose result does not depend on the order
the partitions arrive in).

Killing a worker daemon leaves the session's cluster with one worker: the test restarts it
(:meth:`Cluster.restart_worker`), also when it fails, so the module order does not matter.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from spark_compress.datasets import ensure

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
QUANTIZE = "jobs/quantize_features.py"
CONFIG = REPO / "conf" / "creditcard.toml"
CREDITCARD_ROWS = 284_807
FILES = 8
# One partition per input file: files (about 9.5 MB) are never split below 16 MB, and the
# opening cost charged per file keeps Spark from packing two files into one partition.
PARTITIONING = {"spark.sql.files.maxPartitionBytes": "16m",
                "spark.sql.files.openCostInBytes": "16m"}
HOOKS = Path(__file__).resolve().parent / "hooks"
# Upper bounds for events that do happen, so that a broken run fails instead of hanging; no
# outcome depends on them. The machine is shared: the job may take minutes to reach its first
# Python task.
FAULT_TIMEOUT = 600.0
EXIT_TIMEOUT = 60.0
# Figures of report.json that name the run and its arguments (the fingerprint covers --output)
# rather than describe the output.
RUN_FIELDS = ("run_id", "output", "input_fingerprint")


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def creditcard(workdir: Path) -> Path:
    """The credit-card CSV as :data:`FILES` zstd Parquet files of consecutive rows."""
    table = pacsv.read_csv(ensure("creditcard"))
    assert table.num_rows == CREDITCARD_ROWS
    path = workdir / "creditcard"
    path.mkdir()
    step = -(-table.num_rows // FILES)
    for i in range(FILES):
        pq.write_table(table.slice(i * step, step), path / f"part-{i:02d}.parquet",
                       compression="zstd")
    return path


def quantize(cluster, creditcard: Path, out: Path, *extra: str, conf: dict | None = None):
    return cluster.submit(QUANTIZE, "--input", str(creditcard), "--output", str(out),
                          "--config", str(CONFIG), *extra, conf={**PARTITIONING, **(conf or {})})


@pytest.fixture(scope="module")
def clean(cluster, creditcard: Path, workdir: Path) -> Path:
    """The output of a run without faults: what every other run must reproduce."""
    out = workdir / "clean"
    run = quantize(cluster, creditcard, out)
    assert run.returncode == 0, run.describe()
    assert "Lost task" not in run.stderr, f"a task failed without a fault:\n{run.describe()}"
    return out


# ----------------------------------------------------------------------------------- helpers


class FaultHook:
    """The Spark settings that make a job's first Python task stop and say where it runs (see
    ``hooks/pyspark_fault_hook.py``), and the test's side: :meth:`wait` for that task's process
    id, :meth:`release` to let it go on."""

    def __init__(self, directory: Path):
        directory.mkdir()
        self.dir = directory

    @property
    def conf(self) -> dict[str, str]:
        return {"spark.python.worker.module": "pyspark_fault_hook",
                "spark.executorEnv.PYTHONPATH": str(HOOKS),
                "spark.executorEnv.FAULT_HOOK_DIR": str(self.dir)}

    def wait(self, job: "Submission") -> int:
        """The process id of the stopped task's Python worker, once it has written it. Fails if
        the job ends first or nothing came within :data:`FAULT_TIMEOUT`."""
        ready = self.dir / "ready"
        deadline = time.monotonic() + FAULT_TIMEOUT
        while not ready.exists():
            if not job.running():
                pytest.fail(f"the job ended before its first Python task started:\n"
                            f"{job.result().describe()}")
            if time.monotonic() > deadline:
                self.release()
                pytest.fail(f"no Python task started within {FAULT_TIMEOUT:.0f} s:\n"
                            f"{job.result().describe()}")
            time.sleep(0.05)
        return int(ready.read_text(encoding="utf-8"))

    def release(self) -> None:
        (self.dir / "release").touch()


class Submission:
    """``quantize`` in a background thread, with the :class:`FaultHook` in ``hook_dir``, so the
    test can kill processes while it runs. As a context manager it releases the stopped task and
    waits for the job on exit, also when the test fails, so no job outlives its test."""

    def __init__(self, cluster, creditcard: Path, out: Path, *extra: str, hook_dir: Path,
                 conf: dict | None = None):
        self._result: dict = {}
        self.hook = FaultHook(hook_dir)
        conf = {**(conf or {}), **self.hook.conf}

        def target() -> None:
            try:
                self._result["run"] = quantize(cluster, creditcard, out, *extra, conf=conf)
            except BaseException as e:  # noqa: BLE001 - pytest.fail inside the thread too
                self._result["error"] = e

        self._thread = threading.Thread(target=target, name=f"submit {out.name}", daemon=True)
        self._thread.start()

    def __enter__(self) -> "Submission":
        return self

    def __exit__(self, *exc) -> None:
        self.hook.release()
        self._thread.join()

    def stopped_task(self, cluster) -> tuple[str, int]:
        """``(worker, pid)`` of the Python worker whose task stopped in the hook."""
        pid = self.hook.wait(self)
        for worker in cluster.worker_names():
            if pid in cluster.python_worker_pids(worker):
                return worker, pid
        pytest.fail(f"stopped task's process {pid} is under none of the workers "
                    f"{cluster.worker_names()}")

    def running(self) -> bool:
        return self._thread.is_alive()

    def result(self):
        """Wait for the job (``Cluster.submit`` has its own timeout) and return its JobRun."""
        self._thread.join()
        if "error" in self._result:
            raise self._result["error"]
        return self._result["run"]


def kill(pid: int) -> None:
    """SIGKILL ``pid``: a process that holds the stopped task (or owns it), so it is there."""
    os.kill(pid, signal.SIGKILL)


def wait_gone(pids: list[int], what: str) -> None:
    """Fail unless every process of ``pids`` has exited within :data:`EXIT_TIMEOUT`: woken by
    each process's exit (a pidfd becomes readable when its process ends), not by polling."""
    poller, fds = select.poll(), {}
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # already gone
        fds[fd] = pid
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + EXIT_TIMEOUT
    try:
        while fds and time.monotonic() < deadline:
            for fd, _ in poller.poll(max(1, int(1000 * (deadline - time.monotonic())))):
                poller.unregister(fd)
                os.close(fd)
                del fds[fd]
    finally:
        for fd in fds:
            os.close(fd)
    alive = sorted(fds.values())
    assert not alive, f"{what}: {alive} still running {EXIT_TIMEOUT:.0f} s after the fault"


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def sorted_rows(data: Path) -> pa.Table:
    """All rows of a Parquet directory sorted by every column: equal tables are equal
    multisets of rows."""
    table = pq.read_table(data)
    return table.sort_by([(name, "ascending") for name in table.column_names])


def leftovers(out: Path) -> list[str]:
    """Staging or replaced outputs of ``out`` left next to it (``.NAME.staging-*``,
    ``.NAME.old-*``)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def assert_same_output(out: Path, clean: Path) -> None:
    """``out`` is a finished output equal to ``clean``: codebook bytes, report figures, rows."""
    assert sorted(p.name for p in out.iterdir()) == ["_SPARK_COMPRESS", "_SUCCESS",
                                                     "codebook.json", "data", "report.json"]
    assert leftovers(out) == []
    assert (out / "codebook.json").read_bytes() == (clean / "codebook.json").read_bytes()
    got, want = report(out), report(clean)
    assert got["rows_in"] == got["rows_out"] == CREDITCARD_ROWS
    for key in RUN_FIELDS:
        got.pop(key, None)
        want.pop(key, None)
    assert got == want
    rows, expected = sorted_rows(out / "data"), sorted_rows(clean / "data")
    assert rows.num_rows == CREDITCARD_ROWS
    assert rows.schema == expected.schema
    assert rows.equals(expected), "the data differ from the clean run's as multisets of rows"


def lost_tasks(run) -> list[str]:
    """The driver's log lines about failed task attempts (TaskSetManager WARN lines)."""
    return [ln for ln in run.stderr.splitlines() if "Lost task" in ln]


# ------------------------------------------------------------------------------------ faults


def test_clean_run_is_complete(clean):
    assert report(clean)["rows_in"] == report(clean)["rows_out"] == CREDITCARD_ROWS
    assert (clean / "_SUCCESS").exists()
    assert leftovers(clean) == []


def test_killed_python_worker_task_is_retried(cluster, creditcard, workdir, clean):
    out = workdir / "python-killed"
    with Submission(cluster, creditcard, out, hook_dir=workdir / "hook-python") as job:
        worker, pid = job.stopped_task(cluster)
        kill(pid)
        run = job.result()
    assert run.returncode == 0, run.describe()
    lost = lost_tasks(run)
    assert len(lost) == 1, f"killing Python worker {pid} on {worker} should fail exactly its " \
                           f"task:\n{run.describe()}"
    assert "Python worker exited unexpectedly" in run.stderr, run.describe()
    assert_same_output(out, clean)


def test_killed_executor_jvm_is_replaced(cluster, creditcard, workdir, clean):
    out = workdir / "executor-killed"
    with Submission(cluster, creditcard, out, hook_dir=workdir / "hook-executor") as job:
        worker, _ = job.stopped_task(cluster)
        executors = cluster.executor_pids(worker)
        assert len(executors) == 1, f"{worker} runs executors {executors}, expected one"
        doomed = (executors + cluster.pyspark_daemon_pids(worker)
                  + cluster.python_worker_pids(worker))
        kill(executors[0])
        run = job.result()
    assert run.returncode == 0, run.describe()
    assert "Lost executor" in run.stderr, run.describe()
    wait_gone(doomed, f"the killed executor's Python processes on {worker}")
    assert_same_output(out, clean)


def test_killed_worker_daemon_job_completes_on_the_other(cluster, creditcard, workdir, clean):
    out = workdir / "worker-killed"
    try:
        with Submission(cluster, creditcard, out, hook_dir=workdir / "hook-worker") as job:
            worker, _ = job.stopped_task(cluster)
            # The worker's executor and its Python processes must end with it: the executor
            # watches its worker and exits when the connection drops.
            doomed = (cluster.executor_pids(worker) + cluster.pyspark_daemon_pids(worker)
                      + cluster.python_worker_pids(worker))
            kill(cluster.daemons[worker].pid)
            run = job.result()
        wait_gone(doomed, f"the executor of killed {worker}")
    finally:
        for name in cluster.worker_names():
            if cluster.daemons[name].poll() is not None:
                cluster.restart_worker(name)
    assert run.returncode == 0, run.describe()
    assert "Lost executor" in run.stderr, run.describe()
    assert_same_output(out, clean)


def test_failed_overwrite_keeps_the_old_output_and_a_rerun_equals_a_clean_run(
        cluster, creditcard, workdir, clean):
    out = workdir / "rerun"
    shutil.copytree(clean, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # With one attempt per task, the fault that the tests above survive fails the job.
    with Submission(cluster, creditcard, out, "--overwrite", hook_dir=workdir / "hook-rerun",
                    conf={"spark.task.maxFailures": "1"}) as job:
        _, pid = job.stopped_task(cluster)
        kill(pid)
        failed = job.result()
    assert failed.returncode == 1, failed.describe()
    assert "failed 1 times; aborting job" in failed.stderr, failed.describe()
    # The only JSON line is the last one: the error summary, no "ok" summary.
    summaries = [json.loads(ln) for ln in failed.stdout.splitlines() if ln.startswith("{")]
    assert [(s["status"], s["exit_code"]) for s in summaries] == [("error", 1)], \
        failed.describe()
    assert failed.stdout.strip().splitlines()[-1].startswith("{"), failed.describe()
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before, "the failed run changed the previous output"
    assert leftovers(out) == [], "the failed run left its staging directory behind"

    rerun = quantize(cluster, creditcard, out, "--overwrite")
    assert rerun.returncode == 0, rerun.describe()
    assert report(out)["run_id"] != report(clean)["run_id"]
    assert_same_output(out, clean)
