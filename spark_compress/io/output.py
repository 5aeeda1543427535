"""Atomic job outputs on a local or shared (NFS-style) filesystem that never replace what a job
did not write.

A job writes everything under a hidden staging directory next to the output, writes ``_SUCCESS``
last, then renames the staging directory onto the output path (one ``rename``: a reader sees
either nothing or a finished output). A failed job removes its staging directory; an output
directory without ``_SUCCESS`` is never produced by a job (unless it commits with
``success=False``, see :meth:`StagedOutput.commit`). A driver that was killed cannot clean up: the
next run of the same output removes hidden leftovers (``.X.staging-*``, ``.X.old-*``) in which
nothing was written for :data:`STALE_SECONDS`, and logs a warning naming younger ones (another
run may still be writing them).

Which outputs are ours: every staging directory gets the marker file ``_SPARK_COMPRESS``
(:data:`MARKER`: JSON with the job, run id, package version and, written at commit, the list of
the output's top-level entries) when the run starts, so a committed output always carries it.
An output of a version before the marker is recognised by ``_SUCCESS`` plus a ``report.json``
whose ``"job"`` is one of :data:`JOBS`. :func:`output_job` names the job.

What a job may write over (:func:`check_output`, called by every job's ``prepare`` before Spark
starts, by :class:`StagedOutput` when staging starts and again by :meth:`StagedOutput.commit`):

- never a path that equals, contains or is inside one of the run's inputs (``--input``,
  ``--model``, ``--eval-data``, ``--train-data``, ``--config``, ...), with or without
  ``--overwrite``; paths are compared both as given (made absolute, ``..`` folded) and with
  symbolic links resolved, so a link on either side does not hide the relation;
- never a symbolic link, a file, or a directory that holds anything at its top level that its
  marker does not list (without a marker list: anything but :data:`OUTPUT_ENTRIES`), or that is
  not ours at all: each is a :class:`ConfigError` naming the path and why, nothing touched;
- with ``--overwrite``: an empty directory, or a previous output of ours holding only what its
  job wrote there; without it: nothing that exists.

Concurrent runs: a :class:`StagedOutput` holds the output's :class:`OutputLock` (``flock`` on
``.NAME.lock`` next to the output, released by the OS when the process ends, even by SIGKILL)
from staging to commit or abort; a second run of the same output exits 2 naming the holder. The
commit also refuses, replacing nothing, when the target changed since the run started (its
inode, top-level mtime or marker run id), which catches writers that take no lock.

Idempotent reruns: a job records an *input fingerprint* in ``report.json``
(:func:`fingerprint_of`), the SHA-256 of a canonical JSON document describing everything that
decides its output (see ``spark_compress.spark.jobkit.Fingerprint``). A finished output whose
recorded fingerprint equals a new run's (:func:`finished_fingerprint`) needs no rerun.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from spark_compress import __version__
from spark_compress.errors import ConfigError

SUCCESS = "_SUCCESS"
REPORT = "report.json"
FINGERPRINT_KEY = "input_fingerprint"


def local_path(path: str, *, what: str) -> Path:
    """Accept a plain path or a ``file:`` URI; other schemes are not supported yet."""
    if path.startswith("file://"):
        path = path[len("file://"):]
    elif path.startswith("file:"):
        path = path[len("file:"):]
    elif "://" in path:
        raise ConfigError(f"{what} {path!r}: only local or shared-filesystem paths are "
                          f"supported (use a path mounted on every node)")
    return Path(path).absolute()


log = logging.getLogger(__name__)

MARKER = "_SPARK_COMPRESS"
MARKER_FORMAT = "spark-compress output"
JOBS = ("quantize_features", "dequantize_features", "compress_model", "score")
# What the jobs write at the top level of an output: the entries an output without a marker
# (written before the marker existed) or with a marker that lists none may hold.
OUTPUT_ENTRIES = frozenset({SUCCESS, MARKER, REPORT, "codebook.json", "data",
                            "model.safetensors"})


def read_marker(path: Path) -> dict | None:
    """The marker document of the spark-compress output at ``path``, ``None`` when there is none
    (or it is not one of ours)."""
    try:
        doc = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == MARKER_FORMAT else None


def output_job(path: Path) -> str | None:
    """The job that wrote the spark-compress output directory at ``path`` (its marker's
    ``job``, ``"spark-compress"`` when the marker names none), or for an output of a version
    before the marker, the ``"job"`` of its ``report.json`` when it has ``_SUCCESS`` and that job
    is one of :data:`JOBS`; ``None`` when ``path`` is not such a directory."""
    if not path.is_dir():
        return None
    marker = read_marker(path)
    if marker is not None:
        job = marker.get("job")
        return job if isinstance(job, str) and job else "spark-compress"
    if not (path / SUCCESS).is_file():
        return None
    try:
        report = json.loads((path / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    job = report.get("job") if isinstance(report, dict) else None
    return job if job in JOBS else None


def _not_ours(target: Path) -> str | None:
    """Why the directory ``target`` is not something ``--overwrite`` may replace, or ``None``
    when it is empty or a previous output holding only what a job wrote there."""
    entries = sorted(p.name for p in target.iterdir())
    if not entries:
        return None
    marker = read_marker(target)
    if marker is not None and isinstance(marker.get("entries"), list):
        allowed = {str(e) for e in marker["entries"]} | {MARKER}
    elif output_job(target) is not None:
        allowed = set(OUTPUT_ENTRIES)
    else:
        return (f"it holds neither the {MARKER} marker nor the {SUCCESS} and {REPORT} of a "
                f"spark-compress job")
    extra = [e for e in entries if e not in allowed]
    if not extra:
        return None
    shown = ", ".join(repr(e) for e in extra[:5]) + (", ..." if len(extra) > 5 else "")
    return f"it also holds {shown}, which no spark-compress job wrote there"


def _forms(path: Path) -> set[Path]:
    """``path`` as given (absolute, ``..`` folded) and with every symbolic link resolved."""
    return {Path(os.path.normpath(path.absolute())), path.resolve()}


def _relation(target: Path, path: Path) -> str | None:
    """``"equal"``, ``"contains"`` (``path`` is under ``target``), ``"inside"`` (``target`` is
    under ``path``) or ``None``, comparing each form of either path (see :func:`_forms`), so that
    a link on either side cannot hide the relation."""
    pairs = [(t, i) for t in _forms(target) for i in _forms(path)]
    if any(t == i for t, i in pairs):
        return "equal"
    if any(t in i.parents for t, i in pairs):
        return "contains"
    if any(i in t.parents for t, i in pairs):
        return "inside"
    return None


def check_inputs(target: Path, inputs: Mapping[str, object]) -> None:
    """Raise :class:`ConfigError` when ``target`` equals, contains or is inside one of
    ``inputs`` (option name, e.g. ``"--input"`` -> its path; ``None`` values are skipped)."""
    for what, value in inputs.items():
        if value is None:
            continue
        relation = _relation(target, local_path(str(value), what=what))
        if relation == "equal":
            raise ConfigError(f"output {target} is the same path as {what} {value}: choose "
                              f"another --output")
        if relation == "contains":
            raise ConfigError(f"output {target} contains {what} {value} (replacing the output "
                              f"would delete it): choose another --output")
        if relation == "inside":
            raise ConfigError(f"output {target} is inside {what} {value} (writing it would change "
                              f"that input): choose another --output")


def check_output(target: Path, *, overwrite: bool,
                 inputs: Mapping[str, object] | None = None) -> None:
    """Raise :class:`ConfigError` naming ``target`` and why when the job may not write there:
    it equals, contains or is inside one of ``inputs`` (see :func:`check_inputs`; also without
    ``overwrite``), or it exists and is a symbolic link, a file, or (with ``overwrite``) a
    directory that is not empty and not a previous spark-compress output holding only what its
    job wrote (see the module docstring), or (without ``overwrite``) any existing path. Nothing
    is written or removed."""
    check_inputs(target, inputs or {})
    if not os.path.lexists(target):
        return
    if target.is_symlink():
        raise ConfigError(f"output {target} is a symbolic link (to {os.readlink(target)}): pass "
                          f"the directory it points to as --output, or remove the link")
    if not target.is_dir():
        raise ConfigError(f"output {target} exists and is a file, not an output directory: "
                          f"choose another --output (--overwrite never replaces a file)")
    reason = _not_ours(target)
    if reason is not None:
        raise ConfigError(f"output {target} already exists and is not a spark-compress output "
                          f"({reason}): choose another --output (--overwrite replaces only a "
                          f"previous output of a spark-compress job)")
    if not overwrite:
        if (target / SUCCESS).exists():
            state = "a finished output"
        elif output_job(target) is not None:
            state = "an unfinished output"
        else:
            state = "a directory"
        raise ConfigError(f"output {target} already exists ({state}); pass --overwrite to "
                          f"replace it or choose another --output")


def lock_path(target: Path) -> Path:
    """The lock file of the output ``target``: ``.NAME.lock`` next to it."""
    return target.parent / f".{target.name}.lock"


class OutputLock:
    """An exclusive lock on one output path, held by one run from staging to commit or abort.

    The lock is ``flock(LOCK_EX | LOCK_NB)`` on :func:`lock_path`, which holds the run id, pid,
    host and start time of the holder. The operating system releases it when the holder ends in
    any way (also SIGKILL), so no stale-lock rule is needed: a lock file left by a killed run is
    taken over by the next run. On a local filesystem two opens of the file conflict also within
    one process (NFS emulates ``flock`` with byte-range locks, which conflict between processes
    only). On a filesystem without locks (``flock`` fails with ``ENOLCK``/``EOPNOTSUPP``) a
    warning is logged and the run goes on unlocked; the commit still refuses an output that
    changed meanwhile.
    """

    def __init__(self, target: Path, run_id: str):
        self.path = lock_path(target)
        self._fd: int | None = None
        holder = {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for _ in range(100):  # a race with a releasing run (see below) repeats at most rarely
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = _read_holder(fd)
                os.close(fd)
                raise ConfigError(
                    f"output {target} is being written by another run ({other}; lock file "
                    f"{self.path}): wait for it to finish or choose another --output") from None
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                log.warning("%s: the filesystem does not support locks (%s); concurrent runs "
                            "on this output are only caught at commit", self.path, e.strerror)
                return
            # A releasing run unlinks the file while it still holds the lock: the file locked
            # here may no longer be the one at the path. Lock the one at the path.
            try:
                same = os.path.samestat(os.stat(self.path), os.fstat(fd))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, (json.dumps(holder, sort_keys=True) + "\n").encode("utf-8"))
                self._fd = fd
                return
            os.close(fd)
        raise ConfigError(f"output {target}: could not lock {self.path}; remove it if no run "
                          f"of this output is active")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            if os.path.samestat(os.stat(self.path), os.fstat(self._fd)):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    """The holder of a lock as ``run R, pid P on host H``, from its lock file."""
    try:
        doc = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"run {doc['run_id']}, pid {doc['pid']} on host {doc['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a run that has not yet written its id"


def _identity(target: Path) -> tuple | None:
    """What tells whether ``target`` changed: its inode, its top-level mtime and its marker's
    run id; ``None`` when nothing is there."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return None
    marker = read_marker(target) if target.is_dir() else None
    return st.st_dev, st.st_ino, st.st_mtime_ns, (marker or {}).get("run_id")


# A staging directory in which nothing was written for this long belongs to a dead run.
STALE_SECONDS = 24 * 3600


def _last_write(path: Path) -> float:
    """The newest modification time of ``path`` and everything under it."""
    newest = path.lstat().st_mtime
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                newest = max(newest, (Path(root) / name).lstat().st_mtime)
            except FileNotFoundError:  # removed while we looked
                pass
    return newest


def clean_stale(target: Path, *, now: float | None = None,
                stale_seconds: float = STALE_SECONDS) -> list[Path]:
    """Remove the leftovers of killed runs next to ``target`` (see the module docstring);
    return the removed paths."""
    now = time.time() if now is None else now
    removed = []
    if not target.parent.is_dir():
        return removed
    prefixes = tuple(f".{target.name}.{kind}-" for kind in ("staging", "old"))
    for p in sorted(target.parent.iterdir()):
        if not p.name.startswith(prefixes) or not p.is_dir():
            continue
        try:
            idle = now - _last_write(p)
        except FileNotFoundError:
            continue
        if idle >= stale_seconds:
            shutil.rmtree(p, ignore_errors=True)
            log.warning("removed %s, left by a run that stopped %.0f h ago", p, idle / 3600)
            removed.append(p)
        else:
            log.warning("%s was written %.0f s ago: another run of this output may be running",
                        p, idle)
    return removed


class StagedOutput:
    """Stage a job's output directory and commit it atomically, holding the output's
    :class:`OutputLock` from here to :meth:`commit` or :meth:`abort`.

    Creating one checks the target (:func:`check_output` with ``inputs``), takes the lock (a
    :class:`ConfigError` when another run holds it), notes what is at the target, and creates the
    staging directory with the marker in it. ``job`` names the job in the marker.

    >>> out = StagedOutput(Path("/data/out"), overwrite=False)   # doctest: +SKIP
    >>> (out.staging / "data")  # write here, then out.commit()  # doctest: +SKIP
    """

    def __init__(self, target: Path, *, overwrite: bool, run_id: str | None = None,
                 job: str | None = None, inputs: Mapping[str, object] | None = None):
        self.target = target
        self.overwrite = overwrite
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.job = job
        self.inputs = dict(inputs or {})
        check_output(target, overwrite=overwrite, inputs=self.inputs)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._lock = OutputLock(target, self.run_id)
        try:
            # Another run may have committed between the check above and the lock.
            check_output(target, overwrite=overwrite, inputs=self.inputs)
            self._seen = _identity(target)
            clean_stale(target)
            self.staging = target.parent / f".{target.name}.staging-{self.run_id}"
            self.staging.mkdir()
            self._write_marker(None)
        except BaseException:
            self._lock.release()
            raise

    def _write_marker(self, entries: list[str] | None) -> None:
        doc = {"format": MARKER_FORMAT, "job": self.job, "run_id": self.run_id,
               "version": __version__, "entries": entries}
        self.write_json(MARKER, doc)

    def uri(self, *parts: str) -> str:
        """A ``file://`` URI under the staging directory, for Spark writers."""
        return self.staging.joinpath(*parts).as_uri()

    def write_json(self, name: str, doc: Mapping[str, Any]) -> None:
        (self.staging / name).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")

    def commit(self, *, success: bool = True) -> None:
        """Check the target again, write the marker with the list of entries, ``_SUCCESS``
        (unless ``success`` is false: an output a scheduler must not take for a good one) and
        move the staging directory onto the target; release the lock.

        Raises :class:`ConfigError`, replacing nothing, when the target changed since this run
        started (another writer that took no lock, or a user) or may no longer be replaced
        (:func:`check_output`)."""
        if _identity(self.target) != self._seen:
            raise ConfigError(f"output {self.target} changed while this run was writing it "
                              f"(another run or a user wrote there): nothing was replaced; "
                              f"check it, then rerun")
        check_output(self.target, overwrite=self.overwrite, inputs=self.inputs)
        names = {p.name for p in self.staging.iterdir()} | {MARKER}
        self._write_marker(sorted(names | {SUCCESS}) if success else sorted(names))
        if success:
            (self.staging / SUCCESS).write_text("", encoding="utf-8")
        old = None
        if os.path.lexists(self.target):
            old = self.target.parent / f".{self.target.name}.old-{self.run_id}"
            os.rename(self.target, old)
        os.rename(self.staging, self.target)
        self._lock.release()
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Remove the staging directory and release the lock (idempotent)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self._lock.release()


def tree_bytes(path: Path) -> int:
    """Bytes of the data files under ``path`` (a file or a directory), skipping hidden files and
    markers (names starting with ``.`` or ``_``) like Spark's readers do."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        total += sum((Path(root) / f).stat().st_size for f in files
                     if not f.startswith((".", "_")))
    return total


def data_files(path: Path, suffix: str) -> list[Path]:
    """Data files under ``path`` ending with ``suffix``, sorted, markers skipped."""
    if path.is_file():
        return [path]
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        out += [Path(root) / f for f in files
                if f.endswith(suffix) and not f.startswith((".", "_"))]
    return sorted(out)


def file_listing(path: Path) -> list[list]:
    """``[relative path, size in bytes, mtime in ns]`` of every data file under ``path`` (or of
    ``path`` itself when it is a file, under its own name), sorted by path, with hidden files and
    markers (``.crc``, ``_SUCCESS``, ``.staging-*``: names starting with ``.`` or ``_``) skipped
    like Spark's readers skip them. Nothing is read but directory entries and ``stat``."""
    if path.is_file():
        st = path.stat()
        return [[path.name, st.st_size, st.st_mtime_ns]]
    rows = []
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        for f in files:
            if f.startswith((".", "_")):
                continue
            full = Path(root) / f
            st = full.stat()
            rows.append([full.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns])
    return sorted(rows)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the bytes of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint_of(doc: Mapping[str, Any]) -> str:
    """Hex SHA-256 of ``doc`` as canonical JSON (sorted keys, no whitespace, UTF-8); values JSON
    cannot hold are written with ``str``."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def finished_fingerprint(target: Path) -> str | None:
    """The input fingerprint recorded in the finished output at ``target``: ``None`` when there is
    no ``_SUCCESS``, no readable ``report.json`` or no fingerprint in it (an output of a version
    without fingerprints, or a broken one: never taken as proof that a rerun can be skipped)."""
    if not (target / SUCCESS).is_file():
        return None
    try:
        report = json.loads((target / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = report.get(FINGERPRINT_KEY) if isinstance(report, dict) else None
    return value if isinstance(value, str) else None


def parquet_column_bytes(path: Path) -> dict[str, int]:
    """Compressed bytes per top-level column over all Parquet files under ``path``, from the
    footers alone."""
    import pyarrow.parquet as pq

    sizes: dict[str, int] = {}
    for f in data_files(path, ".parquet"):
        pf = pq.ParquetFile(f)
        md = pf.metadata
        # Leaf columns map to top-level fields by position (names may contain dots).
        top = []
        for field in pf.schema_arrow:
            top += [field.name] * _leaves(field.type)
        for rg in range(md.num_row_groups):
            group = md.row_group(rg)
            for c in range(group.num_columns):
                name = top[c]
                sizes[name] = sizes.get(name, 0) + group.column(c).total_compressed_size
    return sizes


def _leaves(t) -> int:
    """Number of Parquet leaf columns of an Arrow type."""
    import pyarrow as pa

    if pa.types.is_struct(t):
        return sum(_leaves(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _leaves(t.value_type)
    if pa.types.is_map(t):
        return _leaves(t.key_type) + _leaves(t.item_type)
    return 1
