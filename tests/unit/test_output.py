"""spark_compress.io.output: leftovers of killed runs are cleaned by the next run."""

from __future__ import annotations

import functools
import os

import pytest

from spark_compress.io import output as O

pytestmark = pytest.mark.unit

DAY = 24 * 3600
# The clock of the staleness tests: every age is measured against this injected "now", never
# against the wall clock, so a slow machine cannot move a leftover across a threshold.
NOW = 1_800_000_000.0


def _leftover(path, age_seconds):
    """A directory with one file, everything last written ``age_seconds`` before :data:`NOW`."""
    (path / "data").mkdir(parents=True)
    (path / "data" / "part-0.parquet").write_bytes(b"x")
    t = NOW - age_seconds
    for p in (path / "data" / "part-0.parquet", path / "data", path):
        os.utime(p, (t, t))
    return path


def test_next_run_removes_stale_leftovers_only(tmp_path, caplog, monkeypatch):
    target = tmp_path / "out"
    monkeypatch.setattr(O, "clean_stale", functools.partial(O.clean_stale, now=NOW))
    stale = _leftover(tmp_path / ".out.staging-20260101T000000-abc123", DAY + 60)
    stale_old = _leftover(tmp_path / ".out.old-20260101T000000-abc123", 2 * DAY)
    fresh = _leftover(tmp_path / ".out.staging-20261128T120000-def456", 60)
    other = _leftover(tmp_path / ".out2.staging-20260101T000000-abc123", 2 * DAY)
    unrelated = _leftover(tmp_path / ".out.backup-1", 2 * DAY)
    # a stale directory holding one recent file is not stale
    busy = _leftover(tmp_path / ".out.staging-20260101T000000-aaaaaa", 2 * DAY)
    (busy / "data" / "part-1.parquet").write_bytes(b"y")
    for p in (busy / "data" / "part-1.parquet", busy / "data"):
        os.utime(p, (NOW - 60, NOW - 60))

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
    assert O.clean_stale(target, now=NOW, stale_seconds=101) == []
    assert O.clean_stale(target, now=NOW, stale_seconds=100.5) == []
    assert O.clean_stale(target, now=NOW, stale_seconds=100) == [d]  # idle >= threshold
    assert not d.exists()
    assert O.clean_stale(tmp_path / "missing" / "out") == []
