"""The model-compression job's TOML config: ``[plan]``, ``[layers.N]``, ``[eval]``.

Unknown sections and keys are errors that name the file and the key; plan values are checked by
:func:`spark_compress.core.compress.check_plan`, so the messages are the same as the library's.

    [plan]                 # every layer, unless overridden
    prune = 0.8            # fraction of weights removed by magnitude (0 = none)
    structured = false     # true: remove whole neurons instead
    quantize = "int8"      # none | int8 | int4 | kmeans
    kmeans_bits = 4        # with quantize = "kmeans"
    rank = 0               # > 0: low-rank factorization to this rank
    energy = 0.0           # or > 0: the smallest rank keeping this fraction of sum(s**2)
    global_prune = false   # one magnitude threshold across layers
    seed = 0
    bias_correction = 0    # > 0: calibration rows for bias correction
    finetune_epochs = 0    # > 0: fine-tune the surviving weights (masks fixed) before quantizing
    finetune_rows = 50000  # training rows collected to the driver for fine-tuning
    [layers.0]             # per-layer override: by index, from the end ([layers.-1] is the
    prune = 0.5            # output layer), or by the layer's name in the model
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

from spark_compress.core.compress import LayerPlan, Plan, check_plan
from spark_compress.errors import ConfigError
from spark_compress.io.config import _table, _validated, read_toml
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
    layers: dict[int | str, LayerPlan] = {}
    for key, table in _table(doc, "layers", source).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [layers.{key}] must be a table (a layer index such as "
                              f"[layers.0] or [layers.-1], or a layer name).")
        over = _validated(table, _LAYER_KEYS, f"[layers.{key}]", source)
        # A layer that picks one way to choose the rank drops the other one it inherits.
        if "energy" in over and "rank" not in over:
            over["rank"] = 0
        if "rank" in over and "energy" not in over:
            over["energy"] = 0.0
        lp = replace(default, **over)
        check_plan(lp, where=f"{source}: [layers.{key}]")
        # Indices stay ints; names and negative indices are resolved against the model.
        layers[int(key) if key.isdigit() else key] = lp
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
