"""The codebook file: a versioned, checksummed JSON document a person can read.

Layout (``format_version`` 1)::

    {
      "format": "spark-compress-codebook",
      "format_version": 1,
      "codes": {"nan": -1, "posinf": -2, "neginf": -3, "oov": -4},
      "passthrough": ["id", "Class"],
      "columns": [
        {"name": "V1", "method": "minmax", "bits": 8, "source_type": "double",
         "code_type": "smallint", "scale": 0.1, "zero_point": 12.5, "lo": -1.25, "hi": 24.25,
         "fit": {"count": 100, "null_count": 0, "nan_count": 0, "posinf_count": 0,
                 "neginf_count": 0, "min": -1.25, "max": 24.25}},
        ...
      ],
      "sha256": "<hex digest of the canonical JSON of everything else>"
    }

Quantile columns have ``edges`` (``2**bits - 1``) and ``values`` (``2**bits``); dictionary
columns have ``vocabulary`` and ``max_categories``; percentile columns record ``clip``. The file
is written with sorted keys and exact float ``repr``: the same fit gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from spark_compress.core.quantize import (
    AFFINE_METHODS,
    BITS,
    SPECIAL_CODES,
    AffineQuantizer,
    DictionaryEncoder,
    QuantileQuantizer,
    code_range,
)
from spark_compress.errors import FormatError

FORMAT = "spark-compress-codebook"
FORMAT_VERSION = 1
CODE_TYPES = {"tinyint": (-(2**7), 2**7 - 1), "smallint": (-(2**15), 2**15 - 1),
              "int": (-(2**31), 2**31 - 1)}
MAX_BYTES = 256 * 1024 * 1024

Encoder = AffineQuantizer | QuantileQuantizer | DictionaryEncoder


def code_type_for(encoder: Encoder) -> str:
    """The smallest Spark integer type that holds every code of ``encoder``."""
    lo, hi = code_range(encoder)
    for name, (tmin, tmax) in CODE_TYPES.items():
        if tmin <= lo and hi <= tmax:
            return name
    raise FormatError(f"codes up to {hi} do not fit a Spark int")  # pragma: no cover


@dataclass(frozen=True)
class ColumnCodebook:
    """One encoded column: its encoder, source type, code type and fit statistics."""

    name: str
    source_type: str
    encoder: Encoder
    clip: float | None = None
    fit: Mapping[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.encoder.method

    @property
    def code_type(self) -> str:
        return code_type_for(self.encoder)

    @property
    def bits(self) -> int:
        """Bits per value: the configured width, or for dictionaries the width its codes need."""
        if isinstance(self.encoder, DictionaryEncoder):
            return max(1, (len(self.encoder.vocabulary)).bit_length())
        return self.encoder.bits

    def to_dict(self) -> dict:
        e = self.encoder
        d: dict[str, Any] = {"name": self.name, "method": e.method, "source_type":
                             self.source_type, "code_type": self.code_type, "bits": self.bits,
                             "fit": dict(self.fit)}
        if isinstance(e, AffineQuantizer):
            d.update(scale=e.scale, zero_point=e.zero_point, lo=e.lo, hi=e.hi)
            if e.method == "percentile":
                d["clip"] = self.clip
        elif isinstance(e, QuantileQuantizer):
            d.update(edges=list(e.edges), values=list(e.values))
        else:
            d.update(vocabulary=list(e.vocabulary), max_categories=e.max_categories)
        return d


@dataclass(frozen=True)
class Codebook:
    columns: tuple[ColumnCodebook, ...]
    passthrough: tuple[str, ...] = ()

    def column(self, name: str) -> ColumnCodebook:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "codes": dict(SPECIAL_CODES),
                "passthrough": list(self.passthrough),
                "columns": [c.to_dict() for c in self.columns]}

    def to_json(self) -> str:
        """Deterministic, human-readable JSON with the checksum included."""
        body = self.to_dict()
        body["sha256"] = _digest(body)
        return json.dumps(body, indent=2, sort_keys=True, allow_nan=False) + "\n"


def _digest(body: Mapping) -> str:
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def write_codebook(codebook: Codebook, path: str | Path) -> None:
    Path(path).write_text(codebook.to_json(), encoding="utf-8")


def read_codebook(path: str | Path) -> Codebook:
    """Read and fully validate a codebook file; raise :class:`FormatError` naming the problem."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise FormatError(f"{p}: codebook is {size} bytes, more than the {MAX_BYTES} allowed")
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"cannot read codebook {p}: {e}") from e
    return parse_codebook(text, source=str(p))


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-finite number {name}")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text} overflows a float64")
    return v


def parse_codebook(text: str, *, source: str = "<codebook>") -> Codebook:
    """Validate and parse codebook JSON text."""
    try:
        doc = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{source}: not valid codebook JSON ({e}); the file is corrupt or "
                          f"truncated: re-run quantize_features") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise FormatError(f"{source}: not a spark-compress codebook (format is not '{FORMAT}')")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatError(f"{source}: codebook format_version {version!r} is not supported by "
                          f"this spark-compress (reads version {FORMAT_VERSION}); upgrade it")
    claimed = doc.pop("sha256", None)
    if not isinstance(claimed, str) or claimed != _digest(doc):
        raise FormatError(f"{source}: codebook checksum mismatch: the file was modified or "
                          f"corrupted after it was written")
    if doc.get("codes") != SPECIAL_CODES:
        raise FormatError(f"{source}: special codes {doc.get('codes')!r} differ from "
                          f"{SPECIAL_CODES}")
    passthrough = doc.get("passthrough")
    if not isinstance(passthrough, list) or not all(isinstance(x, str) for x in passthrough):
        raise FormatError(f"{source}: 'passthrough' must be a list of column names")
    cols_doc = doc.get("columns")
    if not isinstance(cols_doc, list):
        raise FormatError(f"{source}: 'columns' must be a list")
    columns = tuple(_parse_column(c, i, source) for i, c in enumerate(cols_doc))
    names = [c.name for c in columns] + list(passthrough)
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise FormatError(f"{source}: column name(s) {', '.join(map(repr, dups))} appear twice")
    return Codebook(columns, tuple(passthrough))


def _num(d: Mapping, key: str, where: str, *, optional: bool = False) -> float | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise FormatError(f"{where}: '{key}' must be a finite number, got {v!r}")
    return float(v)


def _floats(d: Mapping, key: str, n: int, where: str) -> tuple[float, ...]:
    v = d.get(key)
    if not isinstance(v, list) or len(v) != n:
        raise FormatError(f"{where}: '{key}' must be a list of {n} numbers")
    return tuple(_num({key: x}, key, where) for x in v)


def _parse_column(c: Any, i: int, source: str) -> ColumnCodebook:
    where = f"{source}: columns[{i}]"
    if not isinstance(c, dict) or not isinstance(c.get("name"), str):
        raise FormatError(f"{where}: each column needs a 'name'")
    where = f"{source}: column '{c['name']}'"
    method, bits = c.get("method"), c.get("bits")
    source_type = c.get("source_type")
    if not isinstance(source_type, str):
        raise FormatError(f"{where}: 'source_type' missing")
    fit = c.get("fit", {})
    if not isinstance(fit, dict):
        raise FormatError(f"{where}: 'fit' must be an object")
    clip = None
    if method in AFFINE_METHODS or method == "quantile":
        if not isinstance(bits, int) or isinstance(bits, bool) or bits not in BITS:
            raise FormatError(f"{where}: bits {bits!r} is not one of {BITS}")
    if method in AFFINE_METHODS:
        scale = _num(c, "scale", where)
        if scale <= 0:
            raise FormatError(f"{where}: scale must be > 0, got {scale}")
        lo, hi = _num(c, "lo", where, optional=True), _num(c, "hi", where, optional=True)
        enc: Encoder = AffineQuantizer(method, bits, scale, _num(c, "zero_point", where), lo, hi)
        if method == "percentile":
            clip = _num(c, "clip", where)
    elif method == "quantile":
        edges = _floats(c, "edges", (1 << bits) - 1, where)
        if any(b < a for a, b in zip(edges, edges[1:])):
            raise FormatError(f"{where}: quantile edges must be non-decreasing")
        enc = QuantileQuantizer(bits, edges, _floats(c, "values", 1 << bits, where))
    elif method == "dictionary":
        vocab, cap = c.get("vocabulary"), c.get("max_categories")
        if not isinstance(vocab, list) or not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) for v in vocab
        ) or len(set(vocab)) != len(vocab):
            raise FormatError(f"{where}: 'vocabulary' must be a list of distinct strings or "
                              f"integers")
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < max(1, len(vocab)):
            raise FormatError(f"{where}: 'max_categories' must be an int >= the vocabulary size")
        enc = DictionaryEncoder(tuple(vocab), cap)
    else:
        raise FormatError(f"{where}: unknown method {method!r}")
    col = ColumnCodebook(c["name"], source_type, enc, clip, fit)
    if c.get("code_type") != col.code_type:
        raise FormatError(f"{where}: code_type {c.get('code_type')!r} is not the type this "
                          f"column's codes are written with (expected {col.code_type!r})")
    return col
