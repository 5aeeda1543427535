"""Pieces of the model-compression job that touch Spark or assemble its report."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_compress.core import compress as C
from spark_compress.core.metrics import DEFINITIONS
from spark_compress.core.model import Model
from spark_compress.errors import DataError
from spark_compress.io.model_file import size_report
from spark_compress.spark.evaluate import SCORE_DEFINITION
from spark_compress.spark.features import col


def calibration_matrix(df: DataFrame, features: Sequence[str] | str, rows: int,
                       label: str | None = None, *, seed: int = 0,
                       class_labels: bool = False
                       ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """A uniform random sample of ``rows`` rows of ``features`` as a float32 matrix (for bias
    correction), and with ``label`` also the labels (for fine-tuning); every row when the
    data has at most ``rows``.

    The sample is the ``rows`` rows with the smallest ``xxhash64(seed, row)`` (the row being the
    selected columns), in that order: deterministic for the same data and seed whatever its
    partitioning or file order, and uniform over rows (identical rows share a hash, so they are
    taken or left together). Spark computes it as a top-k per partition; only these rows reach
    the driver. ``features`` is a list of numeric columns or one array column.

    With ``class_labels`` the labels are class values: integers, booleans, or doubles holding
    whole numbers (what MLlib tables hold: ``0.0``/``1.0``), returned as int64; a label that
    is not a whole number raises :class:`DataError` naming the column and the value. Null,
    NaN or infinite features or labels raise :class:`DataError` too.
    """
    names = [features] if isinstance(features, str) else list(features)
    extra = [label] if label is not None else []
    cols = [col(n) for n in names + extra]
    key = F.xxhash64(F.lit(int(seed)), *cols)
    # The columns after the hash break its (rare) ties, so the order is total.
    table = df.select(*cols).orderBy(key, *cols).limit(rows).toArrow()
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
    labels = table.column(label)
    y = labels.to_numpy(zero_copy_only=False)
    numeric = y.dtype == np.bool_ or np.issubdtype(y.dtype, np.number)
    if labels.null_count or (numeric and not np.isfinite(y.astype(np.float64)).all()):
        raise DataError(f"training data has null or NaN labels in column '{label}'")
    if not numeric:
        raise DataError(f"training labels in column '{label}' must be numeric; got "
                        f"{labels.type}")
    if class_labels:
        y = _class_labels(y, label)
    return x, y


def _class_labels(y: np.ndarray, label: str) -> np.ndarray:
    """``y`` as int64 class values; :class:`DataError` naming ``label`` for a fraction."""
    if np.issubdtype(y.dtype, np.floating):
        frac = y != np.round(y)
        if frac.any():
            raise DataError(
                f"training labels in column '{label}' must be whole class values (0, 1, ... or "
                f"0.0, 1.0, ...); found {float(y[np.argmax(frac)])!r}. Map the column to class "
                f"indices 0..k-1"
            )
    return y.astype(np.int64)


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
