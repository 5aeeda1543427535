"""The model-compression job's TOML config: ``[plan]``, ``[layers.X]``, ``[eval]``.

Unknown sections and keys are errors that name the file and the key; plan values are checked by
:func:`spark_compress.core.compress.check_plan`, so the messages are the same as the library's.

A ``[layers.X]`` key follows the library's one rule
(:func:`spark_compress.core.compress.parse_layer_key`): ``X`` is a layer *name*, unless it starts
with ``#``, which makes it a position. So ``[layers.2]`` is the layer named ``"2"`` (PyTorch
``nn.Sequential`` exports name their layers ``"0"``, ``"2"``, ``"4"``), and the third layer is
``[layers."#2"]``. A key that looks like a position but names no layer is refused, with the
fix, when the plan is resolved against the model.

    [plan]                 # every layer, unless overridden
    prune = 0.8            # fraction of weights removed by magnitude (0 = none)
    structured = false     # true: remove whole neurons instead
    quantize = "int8"      # none | int8 | int4 | kmeans
    kmeans_bits = 4        # with quantize = "kmeans"
    rank = 0               # > 0: low-rank factorization to this rank
    energy = 0.0           # or > 0: the smallest rank keeping this fraction of sum(s**2)
    global_prune = false   # one magnitude threshold across layers
    seed = 0
    bias_correction = 0    # > 0: calibration rows for bias correction (a seeded sample)
    finetune_epochs = 0    # > 0: fine-tune the surviving weights (masks fixed) before quantizing
    finetune_rows = 50000  # training rows collected to the driver for fine-tuning: a uniform
                           # sample, seeded by seed (spark.modeljob.calibration_matrix)
    [layers.fc1]           # per-layer override of the layer *named* fc1 in the model
    prune = 0.5
    [layers."#0"]          # per-layer override by position: "#0" is the first layer, "#-1"
    quantize = "none"      # the output layer (quoted: '#' is not allowed in a bare TOML key)
    [eval]
    label = "label"
    features = ["f0", "f1"]   # or one array column name
    [gate]                 # quality gate: any failed limit -> exit 3 (spark_compress.io.gate)
    min_ratio = 4.0        # original float32 bytes / model file bytes at least this
    max_accuracy_drop = 0.01           # classification: accuracy points lost (absolute)
    max_auc_drop = 0.005               # binary: ROC AUC lost (absolute)
    max_average_precision_drop = 0.01  # binary: average precision lost (absolute)
    min_agreement = 0.99               # classification: rows with the original's label
    max_rmse_increase = 0.1            # regression: RMSE added, in the label's units
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from spark_compress.core.compress import (
    KMEANS_BITS,
    QUANTIZE_MODES,
    LayerPlan,
    Plan,
    check_plan,
    parse_layer_key,
)
from spark_compress.errors import ConfigError
from spark_compress.io.config import (
    NO_DEFAULT,
    ConfigKey,
    _table,
    _validated,
    read_toml,
    toml_table,
)
from spark_compress.io.gate import MODEL_GATE_KEYS


def _any(v: Any, where: str) -> Any:
    return v


def _nonneg_int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ConfigError(f"{where}: must be an integer >= 0. Got {v!r}.")
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{where}: must be true or false. Got {v!r}.")
    return v


def _features(v: Any, where: str) -> tuple[str, ...] | str:
    if isinstance(v, str) and v:
        return v
    if isinstance(v, list) and v and all(isinstance(x, str) and x for x in v):
        if len(set(v)) != len(v):
            raise ConfigError(f"{where}: a feature is listed twice.")
        return tuple(v)
    raise ConfigError(f"{where}: must be a list of column names or one array column name. "
                      f"Got {v!r}.")


def _label(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{where}: must be a column name. Got {v!r}.")
    return v


_LAYER_KEYS = {"prune": _any, "structured": _any, "quantize": _any, "kmeans_bits": _any,
               "rank": _any, "energy": _any}
_PLAN_KEYS = dict(_LAYER_KEYS, global_prune=_bool, seed=_nonneg_int, bias_correction=_nonneg_int,
                  finetune_epochs=_nonneg_int, finetune_rows=_nonneg_int)
_EVAL_KEYS = {"label": _label, "features": _features}
_SECTIONS = ("plan", "layers", "eval", "gate")

# Keys of [plan] that [layers.X] may override: (key, type, doc, example, default).
_LAYER_REFERENCE = (
    ("prune", "float in [0, 1]",
     "Fraction of the weights removed, smallest magnitudes first (with structured = true: of the "
     "output neurons).", 0.5, 0.0),
    ("structured", "boolean", "Remove whole neurons (and the next layer's rows) instead of single "
     "weights.", True, False),
    ("quantize", f"string: {' | '.join(QUANTIZE_MODES)}",
     "Storage of the kept weights: float32, 8- or 4-bit integers with a scale per output, or "
     "k-means shared values.", "int8", "none"),
    ("kmeans_bits", f"integer in [{KMEANS_BITS[0]}, {KMEANS_BITS[1]}]",
     "quantize = \"kmeans\": 2**kmeans_bits shared values per layer.", 6, 4),
    ("rank", "integer >= 0",
     "> 0: store the weight as two low-rank factors of this rank (0 keeps it whole).", 2, 0),
    ("energy", "0 or a float in (0, 1]",
     "> 0: factorize with the smallest rank keeping this fraction of the sum of squared "
     "singular values (set rank or energy, not both).", 0.9, 0.0),
)
REFERENCE: tuple[ConfigKey, ...] = (
    *(ConfigKey("plan", k, t, d + " Every layer, unless [layers.X] overrides it.", ex,
                default=df, attribute=f"plan.default.{k}")
      for k, t, d, ex, df in _LAYER_REFERENCE),
    ConfigKey("plan", "global_prune", "boolean",
              "One magnitude threshold across all layers instead of one per layer.", True,
              default=False, attribute="plan.global_prune"),
    ConfigKey("plan", "seed", "integer >= 0", "Seed of k-means and of fine-tuning.",
              7, default=0, attribute="plan.seed"),
    ConfigKey("plan", "bias_correction", "integer >= 0",
              "> 0: rows of --train-data (alias --calibration-data) used to correct each "
              "layer's bias for the mean shift compression causes.", 1000, default=0,
              attribute="bias_correction_rows"),
    ConfigKey("plan", "finetune_epochs", "integer >= 0",
              "> 0: epochs of fine-tuning of the kept weights (masks fixed) on --train-data "
              "before quantizing.", 2, default=0, attribute="finetune_epochs"),
    ConfigKey("plan", "finetune_rows", "integer >= 0",
              "Training rows collected to the driver for fine-tuning.", 10000, default=50000,
              attribute="finetune_rows"),
    *(ConfigKey("layers.X", k, f"as [plan] {k}",
                f"{k} of layer X only: X is the layer's name, or its position written "
                f"\"#i\" ([layers.\"#0\"] the first, [layers.\"#-1\"] the last).", ex, default_note="the [plan] value")
      for k, _t, _d, ex, _df in _LAYER_REFERENCE),
    ConfigKey("eval", "label", "column name",
              "The label column of --eval-data (and --train-data).", "label",
              default=NO_DEFAULT, default_note="required"),
    ConfigKey("eval", "features", "list of column names, or one array column name",
              "The model's input columns, in order.", ["f0", "f1"], default=None,
              default_note="the input names the model records", attribute="eval.features"),
    ConfigKey("gate", "min_ratio", "float > 0",
              "Quality gate: exit 3 when original float32 bytes / file bytes is below this "
              "(1.0: the file must not be larger than the model).", 1.0,
              default_note="no limit"),
    ConfigKey("gate", "max_accuracy_drop", "float >= 0",
              "Classification: exit 3 when accuracy drops by more than this (0.01 = one point).",
              0.01, default_note="no limit"),
    ConfigKey("gate", "max_auc_drop", "float >= 0",
              "Binary: exit 3 when ROC AUC drops by more than this.", 0.005,
              default_note="no limit"),
    ConfigKey("gate", "max_average_precision_drop", "float >= 0",
              "Binary: exit 3 when average precision drops by more than this.", 0.01,
              default_note="no limit"),
    ConfigKey("gate", "min_agreement", "float in [0, 1]",
              "Classification: exit 3 when fewer than this share of rows get the original "
              "model's label.", 0.99, default_note="no limit"),
    ConfigKey("gate", "max_rmse_increase", "float >= 0 (the label's units)",
              "Regression: exit 3 when RMSE grows by more than this.", 0.1,
              default_note="no limit"),
)


@dataclass(frozen=True)
class EvalConfig:
    label: str | None = None
    features: tuple[str, ...] | str | None = None


@dataclass(frozen=True)
class ModelJobConfig:
    plan: Plan
    bias_correction_rows: int = 0
    eval: EvalConfig = EvalConfig()
    finetune_epochs: int = 0
    finetune_rows: int = 50000
    source: str = "<config>"
    gate: Mapping[str, float] = field(default_factory=dict)


def parse_model_config(doc: Mapping, *, source: str = "<config>") -> ModelJobConfig:
    """Validate a parsed TOML document; ``source`` prefixes every message."""
    for k in doc:
        if k not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section or key '{k}'; allowed: "
                              f"{', '.join(_SECTIONS)}.")
    plan_doc = _validated(_table(doc, "plan", source), _PLAN_KEYS, "[plan]", source)
    layer_fields = {k: plan_doc[k] for k in _LAYER_KEYS if k in plan_doc}
    default = LayerPlan(**layer_fields)
    check_plan(default, where=f"{source}: [plan]")
    layers: dict[str, LayerPlan] = {}
    for key, table in _table(doc, "layers", source).items():
        section = toml_table("layers", key)
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {section} must be a table (a layer name such as "
                              f"[layers.fc1], or a position such as [layers.\"#0\"] or "
                              f"[layers.\"#-1\"] for the output layer).")
        try:
            parse_layer_key(key)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {section}: {exc}") from exc
        over = _validated(table, _LAYER_KEYS, section, source)
        # A layer that picks one way to choose the rank drops the other one it inherits.
        if "energy" in over and "rank" not in over:
            over["rank"] = 0
        if "rank" in over and "energy" not in over:
            over["energy"] = 0.0
        lp = replace(default, **over)
        check_plan(lp, where=f"{source}: {section}")
        # Keys stay as written (names, or "#i" positions): resolve_plan maps them to the model.
        layers[key] = lp
    ev = _validated(_table(doc, "eval", source), _EVAL_KEYS, "[eval]", source)
    plan = Plan(default=default, layers=layers, global_prune=plan_doc.get("global_prune", False),
                seed=plan_doc.get("seed", 0))
    return ModelJobConfig(plan=plan, bias_correction_rows=plan_doc.get("bias_correction", 0),
                          eval=EvalConfig(ev.get("label"), ev.get("features")), source=source,
                          finetune_epochs=plan_doc.get("finetune_epochs", 0),
                          finetune_rows=plan_doc.get("finetune_rows", 50000),
                          gate=parse_model_gate(doc, source))


def _fraction(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= v <= 1.0):
        raise ConfigError(f"{where}: must be a number in [0, 1]. Got {v!r}.")
    return float(v)


def _positive(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 < v < math.inf):
        raise ConfigError(f"{where}: must be a finite number > 0. Got {v!r}.")
    return float(v)


def _nonneg(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= v < math.inf):
        raise ConfigError(f"{where}: must be a finite number >= 0. Got {v!r}.")
    return float(v)


_GATE_CHECKS = {"min_ratio": _positive, "max_accuracy_drop": _fraction, "max_auc_drop": _fraction,
                "max_average_precision_drop": _fraction, "min_agreement": _fraction,
                "max_rmse_increase": _nonneg}


def parse_model_gate(doc: Mapping, source: str = "<config>") -> dict[str, float]:
    """The ``[gate]`` limits that are set (see the module docstring and
    :data:`spark_compress.io.gate.MODEL_GATE_KEYS`); ``{}`` without a ``[gate]`` table."""
    return _validated(_table(doc, "gate", source), _GATE_CHECKS, "[gate]", source)


def check_gate_task(config: ModelJobConfig, task: str) -> None:
    """Raise :class:`ConfigError` for a ``[gate]`` key that does not apply to a model of
    ``task`` (``max_auc_drop`` on a regression model, say): it could never be checked."""
    for key in config.gate:
        tasks = MODEL_GATE_KEYS[key][0]
        if task not in tasks:
            raise ConfigError(f"{config.source}: [gate] {key} applies to {' or '.join(tasks)} "
                              f"models; the model is a {task} model. Remove the key or use "
                              + ", ".join(k for k, v in MODEL_GATE_KEYS.items() if task in v[0])
                              + ".")


def load_model_config(path: str | Path) -> ModelJobConfig:
    """Read and validate a model-compression TOML file."""
    return parse_model_config(read_toml(path), source=str(Path(path)))
