"""jobs/score.py on the real standalone cluster (master + two workers), through spark-submit with
options users pass (``--conf``, and ``spark.submit.pyFiles``, the setting ``--py-files`` sets,
with the package zipped), on scikit-learn's bundled breast-cancer table with real fitted models.

Expected scores come from the numpy core on the same rows; the job promises no row order, so rows
are matched by their ``id`` passthrough column.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_compress.core import compress as C
from spark_compress.core import quantize as Q
from spark_compress.core.scoring import fold_codes, prepare, score, score_codes
from spark_compress.io.codebook import Codebook, ColumnCodebook, write_codebook
from spark_compress.io.importers import import_sklearn
from spark_compress.io.model_file import model_to_bytes

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SCORE = "jobs/score.py"
NAMES = [f"f{j}" for j in range(30)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    root = tmp_path_factory.mktemp("score_cluster")
    d = load_breast_cancer()
    x = StandardScaler().fit_transform(d.data).astype(np.float32)
    ids = np.arange(len(x), dtype=np.int64)
    models = {}
    for name, est, plan in [
        ("mlp", MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0),
         C.Plan(C.LayerPlan(prune=0.5, quantize="int8"))),
        ("lr", LogisticRegression(max_iter=500), C.Plan(C.LayerPlan(quantize="int8"))),
    ]:
        m = import_sklearn(est.fit(x, d.target))
        m = type(m)(m.task, m.layers, m.n_features, input_names=tuple(NAMES))
        (root / f"{name}.safetensors").write_bytes(model_to_bytes(C.compress(m, plan),
                                                                   plan=plan))
        models[name] = C.decompress(C.compress(m, plan))
    # Floats, as 4 Parquet files so both executors get tasks.
    floats = root / "floats"
    floats.mkdir()
    for k, part in enumerate(np.array_split(np.arange(len(x)), 4)):
        pq.write_table(pa.table({"id": ids[part], **{n: x[part, j] for j, n in enumerate(NAMES)}}),
                       floats / f"part-{k}.parquet")
    # Codes laid out as quantize_features writes them: data/ plus codebook.json.
    qs = [Q.choose_affine(float(x[:, j].min()), float(x[:, j].max()), bits=8)
          for j in range(len(NAMES))]
    codes = np.stack([Q.encode(q, x[:, j].astype(np.float64)) for j, q in enumerate(qs)], 1)
    quantized = root / "quantized"
    (quantized / "data").mkdir(parents=True)
    for k, part in enumerate(np.array_split(np.arange(len(x)), 4)):
        pq.write_table(pa.table({"id": ids[part], **{n: codes[part, j].astype(np.int16)
                                                      for j, n in enumerate(NAMES)}}),
                       quantized / "data" / f"part-{k}.parquet")
    write_codebook(Codebook(tuple(ColumnCodebook(n, "float", q) for n, q in zip(NAMES, qs)),
                            ("id",)), quantized / "codebook.json")
    # The package as users ship it with --py-files.
    pyfiles = root / "spark_compress.zip"
    with zipfile.ZipFile(pyfiles, "w") as z:
        for f in sorted((REPO / "spark_compress").rglob("*.py")):
            z.write(f, f.relative_to(REPO))
    return root, x, codes, qs, models, pyfiles


def _scores(out: Path) -> pd.DataFrame:
    return pq.read_table(out / "data").to_pandas().sort_values("id").reset_index(drop=True)


def test_mlp_scores_on_the_cluster_equal_the_numpy_core(cluster, inputs):
    root, x, _, _, models, pyfiles = inputs
    out = root / "out_mlp"
    run = cluster.submit(SCORE, "--model", str(root / "mlp.safetensors"), "--input",
                         str(root / "floats"), "--output", str(out),
                         conf={"spark.submit.pyFiles": str(pyfiles),
                               "spark.sql.execution.arrow.maxRecordsPerBatch": "50"})
    assert run.returncode == 0, run.describe()
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    report = json.loads((out / "report.json").read_text())
    assert summary["status"] == "ok" and (out / "_SUCCESS").exists()
    assert report["rows_in"] == report["rows_out"] == len(x) and report["invalid_rows"] == 0
    assert report["method"] == "arrow" and report["arrow_max_records_per_batch"] == 50
    assert report["broadcast_bytes"] == (root / "mlp.safetensors").stat().st_size
    got = _scores(out)
    assert got["id"].tolist() == list(range(len(x)))
    expected, _ = score(prepare(models["mlp"]), x)
    np.testing.assert_allclose(np.stack(got["probability"].to_numpy())[:, 1], expected[:, 0],
                               rtol=0, atol=2e-6)
    assert got["prediction"].tolist() == (expected[:, 0] > 0.5).astype(float).tolist()
    # Both workers ran the application's tasks.
    app = [a for a in cluster.state()["completedapps"]
           if a["name"] == f"spark-compress score {report['run_id']}"]
    assert len(app) == 1
    used = [w for w in cluster.work_dirs if (w / app[0]["id"]).is_dir()]
    assert len(used) == 2, f"only {used} ran executors for {app[0]['id']}"


def test_lr_on_quantized_codes_on_the_cluster_equals_the_folded_core(cluster, inputs):
    root, x, codes, qs, models, pyfiles = inputs
    out = root / "out_lr_codes"
    run = cluster.submit(SCORE, "--model", str(root / "lr.safetensors"), "--input",
                         str(root / "quantized"), "--output", str(out),
                         conf={"spark.submit.pyFiles": str(pyfiles)})
    assert run.returncode == 0, run.describe()
    report = json.loads((out / "report.json").read_text())
    assert report["codes"] == "fold" and report["method"] == "expression"
    assert report["rows_out"] == len(x) and report["broadcast_bytes"] == 0
    got = _scores(out)
    expected, valid = score_codes(fold_codes(models["lr"], qs), codes)
    assert valid.all()
    np.testing.assert_allclose(np.stack(got["probability"].to_numpy())[:, 1], expected[:, 0],
                               rtol=0, atol=2e-6)
