"""spark_compress.io.output: leftovers of killed runs are cleaned by the next run."""

from __future__ import annotations

import os
import time

import pytest

from spark_compress.io import output as O

pytestmark = pytest.mark.unit

DAY = 24 * 3600


def _leftover(path, age_seconds):
    """A directory with one file, everything last written ``age_seconds`` ago."""
    (path / "data").mkdir(parents=True)
    (path / "data" / "part-0.parquet").write_bytes(b"x")
    t = time.time() - age_seconds
    for p in (path / "data" / "part-0.parquet", path / "data", path):
        os.utime(p, (t, t))
    return path


def test_next_run_removes_stale_leftovers_only(tmp_path, caplog):
    target = tmp_path / "out"
    stale = _leftover(tmp_path / ".out.staging-20260101T000000-abc123", DAY + 60)
    stale_old = _leftover(tmp_path / ".out.old-20260101T000000-abc123", 2 * DAY)
    fresh = _leftover(tmp_path / ".out.staging-20261128T120000-def456", 60)
    other = _leftover(tmp_path / ".out2.staging-20260101T000000-abc123", 2 * DAY)
    unrelated = _leftover(tmp_path / ".out.backup-1", 2 * DAY)
    # a stale directory holding one recent file is not stale
    busy = _leftover(tmp_path / ".out.staging-20260101T000000-aaaaaa", 2 * DAY)
    (busy / "data" / "part-1.parquet").write_bytes(b"y")

    out = O.StagedOutput(target, overwrite=False, run_id="now")
    assert not stale.exists() and not stale_old.exists()
    assert fresh.exists() and other.exists() and unrelated.exists() and busy.exists()
    assert out.staging.is_dir()
    text = caplog.text
    assert str(stale) in text and "stopped 24 h ago" in text
    assert str(fresh) in text and "may be running" in text
    out.abort()


def test_clean_stale_threshold_and_missing_parent(tmp_path):
    target = tmp_path / "out"
    d = _leftover(tmp_path / ".out.staging-x", 100)
    assert O.clean_stale(target, stale_seconds=101) == []
    assert O.clean_stale(target, stale_seconds=99) == [d]
    assert not d.exists()
    assert O.clean_stale(tmp_path / "missing" / "out") == []
