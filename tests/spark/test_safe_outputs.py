"""Outputs that never lose data, and jobs that chain, through the real jobs in process.

Each data-loss case of issue #10 is run as a user would (``--overwrite`` on a folder holding the
input, on a folder with a user's file, output equal to, holding or inside an input): exit 2 with
one line naming the path and why, and every file still there byte for byte. A previous output of
ours is replaced. Every job's output folder is a valid ``--input`` of the jobs that read data:
quantize -> dequantize -> quantize, dequantize -> score, quantize -> score, score -> quantize
(its ``probability`` array column must be passed through or dropped: a clear exit 2 otherwise),
dequantize -> compress_model's ``--eval-data``; codes (a quantize output) are refused where they
would be taken for values. A CSV read with the default ``--input-format parquet`` is one line,
exit 2, before Spark reads anything.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_compress.io import output as O
from spark_compress.spark import features as FT
from spark_compress.spark import jobkit

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]
ROWS = 240
FEATURES = ["f0", "f1", "f2", "f3"]
Q_CONF = ('[job]\npassthrough = ["id", "label"]\n[defaults]\nmethod = "minmax"\nbits = 8\n')
MODEL_CONF = ('[plan]\nquantize = "int8"\n[eval]\nlabel = "label"\n'
              'features = ["f0", "f1", "f2", "f3"]\n')


def _job(name: str):
    spec = importlib.util.spec_from_file_location(f"safe_job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Run(NamedTuple):
    rc: int
    out: str
    err: str


def _main(cap, job: str, argv: list) -> Run:
    """``jobs/<job>.py``'s ``main(argv)`` with what it printed (``cap``: capsys or capfd)."""
    rc = _job(job).main([str(a) for a in argv])
    captured = cap.readouterr()
    return Run(rc, captured.out, captured.err)


def _tree(root: Path) -> dict[str, bytes | str | None]:
    """Every path under ``root``: directories as ``None``, links by target, files by bytes."""
    return {str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else
                                       None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


def _one_error(run: Run, job: str, *fragments: str) -> str:
    """The run exited 2 with exactly one stderr line, naming the job and every fragment."""
    assert run.rc == 2, run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    assert lines[0].startswith(f"{job}: error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    # stdout holds only the error summary, with the same message.
    summary = json.loads(run.out)
    assert summary == {"job": job, "status": "error", "exit_code": 2,
                       "message": lines[0][len(f"{job}: error: "):]}
    return lines[0]


def _codes(directory: Path) -> dict:
    """A Parquet directory as ``{column: values sorted by id}``."""
    t = pq.read_table(directory).sort_by("id")
    return {n: t.column(n).to_pylist() for n in t.column_names}


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory) -> dict[str, Path]:
    """A Parquet table (id, four features, a 0/1 label), a config for it, and one finished
    output of every job: quantize (``q``), dequantize of ``q`` (``r``), a compressed logistic
    regression (``cm``) and the scores of ``r`` (``s``)."""
    import skops.io
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("safe_outputs")
    rng = np.random.default_rng(11)
    x = rng.normal(size=(ROWS, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) > 0).astype(np.int32)
    src = root / "eval.parquet"
    pq.write_table(pa.table({"id": np.arange(ROWS, dtype=np.int64),
                             **{f: x[:, j] for j, f in enumerate(FEATURES)}, "label": y}),
                   src, compression="zstd")
    conf = root / "q.toml"
    conf.write_text(Q_CONF)
    skops.io.dump(LogisticRegression().fit(x, y), root / "lr.skops")
    model_conf = root / "m.toml"
    model_conf.write_text(MODEL_CONF)
    w = {"src": src, "conf": conf, "model_conf": model_conf, "q": root / "q", "r": root / "r",
         "cm": root / "cm", "s": root / "s"}
    assert _job("quantize_features").main(["--input", str(src), "--config", str(conf),
                                           "--output", str(w["q"])]) == 0
    assert _job("dequantize_features").main(["--input", str(w["q"]),
                                             "--output", str(w["r"])]) == 0
    assert _job("compress_model").main(["--model", str(root / "lr.skops"), "--config",
                                        str(model_conf), "--eval-data", str(src),
                                        "--output", str(w["cm"])]) == 0
    w["model"] = w["cm"] / "model.safetensors"
    assert _job("score").main(["--input", str(w["r"]), "--model", str(w["model"]),
                               "--output", str(w["s"])]) == 0
    return w


def _quantize(w, src, out, *extra) -> list:
    return ["--input", src, "--config", w["conf"], "--output", out, *extra]


# ------------------------------------------------------------------- data loss: exit 2


def test_overwrite_of_a_folder_holding_the_input_deletes_nothing(spark, capsys, tmp_path, world):
    """The issue's case: ``--output`` is the folder the input lives in. Before, ``--overwrite``
    deleted the folder with the input in it and exited 0."""
    folder = tmp_path / "project"
    folder.mkdir()
    src = shutil.copy(world["src"], folder / "eval.parquet")
    before = _tree(tmp_path)
    run = _main(capsys, "quantize_features", _quantize(world, src, folder, "--overwrite"))
    _one_error(run, "quantize_features", f"output {folder} contains --input {src}",
               "choose another --output")
    assert _tree(tmp_path) == before


def test_overwrite_of_a_folder_with_a_users_file_deletes_nothing(spark, capsys, tmp_path,
                                                                 world):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    ours = tmp_path / "q"
    shutil.copytree(world["q"], ours)
    (ours / "notes.txt").write_text("my notes on this run")
    before = _tree(tmp_path)
    run = _main(capsys, "quantize_features", _quantize(world, world["src"], home, "--overwrite"))
    _one_error(run, "quantize_features", f"output {home} already exists and is not a "
               "spark-compress output (it holds neither the _SPARK_COMPRESS marker")
    run = _main(capsys, "quantize_features", _quantize(world, world["src"], ours, "--overwrite"))
    _one_error(run, "quantize_features", f"output {ours} already exists and is not a "
               "spark-compress output (it also holds 'notes.txt', which no spark-compress job "
               "wrote there)", "--overwrite replaces only a previous output")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("overwrite", [["--overwrite"], []], ids=["overwrite", "plain"])
def test_output_equal_to_holding_or_inside_an_input_deletes_nothing(spark, capsys, tmp_path,
                                                                   world, overwrite):
    r = tmp_path / "r"
    shutil.copytree(world["r"], r)
    dataset = tmp_path / "dataset"
    shutil.copytree(world["r"] / "data", dataset)
    before = _tree(tmp_path)
    run = _main(capsys, "quantize_features", _quantize(world, r, r, *overwrite))
    _one_error(run, "quantize_features", f"output {r} is the same path as --input {r}")
    run = _main(capsys, "quantize_features", _quantize(world, r / "data", r, *overwrite))
    _one_error(run, "quantize_features", f"output {r} contains --input {r / 'data'} "
               "(replacing the output would delete it)")
    run = _main(capsys, "quantize_features", _quantize(world, dataset, dataset / "q", *overwrite))
    _one_error(run, "quantize_features", f"output {dataset / 'q'} is inside --input {dataset} "
               "(writing it would change that input)")
    # scores written over the model's own folder
    cm = tmp_path / "cm"
    shutil.copytree(world["cm"], cm)
    before = _tree(tmp_path)
    run = _main(capsys, "score", ["--input", r, "--model", cm / "model.safetensors",
                                  "--output", cm, *overwrite])
    _one_error(run, "score", f"output {cm} contains --model {cm / 'model.safetensors'}")
    assert _tree(tmp_path) == before


def test_overwrite_never_replaces_a_file_or_a_link(spark, capsys, tmp_path, world):
    f = tmp_path / "scores.parquet"
    shutil.copy(world["src"], f)
    link = tmp_path / "latest"
    link.symlink_to(world["q"])
    before, before_q = _tree(tmp_path), _tree(world["q"])
    run = _main(capsys, "quantize_features", _quantize(world, world["src"], f, "--overwrite"))
    _one_error(run, "quantize_features", f"output {f} exists and is a file")
    run = _main(capsys, "quantize_features", _quantize(world, world["src"], link, "--overwrite"))
    _one_error(run, "quantize_features", f"output {link} is a symbolic link (to {world['q']})")
    assert _tree(tmp_path) == before and _tree(world["q"]) == before_q


def test_a_previous_output_of_ours_is_replaced(spark, capsys, tmp_path, world):
    out = tmp_path / "q"
    shutil.copytree(world["q"], out)
    old = json.loads((out / O.MARKER).read_text())
    (out / "data" / "part-leftover.parquet").write_bytes(b"inside data/: ours to replace")
    run = _main(capsys, "quantize_features", _quantize(world, world["src"], out, "--overwrite"))
    assert run.rc == 0, run.err
    marker = json.loads((out / O.MARKER).read_text())
    assert marker["job"] == "quantize_features" and marker["run_id"] != old["run_id"]
    assert marker["entries"] == sorted(p.name for p in out.iterdir())
    assert not (out / "data" / "part-leftover.parquet").exists()
    assert (out / "codebook.json").read_bytes() == (world["q"] / "codebook.json").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


def test_a_file_added_while_the_job_runs_is_kept_and_the_commit_refused(spark, capsys,
                                                                       monkeypatch, tmp_path,
                                                                       world):
    """The check is made again at commit: a user's file that appears while the job runs."""
    out = tmp_path / "q"
    shutil.copytree(world["q"], out)
    evaluate = FT.evaluate_features

    def a_user_writes_meanwhile(df, codebook):
        (out / "notes.txt").write_text("written during the run")
        return evaluate(df, codebook)

    monkeypatch.setattr(FT, "evaluate_features", a_user_writes_meanwhile)
    before = _tree(world["q"])
    run = _main(capsys, "quantize_features", _quantize(world, world["src"], out, "--overwrite"))
    _one_error(run, "quantize_features", f"output {out} changed while this run was writing it",
               "nothing was replaced")
    assert (out / "notes.txt").read_text() == "written during the run"
    assert {k: v for k, v in _tree(out).items() if k != "notes.txt"} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


# ---------------------------------------------------------------------- concurrent runs


def test_a_run_of_an_output_being_written_fails_and_leaves_it_intact(spark, capsys, tmp_path,
                                                                     world):
    out = tmp_path / "q"
    holder = O.StagedOutput(out, overwrite=False, run_id="holder", job="quantize_features")
    try:
        for extra in ([], ["--overwrite"]):
            run = _main(capsys, "quantize_features", _quantize(world, world["src"], out, *extra))
            _one_error(run, "quantize_features", f"output {out} is being written by another run "
                       f"(run holder, pid {os.getpid()} on host", "wait for it to finish")
        (holder.staging / "data").mkdir()
    except BaseException:
        holder.abort()
        raise
    holder.commit()
    assert sorted(p.name for p in out.iterdir()) == ["_SPARK_COMPRESS", "_SUCCESS", "data"]


def test_two_concurrent_runs_without_overwrite_do_not_replace_each_other(spark, capsys,
                                                                        monkeypatch, tmp_path,
                                                                        world):
    """Run B starts while run A is between its fit and its commit (called from inside A): B
    passes its checks before Spark (no output yet), then finds A's lock and exits 2; A commits."""
    out = tmp_path / "q"
    evaluate = FT.evaluate_features
    second: list[int] = []

    def second_run_starts(df, codebook):
        if not second:
            second.append(_job("quantize_features").main(
                [str(a) for a in _quantize(world, world["src"], out)]))
        return evaluate(df, codebook)

    monkeypatch.setattr(FT, "evaluate_features", second_run_starts)
    run = _main(capsys, "quantize_features", _quantize(world, world["src"], out))
    assert run.rc == 0 and second == [2], run.err
    assert f"output {out} is being written by another run" in run.err
    assert (out / "codebook.json").read_bytes() == (world["q"] / "codebook.json").read_bytes()
    report = json.loads((out / "report.json").read_text())
    assert json.loads((out / O.MARKER).read_text())["run_id"] == report["run_id"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


# ------------------------------------------------------------------------- jobs that chain


def test_quantize_dequantize_quantize(spark, capsys, tmp_path, world):
    """Values that are codes decoded (a minmax grid point each) quantize back to the same codes
    with the same codebook range."""
    q2 = tmp_path / "q2"
    run = _main(capsys, "quantize_features", _quantize(world, world["r"], q2))
    assert run.rc == 0, run.err
    assert _codes(q2 / "data") == _codes(world["q"] / "data")
    report = json.loads((q2 / "report.json").read_text())
    assert report["rows_in"] == ROWS
    assert report["bytes_in"] == O.tree_bytes(world["r"] / "data")  # data/, not report.json


def test_dequantize_then_score_reads_data(spark, capsys, tmp_path, world):
    """Before, score read report.json under the dequantize output as Parquet and failed."""
    direct = tmp_path / "direct"
    run = _main(capsys, "score", ["--input", world["r"] / "data", "--model", world["model"],
                                  "--output", direct])
    assert run.rc == 0, run.err
    assert json.loads((world["s"] / "report.json").read_text())["rows_out"] == ROWS
    assert _codes(world["s"] / "data") == _codes(direct / "data")


def test_quantize_then_score(spark, capsys, tmp_path, world):
    out = tmp_path / "scores"
    run = _main(capsys, "score", ["--input", world["q"], "--model", world["model"],
                                  "--output", out])
    assert run.rc == 0, run.err
    report = json.loads((out / "report.json").read_text())
    assert (report["rows_out"], report["codes"]) == (ROWS, "fold")


def test_score_then_quantize_needs_the_probability_array_passed_or_dropped(spark, capsys,
                                                                          tmp_path, world):
    run = _main(capsys, "quantize_features", _quantize(world, world["s"], tmp_path / "bad"))
    _one_error(run, "quantize_features", "column 'probability' has type array<double>",
               "list it in [job] passthrough or drop")
    assert not (tmp_path / "bad").exists()
    conf = tmp_path / "drop.toml"
    conf.write_text(Q_CONF.replace('[job]\n', '[job]\ndrop = ["probability"]\n'))
    out = tmp_path / "q"
    run = _main(capsys, "quantize_features", ["--input", world["s"], "--config", conf,
                                              "--output", out])
    assert run.rc == 0, run.err
    codes, scores = _codes(out / "data"), _codes(world["s"] / "data")
    assert sorted(codes) == ["id", "label", "prediction"]  # score passes the non-features
    assert codes["id"] == list(range(ROWS)) and codes["label"] == scores["label"]
    assert sorted(set(scores["prediction"])) == [0.0, 1.0]
    assert codes["prediction"] == [255 * int(p) for p in scores["prediction"]]  # minmax 8 bits


def test_dequantize_output_is_eval_data_of_compress(spark, capsys, tmp_path, world):
    out = tmp_path / "cm"
    run = _main(capsys, "compress_model", ["--model", world["src"].parent / "lr.skops",
                                           "--config", world["model_conf"],
                                           "--eval-data", world["r"], "--output", out])
    assert run.rc == 0, run.err
    metrics = json.loads((out / "report.json").read_text())["metrics"]
    assert metrics["original"]["count"] == ROWS


def test_codes_are_refused_where_they_would_be_taken_for_values(spark, capsys, tmp_path, world):
    q = world["q"]
    run = _main(capsys, "quantize_features", _quantize(world, q, tmp_path / "a"))
    _one_error(run, "quantize_features", f"--input {q} is a quantize_features output: its data/ "
               "holds integer codes, not values; decode it with dequantize_features first")
    run = _main(capsys, "score", ["--input", q / "data", "--model", world["model"],
                                  "--output", tmp_path / "b"])
    _one_error(run, "score", f"--input {q / 'data'} is the data/ of a quantize_features output",
               f"score reads it directly as --input {q}")
    run = _main(capsys, "compress_model", ["--model", world["src"].parent / "lr.skops",
                                           "--config", world["model_conf"], "--eval-data", q,
                                           "--output", tmp_path / "c"])
    _one_error(run, "compress_model", f"--eval-data {q} is a quantize_features output")
    run = _main(capsys, "dequantize_features", ["--input", world["r"], "--output", tmp_path / "d"])
    _one_error(run, "dequantize_features", f"--input {world['r']} is a dequantize_features "
               "output, not a quantize_features output")
    run = _main(capsys, "quantize_features", _quantize(world, world["cm"], tmp_path / "e"))
    _one_error(run, "quantize_features", f"--input {world['cm']} is a compress_model output "
               "with no data/ to read")
    run = _main(capsys, "quantize_features", _quantize(world, world["r"], tmp_path / "f",
                                                       "--input-format", "csv"))
    _one_error(run, "quantize_features", "is a dequantize_features output (Parquet in data/): "
               "drop --input-format csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ------------------------------------------------------------------ a CSV read as Parquet


def test_csv_read_as_parquet_is_one_line_and_no_java_stack(spark, capfd, tmp_path, world):
    """Before, Spark's task failed reading the footer and logged 95 lines of Java stack."""
    csv = tmp_path / "eval.csv"
    pq.read_table(world["src"]).to_pandas().to_csv(csv, index=False)
    run = _main(capfd, "quantize_features", _quantize(world, csv, tmp_path / "out"))
    line = _one_error(run, "quantize_features")
    assert line == (f"quantize_features: error: --input {csv} is not a Parquet file (it does not "
                    f"start and end with PAR1); it looks like CSV: pass --input-format csv")
    assert not (tmp_path / "out").exists()
    # and with the hint followed, it runs
    run = _main(capfd, "quantize_features", _quantize(world, csv, tmp_path / "out",
                                                      "--input-format", "csv"))
    assert run.rc == 0, run.err


def test_a_non_parquet_file_in_a_folder_is_named(spark, capfd, tmp_path, world):
    folder = tmp_path / "in"
    shutil.copytree(world["r"] / "data", folder)
    (folder / "_SUCCESS").unlink()
    (folder / "zz-extra.json").write_text('{"id": 1}\n')
    run = _main(capfd, "compress_model", ["--model", world["src"].parent / "lr.skops",
                                          "--config", world["model_conf"], "--eval-data", folder,
                                          "--output", tmp_path / "out"])
    _one_error(run, "compress_model", f"--eval-data {folder}: zz-extra.json is not a Parquet "
               "file", "it looks like JSON: pass --eval-format json")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name,head,guess", [
    ("part-0", b"ORC\x00\x01", "orc"), ("x.orc", b"\x00", "orc"),
    ("rows.jsonl", b"", "json"), ("part-0", b'  {"a": 1}', "json"),
    ("t.tsv", b"a\tb", "csv"), ("part-0", b"a,b,c\n1,2,3", "csv"),
    ("part-0", b"\x1f\x8b\x08\x00", ""), ("part-0", b"\x00\x01binary", ""),
])
def test_guess_of_the_format(name, head, guess):
    assert jobkit._guess_format(Path(name), head) == guess


def test_parquet_files_and_empty_files_pass_the_check(tmp_path, world):
    assert jobkit._not_parquet(world["src"]) is None
    assert jobkit._not_parquet(world["r"] / "data") is None  # markers and .crc skipped
    (tmp_path / "empty.parquet").write_bytes(b"")
    assert jobkit._not_parquet(tmp_path) is None
    (tmp_path / "half.parquet").write_bytes(b"PAR1 truncated")
    assert jobkit._not_parquet(tmp_path) == (tmp_path / "half.parquet", "truncated")


def test_an_encrypted_footer_is_parquet_too(tmp_path):
    (tmp_path / "part-0.parquet").write_bytes(b"PARE encrypted footer PARE")
    assert jobkit._not_parquet(tmp_path) is None
    (tmp_path / "part-1.parquet").write_bytes(b"PARE mixed PAR1")
    assert jobkit._not_parquet(tmp_path) == (tmp_path / "part-1.parquet", "truncated")
