#!/usr/bin/env python3
"""Print a short human summary of a quantize job's ``report.json``.

    python scripts/show_report.py demo-out/creditcard/report.json

Shows rows, bytes in and out, the compression ratio and each column's RMSE (worst first). The
report's layout belongs to ``jobs/quantize_features.py``; this reads the fields below wherever
they sit in the JSON (top level or nested), under any of the names listed in ``FIELDS``, and a
per-column ``rmse`` inside a ``{column: {...}}`` mapping or a list of ``{"name"/"column": ...}``
entries. If it recognises nothing it prints the JSON as it is. Standard library only.
Exit codes: 0 printed, 2 the file is missing or not JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FIELDS = {
    "rows": ("rows", "num_rows", "row_count", "n_rows", "input_rows"),
    "bytes_in": ("bytes_in", "input_bytes", "in_bytes", "original_bytes", "raw_bytes"),
    "bytes_out": ("bytes_out", "output_bytes", "out_bytes", "compressed_bytes", "encoded_bytes"),
    "ratio": ("ratio", "compression_ratio"),
}
NAME_KEYS = ("name", "column", "col")


def _walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Yield ``(path, value)`` for every scalar; a list entry's path element is its name if any."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, path + (str(key),))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            label = next(
                (str(value[k]) for k in NAME_KEYS if isinstance(value, dict) and k in value),
                str(i),
            )
            yield from _walk(value, path + (label,))
    else:
        yield path, node


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def summarize(report: Any) -> tuple[dict[str, float], dict[str, float]]:
    """Return (totals, rmse by column) found in ``report``; the first match of a name wins."""
    totals: dict[str, float] = {}
    rmse: dict[str, float] = {}
    for path, value in _walk(report):
        if not path or _number(value) is None:
            continue
        leaf = path[-1].lower()
        if leaf == "rmse" and len(path) >= 2:
            # {"columns": {"V1": {"rmse": ..}}} or {"columns": {"V1": {"error": {"rmse": ..}}}}
            owner = next(
                (p for p in reversed(path[:-1]) if p.lower() not in {"error", "errors", "metrics"}),
                path[-2],
            )
            rmse.setdefault(owner, float(value))
            continue
        for field, names in FIELDS.items():
            if leaf in names and field not in totals and len(path) <= 2:
                totals[field] = float(value)
    if "ratio" not in totals and totals.get("bytes_out"):
        totals["ratio"] = totals.get("bytes_in", math.nan) / totals["bytes_out"]
    return totals, rmse


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"


def render(report: Any, *, source: str, top: int) -> str:
    totals, rmse = summarize(report)
    if not totals and not rmse:
        return f"{source}: no rows/bytes/rmse fields recognised; the report is:\n" + json.dumps(
            report, indent=2, sort_keys=True
        )
    lines = [f"report: {source}"]
    if "rows" in totals:
        lines.append(f"  rows        {totals['rows']:,.0f}")
    if "bytes_in" in totals:
        lines.append(f"  bytes in    {_bytes(totals['bytes_in'])}")
    if "bytes_out" in totals:
        lines.append(f"  bytes out   {_bytes(totals['bytes_out'])}")
    if "ratio" in totals and not math.isnan(totals["ratio"]):
        lines.append(f"  ratio       {totals['ratio']:.2f}x smaller")
    if rmse:
        worst = sorted(rmse.items(), key=lambda kv: -kv[1] if not math.isnan(kv[1]) else 0.0)
        shown = worst if top <= 0 else worst[:top]
        width = max(len(name) for name, _ in shown)
        lines.append(f"  rmse per column ({len(rmse)} columns, worst first):")
        lines.extend(f"    {name:<{width}}  {value:.6g}" for name, value in shown)
        if len(shown) < len(worst):
            lines.append(f"    ... {len(worst) - len(shown)} more (--top 0 shows all)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="path to report.json")
    parser.add_argument(
        "--top", type=int, default=40, help="show the N worst columns (0: all; default 40)"
    )
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"show_report: {args.report} does not exist (did the job run?)", file=sys.stderr)
        return 2
    except (OSError, json.JSONDecodeError) as exc:
        print(f"show_report: cannot read {args.report} as JSON: {exc}", file=sys.stderr)
        return 2
    print(render(report, source=str(args.report), top=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
