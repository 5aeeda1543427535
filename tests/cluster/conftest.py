"""One real Spark standalone cluster (a master and two 1-core workers) for the whole test run.

The daemons are started from the installed pyspark with ``spark-class``, bound to loopback on
free ports, and stopped by PID at the end of the session, also when startup fails. Jobs reach
the cluster through :meth:`Cluster.submit`, which runs ``spark-submit`` as a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SPARK_SUBMIT = VENV_BIN / "spark-submit"
PROPERTIES_FILE = REPO / "conf" / "spark-defaults.conf"
HOST = "127.0.0.1"

WORKERS = 2
# Both workers register 12-13 s after start on an idle 2-core machine, 70 s at load average 13.
REGISTRATION_TIMEOUT = 180.0
SUBMIT_TIMEOUT = 600.0  # the machine is shared with other heavy work
STOP_GRACE = 20.0
LOG_TAIL = 40

# The worker sizes and the per-application settings the cluster tests rely on: two 1-core
# executors (one per worker), 1 GiB each, and several Arrow batches per partition.
SUBMIT_CONF = {
    "spark.executor.memory": "1g",
    "spark.cores.max": str(WORKERS),
    "spark.sql.execution.arrow.maxRecordsPerBatch": "1000",
}


def spark_home() -> Path:
    """The pyspark package directory: the pip install is a complete Spark distribution."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def spark_env(**extra: str) -> dict[str, str]:
    """The environment of every daemon and ``spark-submit``.

    The venv's ``bin/`` goes first on ``PATH`` (the launchers run ``python3`` from ``PATH``) and
    ``PYSPARK_PYTHON`` is the venv's interpreter, so drivers and Python workers have pandas and
    pyarrow. The hostname resolves to a non-loopback address on these machines.
    """
    env = dict(os.environ)
    env.update(
        SPARK_HOME=str(spark_home()),
        SPARK_LOCAL_IP=HOST,
        PYSPARK_PYTHON=sys.executable,
        PATH=os.pathsep.join([str(VENV_BIN), env.get("PATH", "")]),
    )
    env.pop("PYSPARK_DRIVER_PYTHON", None)  # would run the driver outside the venv
    env.update(extra)
    return env


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the kernel reports free on loopback (all held open until chosen)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]


def tail(path: Path, lines: int = LOG_TAIL) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class JobRun:
    """A finished ``spark-submit``: its command, exit code and output."""

    cmd: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        """For assertion messages: the command, exit code and the tails of both streams. The
        Python driver's stderr (log lines, tracebacks) arrives on stdout: spark-submit's
        ``PythonRunner`` merges the two; its own stderr is the JVM's logging."""
        out = "\n".join(self.stdout.splitlines()[-2 * LOG_TAIL:])
        err = "\n".join(self.stderr.splitlines()[-LOG_TAIL:])
        return (f"$ {' '.join(self.cmd)}\nexit code {self.returncode} after {self.seconds:.0f} s"
                f"\n--- stdout (tail) ---\n{out}\n--- stderr (tail) ---\n{err}")


@dataclass
class Cluster:
    """A running standalone master and its workers."""

    master_url: str
    web_url: str
    work_dirs: tuple[Path, ...]
    conf_dir: Path
    log_dir: Path
    _submits: int = 0
    # The running daemons by name ("master", "worker-0", ...), their command lines and
    # environment: what the fault helpers below and :meth:`restart_worker` need. The fixture fills
    # them; a restart replaces the Popen in place, so the fixture's teardown stops the new one.
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)
    daemon_commands: dict[str, list[str]] = field(default_factory=dict)
    daemon_env: dict[str, str] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        """The master's JSON status: ``workers``, ``aliveworkers``, ``activeapps``,
        ``completedapps`` and more."""
        with urllib.request.urlopen(self.web_url + "/json/", timeout=10) as r:
            return json.load(r)

    def submit(self, script: str, *args: str, conf: Mapping[str, str] | None = None,
               timeout: float = SUBMIT_TIMEOUT) -> JobRun:
        """Run ``spark-submit --master <this cluster> script args`` from the repository root.

        Settings come from ``conf/spark-defaults.conf`` (if present), then :data:`SUBMIT_CONF`,
        then ``conf``. stdout and stderr are also kept under the cluster's log directory. On
        timeout the whole process group (the launcher JVM and the Python driver) is killed and
        the test fails.
        """
        cmd = [str(SPARK_SUBMIT), "--master", self.master_url]
        if PROPERTIES_FILE.is_file():
            cmd += ["--properties-file", str(PROPERTIES_FILE)]
        for k, v in {**SUBMIT_CONF, **(conf or {})}.items():
            cmd += ["--conf", f"{k}={v}"]
        cmd += [script, *args]
        self._submits += 1
        stem = self.log_dir / f"submit-{self._submits}-{Path(script).stem}"
        # SPARK_CONF_DIR=conf/ puts conf/log4j2.properties on the classpath, as `make demo` does.
        env = spark_env(SPARK_CONF_DIR=str(self.conf_dir))
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            timed_out = True
        else:
            timed_out = False
        stem.with_suffix(".stdout").write_text(out, encoding="utf-8")
        stem.with_suffix(".stderr").write_text(err, encoding="utf-8")
        run = JobRun(tuple(cmd), proc.returncode, out, err, time.monotonic() - t0)
        if timed_out:
            pytest.fail(f"killed after {timeout:.0f} s:\n{run.describe()}")
        return run

    # ------------------------------------------------------------------ faults (test_faults.py)

    def worker_names(self) -> list[str]:
        return sorted(n for n in self.daemons if n.startswith("worker-"))

    def executor_pids(self, worker: str) -> list[int]:
        """PIDs of the executor JVMs (``CoarseGrainedExecutorBackend``) that ``worker`` runs now:
        its direct children, so executors of other engineers' clusters are never matched."""
        return self._descendants(worker)[0]

    def pyspark_daemon_pids(self, worker: str) -> list[int]:
        """PIDs of the ``pyspark.daemon`` processes that ``worker``'s executors started (one
        per executor, from its first Python task on)."""
        return self._descendants(worker)[1]

    def python_worker_pids(self, worker: str) -> list[int]:
        """PIDs of the Python workers under ``worker``'s executors: the processes each
        ``pyspark.daemon`` forks to run tasks (a fork keeps the daemon's command line). One
        exists from the start of a Python task and is reused by later tasks."""
        return self._descendants(worker)[2]

    def _descendants(self, worker: str) -> tuple[list[int], list[int], list[int]]:
        """Executors, pyspark daemons and Python workers under ``worker``, from one ``/proc``
        snapshot."""
        procs = processes()
        parent = self.daemons[worker].pid
        executors = [p.pid for p in procs
                     if p.ppid == parent and "CoarseGrainedExecutorBackend" in p.cmdline]
        daemons = [p.pid for p in procs if p.ppid in executors and "pyspark" in p.cmdline]
        forks = [p.pid for p in procs if p.ppid in daemons and "pyspark" in p.cmdline]
        return executors, daemons, forks

    def restart_worker(self, name: str) -> None:
        """Start worker ``name`` again with its original command, work dir and log (appended),
        once its old process is gone; return when the master lists :data:`WORKERS` ALIVE
        workers, one of them new. Fails the test after :data:`REGISTRATION_TIMEOUT`."""
        old = self.daemons[name]
        if old.poll() is None:
            old.kill()
        old.wait(timeout=STOP_GRACE)
        known = {w["id"] for w in self.state().get("workers", [])}
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            self.daemons[name] = subprocess.Popen(
                self.daemon_commands[name], env=self.daemon_env, cwd=self.log_dir.parent,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + REGISTRATION_TIMEOUT
        alive: list[dict] = []
        while time.monotonic() < deadline:
            if self.daemons[name].poll() is not None:
                pytest.fail(f"restarted {name} exited with {self.daemons[name].returncode}:\n"
                            f"{tail(log_path)}")
            alive = [w for w in self.state().get("workers", []) if w.get("state") == "ALIVE"]
            if len(alive) == WORKERS and any(w["id"] not in known for w in alive):
                return
            time.sleep(1.0)
        pytest.fail(f"restarted {name} did not register within {REGISTRATION_TIMEOUT:.0f} s: "
                    f"ALIVE workers {[w['id'] for w in alive]}\n{tail(log_path)}")


@dataclass(frozen=True)
class Proc:
    """One process from ``/proc``: its PID, parent PID and command line (NULs as spaces)."""

    pid: int
    ppid: int
    cmdline: str


def processes() -> list[Proc]:
    """Every process visible in ``/proc`` now; those that exit while being read are skipped."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # The command name in field 2 may hold spaces and parentheses: split after the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.append(Proc(int(d.name), ppid, cmdline.strip()))
    return out


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every daemon, then SIGKILL those still alive after :data:`STOP_GRACE`."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _wait_for_workers(cluster: Cluster, procs: dict[str, subprocess.Popen],
                      logs: dict[str, Path]) -> None:
    def fail(why: str) -> None:
        dump = "\n".join(f"--- {name}: {logs[name]} (tail) ---\n{tail(logs[name])}"
                         for name in procs)
        pytest.fail(f"standalone cluster did not start: {why}\n{dump}")

    deadline = time.monotonic() + REGISTRATION_TIMEOUT
    last = "the master's web UI never answered"
    while time.monotonic() < deadline:
        dead = {name: p.returncode for name, p in procs.items() if p.poll() is not None}
        if dead:
            fail(f"daemon(s) exited early: {dead}")
        try:
            state = cluster.state()
        except (urllib.error.URLError, OSError, ValueError) as e:
            last = f"{cluster.web_url}/json/: {e}"
        else:
            alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
            if len(alive) >= WORKERS:
                return
            last = f"{len(alive)} of {WORKERS} workers ALIVE"
        time.sleep(1.0)
    fail(f"timed out after {REGISTRATION_TIMEOUT:.0f} s: {last}")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """Start a master and :data:`WORKERS` workers, wait until all are registered, yield a
    :class:`Cluster`; stop every daemon by PID afterwards, whatever happened."""
    root = tmp_path_factory.mktemp("spark-cluster")
    log_dir = root / "logs"
    log_dir.mkdir()
    # The daemons read spark-env.sh and spark-defaults.conf from SPARK_CONF_DIR: give them an
    # empty one so nothing from the caller's environment leaks in.
    daemon_conf = root / "daemon-conf"
    daemon_conf.mkdir()
    port, webui, *worker_webuis = free_ports(2 + WORKERS)
    master_url = f"spark://{HOST}:{port}"
    spark_class = str(spark_home() / "bin" / "spark-class")
    commands = {"master": [spark_class, "org.apache.spark.deploy.master.Master",
                           "--host", HOST, "--port", str(port), "--webui-port", str(webui)]}
    work_dirs = []
    for i, ui in enumerate(worker_webuis):
        work = root / f"worker-{i}"
        work.mkdir()
        work_dirs.append(work)
        commands[f"worker-{i}"] = [
            spark_class, "org.apache.spark.deploy.worker.Worker", master_url,
            "--cores", "1", "--memory", "1g", "--work-dir", str(work), "--host", HOST,
            "--webui-port", str(ui)]
    env = spark_env(SPARK_CONF_DIR=str(daemon_conf))
    c = Cluster(master_url, f"http://{HOST}:{webui}", tuple(work_dirs), REPO / "conf", log_dir)
    procs: dict[str, subprocess.Popen] = c.daemons
    c.daemon_commands.update(commands)
    c.daemon_env.update(env)
    logs: dict[str, Path] = {}
    with ExitStack() as files:
        try:
            for name, cmd in commands.items():
                logs[name] = log_dir / f"{name}.log"
                log = files.enter_context(open(logs[name], "wb"))
                procs[name] = subprocess.Popen(cmd, env=env, cwd=root, stdin=subprocess.DEVNULL,
                                               stdout=log, stderr=subprocess.STDOUT)
            _wait_for_workers(c, procs, logs)
            yield c
        finally:
            # Workers first: a worker that loses its master keeps retrying for a while.
            _stop([p for name, p in procs.items() if name != "master"])
            _stop([p for name, p in procs.items() if name == "master"])
