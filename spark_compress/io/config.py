"""The feature job's TOML config: parsed with stdlib ``tomllib``, validated against one table.

Unknown keys are errors that name the file and the key; every value is checked here, before any
Spark work starts.

The optional quality gate (checked against the report after the output is written; a failed
limit exits with code 3, see :mod:`spark_compress.io.gate`)::

    [gate]                        # defaults for every encoded column
    max_clipped_fraction = 0.01   # clipped_count / rows_in at most this
    max_rmse = 0.5                # reconstruction RMSE, absolute, in the column's units
    [gate.columns."mean radius"]  # one column's own limits (a name with a space is quoted)
    max_rmse = 0.01
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from spark_compress.core.quantize import BITS, METHODS
from spark_compress.errors import ConfigError

STRINGS_POLICIES = ("error", "dictionary", "passthrough")

_BARE_KEY = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def toml_key(key: str) -> str:
    """``key`` as TOML writes it: bare when it is only ``A-Za-z0-9_-``, else a quoted basic
    string (``mean radius`` -> ``"mean radius"``), so a suggested table header parses."""
    if key and set(key) <= _BARE_KEY:
        return key
    escaped = "".join(
        "\\\\" if ch == "\\" else '\\"' if ch == '"'
        else f"\\u{ord(ch):04X}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch
        for ch in key)
    return f'"{escaped}"'


NO_DEFAULT = object()
"""The :attr:`ConfigKey.default` of a key whose absence means something said in ``default_note``
(a required key, or one that falls back to another table)."""


@dataclass(frozen=True)
class ConfigKey:
    """One key of a job's TOML config, as the reference in ``docs/config.md`` lists it.

    Each config module keeps a ``REFERENCE`` tuple of these next to its validators;
    ``scripts/gen_config_reference.py`` renders them, and tests/unit/test_config_reference.py
    proves that the validator accepts exactly these keys, that every ``example`` passes it, and
    that every ``default`` is what a document without the key gets (read at ``attribute``, a
    dotted path on the config parsed from a document without the key, when given). A new key is one more entry.
    """

    table: str            # "defaults", or "columns.NAME" for a table per column/layer
    key: str
    type: str             # what a value is, as a user writes it
    doc: str              # what it does, one or two sentences
    example: Any          # a value the validator accepts
    default: Any = NO_DEFAULT
    default_note: str = ""  # shown instead of the default (or with NO_DEFAULT, its meaning)
    attribute: str | None = None
    requires: Mapping[str, Any] = field(default_factory=dict)  # other keys the example needs


def toml_table(*keys: str) -> str:
    """The header of the TOML table at ``keys``: ``toml_table("columns", "mean radius")`` is
    ``[columns."mean radius"]``."""
    return "[" + ".".join(toml_key(str(k)) for k in keys) + "]"


@dataclass(frozen=True)
class ColumnSettings:
    """How to encode one column. ``None`` fields fall back to ``[defaults]``."""

    method: str | None = None
    bits: int | None = None
    clip: float | None = None
    max_categories: int | None = None


@dataclass(frozen=True)
class Defaults:
    method: str = "minmax"
    bits: int = 8
    clip: float = 0.001
    max_categories: int = 1000
    strings: str = "error"


@dataclass(frozen=True)
class FeatureConfig:
    """The whole feature-compression config, validated."""

    passthrough: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    defaults: Defaults = Defaults()
    columns: Mapping[str, ColumnSettings] = field(default_factory=dict)
    relative_error: float | None = None
    source: str = "<config>"
    gate: "FeatureGate" = field(default_factory=lambda: FeatureGate())

    def settings_for(self, name: str) -> ColumnSettings:
        """The resolved settings of column ``name`` (per-column override over defaults)."""
        c = self.columns.get(name, ColumnSettings())
        d = self.defaults
        return ColumnSettings(
            method=c.method or d.method,
            bits=c.bits if c.bits is not None else d.bits,
            clip=c.clip if c.clip is not None else d.clip,
            max_categories=c.max_categories if c.max_categories is not None else d.max_categories,
        )


@dataclass(frozen=True)
class FeatureGate:
    """The ``[gate]`` limits that are set: ``defaults`` for every encoded column and per-column
    ``columns`` (each a mapping of ``max_rmse`` / ``max_clipped_fraction`` to its limit)."""

    defaults: Mapping[str, float] = field(default_factory=dict)
    columns: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


def _check_gate_rmse(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= v < math.inf):
        raise ConfigError(f"{where}: must be a finite number >= 0 (the column's units). "
                          f"Got {v!r}.")
    return float(v)


def _check_gate_fraction(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= v <= 1.0):
        raise ConfigError(f"{where}: must be a fraction of the rows in [0, 1], e.g. 0.01. "
                          f"Got {v!r}.")
    return float(v)


_GATE_KEYS = {"max_rmse": _check_gate_rmse, "max_clipped_fraction": _check_gate_fraction}


def parse_feature_gate(doc: Mapping, source: str = "<config>") -> FeatureGate:
    """The ``[gate]`` table (see the module docstring); an empty gate without one."""
    table = dict(_table(doc, "gate", source))
    columns_doc = table.pop("columns", {})
    if not isinstance(columns_doc, dict):
        raise ConfigError(f"{source}: [gate] columns must be a table of tables, e.g. "
                          f"[gate.columns.Amount] max_rmse = 0.5.")
    defaults = _validated(table, dict(_GATE_KEYS, columns=None), "[gate]", source)
    columns = {}
    for name, limits in columns_doc.items():
        if not isinstance(limits, dict):
            raise ConfigError(f"{source}: [gate.columns.{name}] must be a table, e.g. "
                              f"[gate.columns.{name}] max_rmse = 0.5.")
        columns[name] = _validated(limits, _GATE_KEYS, f"[gate.columns.{name}]", source)
    return FeatureGate(defaults, columns)


def _check_method(v: Any, where: str) -> str:
    if v not in METHODS:
        raise ConfigError(f"{where}: method must be one of {', '.join(METHODS)}. Got {v!r}.")
    return v


def _check_bits(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v not in BITS:
        raise ConfigError(f"{where}: bits must be one of 2, 4, 8, 16. Got {v!r}.")
    return int(v)


def _check_clip(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 < v < 0.5):
        raise ConfigError(
            f"{where}: clip is the fraction clipped at each tail and must be in (0, 0.5), "
            f"for example 0.001. Got {v!r}."
        )
    return float(v)


def _check_max_categories(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not (1 <= v <= 2**31 - 8):
        raise ConfigError(f"{where}: max_categories must be an integer >= 1. Got {v!r}.")
    return v


def _check_strings(v: Any, where: str) -> str:
    if v not in STRINGS_POLICIES:
        raise ConfigError(
            f"{where}: strings must be one of {', '.join(STRINGS_POLICIES)}. Got {v!r}."
        )
    return v


def _check_names(v: Any, where: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ConfigError(f"{where}: must be a list of column names. Got {v!r}.")
    if len(set(v)) != len(v):
        dup = sorted({x for x in v if v.count(x) > 1})
        raise ConfigError(f"{where}: column(s) listed twice: {', '.join(dup)}.")
    return tuple(v)


def _check_relative_error(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 < v < 0.1):
        raise ConfigError(f"{where}: relative_error must be in (0, 0.1), e.g. 0.001. Got {v!r}.")
    return float(v)


_COLUMN_KEYS = {
    "method": _check_method,
    "bits": _check_bits,
    "clip": _check_clip,
    "max_categories": _check_max_categories,
}
_DEFAULT_KEYS = dict(_COLUMN_KEYS, strings=_check_strings)
_JOB_KEYS = {"passthrough": _check_names, "drop": _check_names}
_FIT_KEYS = {"relative_error": _check_relative_error}
_SECTIONS = ("job", "defaults", "columns", "fit", "gate")

_FROM_DEFAULTS = "the [defaults] value"
REFERENCE: tuple[ConfigKey, ...] = (
    ConfigKey("job", "passthrough", "list of column names",
              "Columns copied to the output unchanged (a label, an id).", ["id"],
              default=(), default_note="[] (none)", attribute="passthrough"),
    ConfigKey("job", "drop", "list of column names",
              "Columns left out of the output.", ["comment"],
              default=(), default_note="[] (none)", attribute="drop"),
    ConfigKey("defaults", "method", f"string: {' | '.join(METHODS)}",
              "How a numeric column is encoded: minmax (equal steps between min and max), "
              "percentile (equal steps between two quantiles, tails clipped), symmetric (equal "
              "steps in [-max|x|, max|x|]), quantile (equal-frequency bins), dictionary (one code "
              "per distinct value).", "quantile", default="minmax", attribute="defaults.method"),
    ConfigKey("defaults", "bits", "integer: 2 | 4 | 8 | 16",
              "Code width: 2**bits levels per column.", 4, default=8, attribute="defaults.bits"),
    ConfigKey("defaults", "clip", "float in (0, 0.5)",
              "percentile: the fraction of rows clipped at each tail.", 0.01, default=0.001,
              attribute="defaults.clip"),
    ConfigKey("defaults", "max_categories", "integer >= 1",
              "dictionary: the most frequent values kept; the others get the out-of-vocabulary "
              "code.", 100, default=1000, attribute="defaults.max_categories"),
    ConfigKey("defaults", "strings", "string: error | dictionary | passthrough",
              "What happens to a string column without a [columns.NAME] method: an error, "
              "dictionary encoding, or a copy to the output.", "dictionary", default="error",
              attribute="defaults.strings"),
    ConfigKey("columns.NAME", "method", "as [defaults] method",
              "The method of column NAME (quote a NAME that is not A-Za-z0-9_-: "
              "[columns.\"mean radius\"]).", "percentile", default_note=_FROM_DEFAULTS),
    ConfigKey("columns.NAME", "bits", "as [defaults] bits", "The code width of column NAME.", 16,
              default_note=_FROM_DEFAULTS),
    ConfigKey("columns.NAME", "clip", "as [defaults] clip", "percentile: clip of column NAME.",
              0.05, default_note=_FROM_DEFAULTS),
    ConfigKey("columns.NAME", "max_categories", "as [defaults] max_categories",
              "dictionary: vocabulary size of column NAME.", 10, default_note=_FROM_DEFAULTS),
    ConfigKey("fit", "relative_error", "float in (0, 0.1)",
              "Rank error of the quantile sketch (quantile and percentile columns); smaller is "
              "more exact and costs more memory per task.", 0.0001, default=None,
              default_note="chosen from the columns: max(1e-5, min(1e-3, 0.25 / 2**bits of "
                           "each quantile column, clip / 4 of each percentile column))",
              attribute="relative_error"),
    ConfigKey("gate", "max_rmse", "float >= 0 (the column's units)",
              "Quality gate: exit 3 when an encoded column's reconstruction RMSE is above this "
              "(every encoded column except dictionary ones, unless [gate.columns.NAME] "
              "overrides it).", 0.5, default_note="no limit"),
    ConfigKey("gate", "max_clipped_fraction", "float in [0, 1]",
              "Quality gate: exit 3 when a column clips more than this fraction of the rows.",
              0.01, default_note="no limit"),
    ConfigKey("gate", "columns", "table of tables: [gate.columns.NAME] max_rmse / "
              "max_clipped_fraction",
              "One column's own limits, over the [gate] ones (only encoded columns).", {},
              default_note="none"),
)


def _table(doc: Mapping, key: str, source: str) -> Mapping:
    v = doc.get(key, {})
    if not isinstance(v, dict):
        raise ConfigError(f"{source}: [{key}] must be a table.")
    return v


def _validated(table: Mapping, checks: Mapping, where: str, source: str) -> dict:
    out = {}
    for k, v in table.items():
        if k not in checks:
            raise ConfigError(
                f"{source}: unknown key '{k}' in {where}; allowed keys: {', '.join(checks)}."
            )
        out[k] = checks[k](v, f"{source}: {where} {k}")
    return out


def parse_feature_config(doc: Mapping, *, source: str = "<config>") -> FeatureConfig:
    """Validate a parsed TOML document. ``source`` (the file name) prefixes every message."""
    for k in doc:
        if k not in _SECTIONS:
            raise ConfigError(
                f"{source}: unknown section or key '{k}'; allowed: {', '.join(_SECTIONS)}."
            )
    job = _validated(_table(doc, "job", source), _JOB_KEYS, "[job]", source)
    defaults = Defaults(**_validated(_table(doc, "defaults", source), _DEFAULT_KEYS,
                                     "[defaults]", source))
    fit = _validated(_table(doc, "fit", source), _FIT_KEYS, "[fit]", source)
    columns: dict[str, ColumnSettings] = {}
    for name, table in _table(doc, "columns", source).items():
        header = toml_table("columns", name)
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {header} must be a table, e.g. "
                              f"{header} method = \"minmax\".")
        columns[name] = ColumnSettings(**_validated(table, _COLUMN_KEYS, header, source))
    passthrough = job.get("passthrough", ())
    drop = job.get("drop", ())
    for name in columns:
        where = "passthrough" if name in passthrough else "drop" if name in drop else None
        if where:
            raise ConfigError(f"{source}: column '{name}' is in [job] {where} and also has a "
                              f"{toml_table('columns', name)} table; keep one.")
    both = sorted(set(passthrough) & set(drop))
    if both:
        raise ConfigError(f"{source}: column(s) {', '.join(both)} in both [job] passthrough "
                          f"and drop; keep one.")
    rel = fit.get("relative_error")
    if rel is not None and not math.isfinite(rel):  # pragma: no cover - checked above
        raise ConfigError(f"{source}: [fit] relative_error must be finite.")
    gate = parse_feature_gate(doc, source)
    for name in gate.columns:
        where = "passthrough" if name in passthrough else "drop" if name in drop else None
        if where:
            raise ConfigError(f"{source}: column '{name}' is in [job] {where} and also has a "
                              f"[gate.columns.{name}] table; only encoded columns are gated.")
    return FeatureConfig(passthrough, drop, defaults, columns, rel, source, gate)


def read_toml(path: str | Path) -> dict:
    """The parsed TOML document at ``path``; :class:`ConfigError` naming the file when it cannot
    be read or is not valid TOML (UTF-8)."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from e
    try:
        return tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from e


def load_feature_config(path: str | Path) -> FeatureConfig:
    """Read and validate a TOML config file."""
    return parse_feature_config(read_toml(path), source=str(Path(path)))
