"""Pieces of the model-compression job that touch Spark or assemble its report."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from pyspark.sql import DataFrame

from spark_compress.core import compress as C
from spark_compress.core.metrics import DEFINITIONS
from spark_compress.core.model import Model
from spark_compress.errors import DataError
from spark_compress.io.model_file import size_report
from spark_compress.spark.evaluate import SCORE_DEFINITION
from spark_compress.spark.features import col


def calibration_matrix(df: DataFrame, features: Sequence[str] | str, rows: int,
                       label: str | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The first ``rows`` rows of ``features`` as a float32 matrix (for bias correction), and
    with ``label`` also the labels (for fine-tuning).

    ``features`` is a list of numeric columns or one array column. Only these rows reach the
    driver."""
    names = [features] if isinstance(features, str) else list(features)
    extra = [label] if label is not None else []
    table = df.select(*[col(n) for n in names + extra]).limit(rows).toArrow()
    if table.num_rows == 0:
        raise DataError("calibration data has no rows")
    if isinstance(features, str):
        x = np.asarray(table.column(0).to_pylist(), dtype=np.float32)
    else:
        x = np.column_stack([table.column(n).to_numpy(zero_copy_only=False) for n in names])
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError("calibration data has null, NaN or infinite features")
    if label is None:
        return x
    y = table.column(label).to_numpy(zero_copy_only=False)
    if not np.isfinite(y.astype(np.float64)).all():
        raise DataError(f"training data has null or NaN labels in column '{label}'")
    return x, y


def float32_bytes(model: Model) -> int:
    """Bytes of the model's parameters as float32: weights, biases and embedding tables."""
    n = sum(d.weight.size + (d.bias.size if d.bias is not None else 0) for d in model.layers)
    n += sum(e.table.size for e in model.embeddings)
    return 4 * int(n)


def model_report(model: Model, cm: C.CompressedModel, data: bytes,
                 metrics: Mapping[str, Mapping]) -> dict:
    """``report.json`` of the compress job: sizes overall and per layer, sparsity, and the
    metrics of both models (``agreement``: top-1 agreement of the compressed model with the
    original, or ``rmse_between`` for regression), with ``metric_definitions`` saying how each
    metric (and, for binary models, the ranked ``score``) is computed. The caller adds
    ``warnings`` and ``gate`` (:mod:`spark_compress.io.gate`)."""
    sizes = size_report(data)
    sparsity = C.sparsity(cm)
    layers = []
    for i, (orig, comp) in enumerate(zip(model.layers, cm.layers)):
        layers.append({
            "index": i, "shape_in": list(orig.weight.shape), "shape_out": list(comp.shape),
            "activation": orig.activation,
            "original_bytes": 4 * (orig.weight.size + (orig.bias.size if orig.bias is not None
                                                        else 0)),
            "compressed_bytes": sizes["layers"][i], "sparsity": sparsity.get(i, 0.0),
            "stored_bytes_before_entropy_coding": sum(comp.nbytes().values()),
        })
    original = float32_bytes(model)
    keys = sorted({k for m in metrics.values() for k in m})
    definitions = {k: DEFINITIONS[k] for k in keys if k in DEFINITIONS}
    if model.task == "binary":
        definitions["score"] = SCORE_DEFINITION
    return {
        "task": model.task, "original_bytes": original, "compressed_bytes": len(data),
        "compression_ratio": round(original / len(data), 4),
        "header_bytes": sizes["header"], "layers": layers,
        "metrics": {name: dict(m) for name, m in metrics.items()},
        "metric_definitions": definitions,
    }
