"""The scoring job's TOML config: one ``[score]`` table, every key optional.

Unknown sections and keys are errors that name the file and the key.

    [score]
    features = ["f0", "f1"]      # the model's input columns, in order (default: the names the
                                 # model file records), or one array column name
    passthrough = ["id"]         # columns copied to the output (default: every input column
                                 # that is not a feature)
    method = "auto"              # auto | expression | arrow (spark_compress.spark.score)
    batch_size = 8192            # rows per forward pass in a Python worker
    codes = "fold"               # input written by quantize_features: fold | decode
    passthrough_codes = "decode" # other encoded columns of such an input: decode | drop
    prediction_col = "prediction"
    probability_col = "probability"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from spark_compress.errors import ConfigError
from spark_compress.io.config import ConfigKey, _table, _validated, read_toml
from spark_compress.io.model_config import _features, _label as _name

METHODS = ("auto", "expression", "arrow")
CODES = ("fold", "decode")
PASSTHROUGH_CODES = ("decode", "drop")


def _columns(v: Any, where: str) -> tuple[str, ...]:
    if isinstance(v, list) and all(isinstance(x, str) and x for x in v):
        if len(set(v)) != len(v):
            raise ConfigError(f"{where}: a column is listed twice.")
        return tuple(v)
    raise ConfigError(f"{where}: must be a list of column names. Got {v!r}.")


def _choice(options: tuple[str, ...]):
    def check(v: Any, where: str) -> str:
        if v not in options:
            raise ConfigError(f"{where}: must be one of {', '.join(options)}. Got {v!r}.")
        return v
    return check


def _positive_int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"{where}: must be an integer >= 1. Got {v!r}.")
    return v


REFERENCE: tuple[ConfigKey, ...] = (
    ConfigKey("score", "features", "list of column names, or one array column name",
              "The model's input columns, in order.", ["f0", "f1"], default=None,
              default_note="the input names the model file records", attribute="features"),
    ConfigKey("score", "passthrough", "list of column names",
              "Columns copied to the output next to the scores.", ["id"], default=None,
              default_note="every input column that is not a feature", attribute="passthrough"),
    ConfigKey("score", "method", f"string: {' | '.join(METHODS)}",
              "expression: SQL expressions (one-layer models); arrow: the numpy forward pass "
              "in Python workers; auto: expression when the model allows it.", "arrow",
              default="auto", attribute="method"),
    ConfigKey("score", "batch_size", "integer >= 1", "Rows per forward pass in a Python worker.",
              1024, default=8192, attribute="batch_size"),
    ConfigKey("score", "codes", f"string: {' | '.join(CODES)}",
              "Input written by quantize_features: fold the dequantization into the first layer "
              "(score the codes), or decode the codes to floats first.", "decode",
              default="fold", attribute="codes"),
    ConfigKey("score", "passthrough_codes", f"string: {' | '.join(PASSTHROUGH_CODES)}",
              "Input written by quantize_features: the other encoded columns it copies to the "
              "output are decoded to their values, or dropped (never written as raw codes).",
              "drop", default="decode", attribute="passthrough_codes"),
    ConfigKey("score", "prediction_col", "column name", "Output column of the predictions.",
              "pred", default="prediction", attribute="prediction_col"),
    ConfigKey("score", "probability_col", "column name",
              "Output column of the class probabilities (classifiers).", "proba",
              default="probability", attribute="probability_col"),
)

_KEYS = {"features": _features, "passthrough": _columns, "method": _choice(METHODS),
         "batch_size": _positive_int, "codes": _choice(CODES),
         "passthrough_codes": _choice(PASSTHROUGH_CODES), "prediction_col": _name,
         "probability_col": _name}


@dataclass(frozen=True)
class ScoreConfig:
    features: tuple[str, ...] | str | None = None
    passthrough: tuple[str, ...] | None = None
    method: str = "auto"
    batch_size: int = 8192
    codes: str = "fold"
    passthrough_codes: str = "decode"
    prediction_col: str = "prediction"
    probability_col: str = "probability"
    source: str = "<defaults>"


def parse_score_config(doc: Mapping, *, source: str = "<config>") -> ScoreConfig:
    """Validate a parsed TOML document; ``source`` prefixes every message."""
    for k in doc:
        if k != "score":
            raise ConfigError(f"{source}: unknown section or key '{k}'; allowed: score.")
    values = _validated(_table(doc, "score", source), _KEYS, "[score]", source)
    cfg = ScoreConfig(**values, source=source)
    if cfg.prediction_col == cfg.probability_col:
        raise ConfigError(f"{source}: [score] prediction_col and probability_col are both "
                          f"{cfg.prediction_col!r}; give them different names.")
    return cfg


def load_score_config(path: str | Path | None) -> ScoreConfig:
    """Read and validate a scoring TOML file; ``None`` gives the defaults."""
    if path is None:
        return ScoreConfig()
    return parse_score_config(read_toml(path), source=str(Path(path)))
