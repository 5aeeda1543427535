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


# ------------------------------------------------------------ what --overwrite may replace

import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from spark_compress.errors import ConfigError  # noqa: E402


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``: directories as ``None``, links by their target, files by
    their bytes."""
    return {str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else
                                       None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


def _committed(target: Path, job: str = "quantize_features", **files: bytes) -> Path:
    """A committed output of ``job`` at ``target`` (through StagedOutput, like the jobs)."""
    out = O.StagedOutput(target, overwrite=True, run_id=f"run-{target.name}", job=job)
    (out.staging / "data").mkdir()
    (out.staging / "data" / "part-0.parquet").write_bytes(b"PAR1 rows PAR1")
    for name, data in files.items():
        (out.staging / name).write_bytes(data)
    out.write_json("report.json", {"job": job})
    out.commit()
    return target


def _legacy(target: Path, job: str = "score") -> Path:
    """An output as versions before the marker wrote it: data/, report.json, _SUCCESS."""
    (target / "data").mkdir(parents=True)
    (target / "data" / "part-0.parquet").write_bytes(b"PAR1 PAR1")
    (target / "report.json").write_text(json.dumps({"job": job}))
    (target / "_SUCCESS").write_text("")
    return target


def test_commit_writes_the_marker_listing_the_entries(tmp_path):
    target = _committed(tmp_path / "out", job="score")
    assert sorted(p.name for p in target.iterdir()) == [
        "_SPARK_COMPRESS", "_SUCCESS", "data", "report.json"]
    marker = json.loads((target / O.MARKER).read_text())
    assert marker == {"format": "spark-compress output", "job": "score", "run_id": "run-out",
                      "version": O.__version__,
                      "entries": ["_SPARK_COMPRESS", "_SUCCESS", "data", "report.json"]}
    assert O.output_job(target) == "score"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging, no lock left


def test_output_job_recognises_outputs_before_the_marker(tmp_path):
    assert O.output_job(_legacy(tmp_path / "old")) == "score"
    foreign = _legacy(tmp_path / "foreign", job="some_other_tool")
    assert O.output_job(foreign) is None
    unfinished = _legacy(tmp_path / "unfinished")
    (unfinished / "_SUCCESS").unlink()
    assert O.output_job(unfinished) is None
    assert O.output_job(tmp_path / "missing") is None
    assert O.output_job(tmp_path / "old" / "report.json") is None


@pytest.mark.parametrize("make", [_committed, _legacy])
def test_overwrite_accepts_a_previous_output_of_ours(tmp_path, make):
    target = make(tmp_path / "out")
    O.check_output(target, overwrite=True, inputs={"--input": str(tmp_path / "in.parquet")})
    with pytest.raises(ConfigError, match=rf"^output {target} already exists \(a finished "
                                          rf"output\); pass --overwrite"):
        O.check_output(target, overwrite=False)


def test_replacing_a_previous_output_leaves_only_the_new_one(tmp_path):
    target = _committed(tmp_path / "out", extra=b"old")
    out = O.StagedOutput(target, overwrite=True, run_id="second", job="score")
    out.write_json("report.json", {"job": "score"})
    out.commit()
    assert sorted(p.name for p in target.iterdir()) == ["_SPARK_COMPRESS", "_SUCCESS",
                                                        "report.json"]
    assert json.loads((target / O.MARKER).read_text())["run_id"] == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def _refused(target: Path, pattern: str, *, overwrite: bool = True, inputs=None) -> None:
    """check_output and StagedOutput both refuse ``target`` with ``pattern`` and touch
    nothing under ``target``'s parent."""
    parent = target.parent
    before = _tree(parent)
    with pytest.raises(ConfigError, match=pattern):
        O.check_output(target, overwrite=overwrite, inputs=inputs)
    with pytest.raises(ConfigError, match=pattern):
        O.StagedOutput(target, overwrite=overwrite, run_id="r", inputs=inputs)
    assert _tree(parent) == before


def test_overwrite_never_replaces_a_folder_with_a_users_file(tmp_path):
    target = _committed(tmp_path / "out")
    (target / "notes.txt").write_text("mine")
    _refused(target, rf"^output {target} already exists and is not a spark-compress output "
                     rf"\(it also holds 'notes.txt', which no spark-compress job wrote there\): "
                     rf"choose another --output \(--overwrite replaces only a previous output")


def test_overwrite_never_replaces_an_old_output_with_a_users_folder(tmp_path):
    target = _legacy(tmp_path / "out")
    (target / "backup").mkdir()
    _refused(target, r"it also holds 'backup', which no spark-compress job wrote there")


def test_marker_lists_what_the_job_wrote(tmp_path):
    target = _committed(tmp_path / "out", **{"extra.json": b"{}"})
    O.check_output(target, overwrite=True)  # listed in the marker: written by the job
    (target / "codebook.json").write_text("{}")  # one of the known names, but not listed
    _refused(target, r"it also holds 'codebook.json'")


def test_overwrite_never_replaces_a_folder_that_is_not_ours(tmp_path):
    target = tmp_path / "home"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    _refused(target, rf"^output {target} already exists and is not a spark-compress output "
                     rf"\(it holds neither the _SPARK_COMPRESS marker nor the _SUCCESS and "
                     rf"report.json of a spark-compress job\)")
    _refused(target, "is not a spark-compress output", overwrite=False)
    foreign = _legacy(tmp_path / "foreign", job="other_tool")
    _refused(foreign, "it holds neither the _SPARK_COMPRESS marker")


def test_overwrite_never_replaces_a_file_or_a_link(tmp_path):
    f = tmp_path / "out"
    f.write_text("a file")
    _refused(f, rf"^output {f} exists and is a file, not an output directory")
    ours = _committed(tmp_path / "ours")
    link = tmp_path / "link"
    link.symlink_to(ours)
    _refused(link, rf"^output {link} is a symbolic link \(to {ours}\): pass the directory it "
                   rf"points to as --output, or remove the link")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    _refused(dangling, rf"^output {dangling} is a symbolic link")
    _refused(dangling, rf"^output {dangling} is a symbolic link", overwrite=False)


def test_an_empty_directory_may_be_replaced_with_overwrite_only(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    _refused(target, r"already exists \(a directory\); pass --overwrite", overwrite=False)
    out = O.StagedOutput(target, overwrite=True, run_id="r")
    out.commit()
    assert sorted(p.name for p in target.iterdir()) == ["_SPARK_COMPRESS", "_SUCCESS"]


def test_unfinished_output_of_ours_is_named_so(tmp_path):
    target = tmp_path / "out"
    out = O.StagedOutput(target, overwrite=False, run_id="gate", job="compress_model")
    out.write_json("report.json", {"job": "compress_model", "gate": {"passed": False}})
    out.commit(success=False)
    assert sorted(p.name for p in target.iterdir()) == ["_SPARK_COMPRESS", "report.json"]
    assert json.loads((target / O.MARKER).read_text())["entries"] == [
        "_SPARK_COMPRESS", "report.json"]
    assert O.output_job(target) == "compress_model"
    assert O.finished_fingerprint(target) is None
    _refused(target, r"already exists \(an unfinished output\); pass --overwrite",
             overwrite=False)
    O.check_output(target, overwrite=True)


# ----------------------------------------------------------------- outputs and inputs


@pytest.mark.parametrize("overwrite", [True, False])
def test_output_equal_to_an_input_is_refused(tmp_path, overwrite):
    src = _committed(tmp_path / "q")
    _refused(src, rf"^output {src} is the same path as --input {src}: choose another --output",
             overwrite=overwrite, inputs={"--input": str(src)})


@pytest.mark.parametrize("overwrite", [True, False])
def test_output_holding_an_input_is_refused(tmp_path, overwrite):
    target = _committed(tmp_path / "q")
    inner = target / "data" / "part-0.parquet"
    _refused(target, rf"^output {target} contains --eval-data {inner} \(replacing the output "
                     rf"would delete it\): choose another --output",
             overwrite=overwrite, inputs={"--model": None, "--eval-data": str(inner)})
    config = tmp_path / "folder" / "c.toml"
    config.parent.mkdir()
    config.write_text("")
    _refused(tmp_path / "folder", r"contains --config .*c\.toml", overwrite=overwrite,
             inputs={"--config": str(config)})


@pytest.mark.parametrize("overwrite", [True, False])
def test_output_inside_an_input_is_refused(tmp_path, overwrite):
    src = tmp_path / "dataset"
    src.mkdir()
    (src / "part-0.parquet").write_bytes(b"PAR1 PAR1")
    target = src / "q" / "deeper"
    _refused(target, rf"^output {target} is inside --input {src} \(writing it would change that "
                     rf"input\): choose another --output",
             overwrite=overwrite, inputs={"--input": str(src)})
    assert not (src / "q").exists()


def test_relations_are_found_through_links_and_relative_paths(tmp_path, monkeypatch):
    real = _committed(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    # the input named through a link to the output
    _refused(real, r"contains --input .*link/data", inputs={"--input": str(link / "data")})
    # the output named through a link to the input's parent
    (real / "data").rename(tmp_path / "data-elsewhere")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").symlink_to(tmp_path / "data-elsewhere")
    _refused(tmp_path / "data-elsewhere" / "out", r"is inside --input in\b",
             inputs={"--input": "in"})
    # relative paths with ".." are made absolute and folded
    _refused(tmp_path / "x", r"is the same path as --input sub/\.\./x",
             inputs={"--input": "sub/../x"})
    _refused(tmp_path / "x", r"is the same path as --input file:x",
             inputs={"--input": "file:x"})
    O.check_output(tmp_path / "x2", overwrite=True, inputs={"--input": "x", "--model": None})


def test_jobs_listed_here_are_the_jobs():
    from spark_compress.jobs import JOBS

    assert O.JOBS == JOBS


# ---------------------------------------------------------------------- concurrent runs


def test_second_run_of_an_output_fails_and_leaves_the_first_intact(tmp_path):
    target = tmp_path / "out"
    first = O.StagedOutput(target, overwrite=False, run_id="first", job="score")
    lock = json.loads(O.lock_path(target).read_text())
    assert {k: lock[k] for k in ("run_id", "pid")} == {"run_id": "first", "pid": os.getpid()}
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match=rf"^output {target} is being written by another "
                                              rf"run \(run first, pid {os.getpid()} on host "
                                              rf".+; lock file .*\.out\.lock\): wait for it"):
            O.StagedOutput(target, overwrite=overwrite, run_id="second")
    (first.staging / "part").write_text("first's data")
    first.commit()
    assert (target / "part").read_text() == "first's data"
    assert not O.lock_path(target).exists()
    with pytest.raises(ConfigError, match="already exists"):
        O.StagedOutput(target, overwrite=False, run_id="third")
    assert (target / "part").read_text() == "first's data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_lock_is_free_again_after_abort(tmp_path):
    target = tmp_path / "out"
    first = O.StagedOutput(target, overwrite=False, run_id="first")
    first.abort()
    first.abort()  # idempotent
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    second = O.StagedOutput(target, overwrite=False, run_id="second")
    second.commit()
    assert O.output_job(target) == "spark-compress"


def test_commit_refuses_an_output_that_appeared_meanwhile(tmp_path):
    """Two runs that started when there was no output: the one that commits second (here a
    writer that took no lock, as an older version would) replaces nothing."""
    target = tmp_path / "out"
    late = O.StagedOutput(target, overwrite=False, run_id="late")
    late._lock.release()  # as if it had run without a lock
    _committed(target)
    before = _tree(target)
    with pytest.raises(ConfigError, match=rf"^output {target} changed while this run was "
                                          rf"writing it .*nothing was replaced"):
        late.commit()
    late.abort()
    assert _tree(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_commit_refuses_a_user_file_added_meanwhile(tmp_path):
    target = _committed(tmp_path / "out")
    run = O.StagedOutput(target, overwrite=True, run_id="r")
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="changed while this run was writing it"):
        run.commit()
    run.abort()
    assert (target / "notes.txt").read_text() == "mine"
    assert (target / "data" / "part-0.parquet").exists()


def test_commit_refuses_an_output_replaced_meanwhile(tmp_path):
    target = _committed(tmp_path / "out")
    run = O.StagedOutput(target, overwrite=True, run_id="r")
    run._lock.release()
    _committed(target)  # another writer replaced it: a new inode and marker run id
    before = _tree(target)
    with pytest.raises(ConfigError, match="changed while this run was writing it"):
        run.commit()
    run.abort()
    assert _tree(target) == before


HOLDER = """
import sys
from pathlib import Path
from spark_compress.io.output import StagedOutput
out = StagedOutput(Path(sys.argv[1]), overwrite=False, run_id="holder")
print("locked", flush=True)
sys.stdin.readline()
"""


def test_lock_held_by_another_process_and_released_when_it_is_killed(tmp_path):
    target = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"  # the child holds the lock now
        with pytest.raises(ConfigError, match=rf"being written by another run \(run holder, "
                                              rf"pid {holder.pid} on host"):
            O.StagedOutput(target, overwrite=True, run_id="mine")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # A killed holder cannot clean up: its lock file and staging directory stay, its lock
    # does not (the kernel dropped it with the process), so the next run goes ahead.
    assert O.lock_path(target).exists()
    run = O.StagedOutput(target, overwrite=False, run_id="mine")
    assert json.loads(O.lock_path(target).read_text())["run_id"] == "mine"
    run.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.staging-holder", "out"]
