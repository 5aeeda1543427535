"""Atomic job outputs on a local or shared (NFS-style) filesystem.

A job writes everything under a hidden staging directory next to the output, writes ``_SUCCESS``
last, then renames the staging directory onto the output path (one ``rename``: a reader sees
either nothing or a finished output). A failed job removes its staging directory; an output
directory without ``_SUCCESS`` is never produced by a job. A driver that was killed cannot clean
up: the next run of the same output removes hidden leftovers (``.X.staging-*``, ``.X.old-*``) in
which nothing was written for :data:`STALE_SECONDS`, and logs a warning naming younger ones
(another run may still be writing them).

Idempotent reruns: a job records an *input fingerprint* in ``report.json``
(:func:`fingerprint_of`), the SHA-256 of a canonical JSON document describing everything that
decides its output (see ``spark_compress.spark.jobkit.Fingerprint``). A finished output whose
recorded fingerprint equals a new run's (:func:`finished_fingerprint`) needs no rerun.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

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


def check_output(target: Path, *, overwrite: bool) -> None:
    """Raise :class:`ConfigError` when ``target`` exists and may not be replaced."""
    if target.exists() and not overwrite:
        state = "a finished output" if (target / SUCCESS).exists() else "a directory"
        raise ConfigError(f"output {target} already exists ({state}); pass --overwrite to "
                          f"replace it or choose another --output")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"output {target} exists and is not a directory")


log = logging.getLogger(__name__)

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
    """Stage a job's output directory and commit it atomically.

    >>> out = StagedOutput(Path("/data/out"), overwrite=False)   # doctest: +SKIP
    >>> (out.staging / "data")  # write here, then out.commit()  # doctest: +SKIP
    """

    def __init__(self, target: Path, *, overwrite: bool, run_id: str | None = None):
        self.target = target
        self.overwrite = overwrite
        self.run_id = run_id or uuid.uuid4().hex[:12]
        check_output(target, overwrite=overwrite)
        clean_stale(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.staging = target.parent / f".{target.name}.staging-{self.run_id}"
        self.staging.mkdir()

    def uri(self, *parts: str) -> str:
        """A ``file://`` URI under the staging directory, for Spark writers."""
        return self.staging.joinpath(*parts).as_uri()

    def write_json(self, name: str, doc: Mapping[str, Any]) -> None:
        (self.staging / name).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")

    def commit(self) -> None:
        """Write ``_SUCCESS`` and move the staging directory onto the target."""
        (self.staging / SUCCESS).write_text("", encoding="utf-8")
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{self.run_id}"
            os.rename(self.target, old)
        os.rename(self.staging, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


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
