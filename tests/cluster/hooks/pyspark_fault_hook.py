"""A test-only Python worker module: the first task to start signals the test, then waits there.

tests/cluster/test_faults.py selects it per job with ``spark.python.worker.module`` (the
``pyspark.daemon`` of each executor runs ``main`` of this module for every Python task; its name
must start with "pyspark" for the daemon to accept it) and puts this directory on the executors'
Python path. Nothing outside the tests refers to it: a user's job never runs it.

With ``FAULT_HOOK_DIR`` set in the executors' environment, the first task of the job (over all
executors: the claim is an exclusive file creation) writes its process id to
``FAULT_HOOK_DIR/ready`` and blocks, mid-task, until the test kills it (or the process that owns
it) or creates ``FAULT_HOOK_DIR/release``. Every other task, and the retries, run unchanged. So a
fault lands in a running task by construction, not by guessing from CPU time.
"""

from __future__ import annotations

import os
import time

from pyspark.worker import main as _worker_main

# A test that never kills nor releases must not hang its job for ever: after this the task goes
# on, the job ends without a failed task, and the test's assertions say so.
MAX_BLOCK_SECONDS = 900.0


def _claim_and_wait(hook_dir: str) -> None:
    try:
        fd = os.open(os.path.join(hook_dir, "claimed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # another task already holds the fault
    os.close(fd)
    tmp = os.path.join(hook_dir, f"ready.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(str(os.getpid()))
    os.rename(tmp, os.path.join(hook_dir, "ready"))  # the test sees the whole pid or nothing
    release = os.path.join(hook_dir, "release")
    deadline = time.monotonic() + MAX_BLOCK_SECONDS
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)


def main(infile, outfile) -> None:
    """``pyspark.worker.main``, after the fault hook when ``FAULT_HOOK_DIR`` is set."""
    hook_dir = os.environ.get("FAULT_HOOK_DIR")
    if hook_dir:
        _claim_and_wait(hook_dir)
    _worker_main(infile, outfile)
