"""Print a job's report.json so a person can read it.

    python scripts/show_report.py OUT/report.json      (or the output folder OUT)

Knows the reports of quantize_features, dequantize_features, compress_model and score; any other
report (or a field this script does not know yet) is printed as its JSON keys and values, never
refused. A figure missing from a report prints as "-". Exit codes: 0 printed, 2 no such file or
not a JSON report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable


def fmt_bytes(n: float | None) -> str:
    """``1234`` -> ``1.2 KB`` (powers of 1000); ``None`` -> ``-``."""
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return str(n)


def fmt_num(v: Any) -> str:
    """A number with 4 significant digits; ``None`` (or a missing figure) -> ``-``."""
    if v is None:
        return "-"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:.4g}"
    return str(v)


def fmt_count(v: Any) -> str:
    """An integer with thousands separators; anything else as :func:`fmt_num`."""
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else fmt_num(v)


def _rows(r: dict) -> str:
    return f"{fmt_count(r.get('rows_in'))} in, {fmt_count(r.get('rows_out'))} out"


def show_features(r: dict) -> None:
    print(f"  rows        {_rows(r)}")
    print(f"  bytes       {fmt_bytes(r.get('bytes_in'))} in ({r.get('input_format', '?')}), "
          f"{fmt_bytes(r.get('bytes_out'))} out (Parquet codes)")
    print(f"  ratio       {fmt_num(r.get('compression_ratio'))}x smaller")
    if r.get("passthrough"):
        print(f"  passthrough {', '.join(r['passthrough'])}")
    cols = r.get("columns") or {}
    print(f"\n  {'column':<16} {'method':<11} {'bits':>4} {'scale':>10} {'rmse':>10} "
          f"{'max err':>10} {'clipped':>8} {'nulls':>6} {'NaN':>5} {'bytes out':>10}")
    for name, c in cols.items():
        print(f"  {name[:16]:<16} {str(c.get('method', '-')):<11} {fmt_num(c.get('bits')):>4} "
              f"{fmt_num(c.get('scale')):>10} {fmt_num(c.get('rmse')):>10} "
              f"{fmt_num(c.get('max_abs_error')):>10} {fmt_count(c.get('clipped_count', 0)):>8} "
              f"{fmt_count(c.get('null_count', 0)):>6} {fmt_count(c.get('nan_count', 0)):>5} "
              f"{fmt_bytes(c.get('bytes_out')):>10}")


def show_restored(r: dict) -> None:
    print(f"  rows        {_rows(r)}")
    print(f"  bytes       {fmt_bytes(r.get('bytes_in'))} codes in, "
          f"{fmt_bytes(r.get('bytes_out'))} restored out")
    columns = r.get("columns") or []
    print(f"  columns     {len(columns)} decoded: {', '.join(map(str, columns))}")
    quality = r.get("input_quality") or {}
    flagged = {name: {k: v for k, v in counts.items() if v}
               for name, counts in quality.items() if isinstance(counts, dict)}
    flagged = {name: counts for name, counts in flagged.items() if counts}
    if flagged:
        print("\n  special codes in the input (restored as null/NaN/inf):")
        for name, counts in flagged.items():
            print(f"  {name[:16]:<16} " + ", ".join(f"{k} {fmt_count(v)}"
                                                    for k, v in counts.items()))
    else:
        print("  input       no special codes (null, NaN, inf, out of vocabulary)")


def show_model(r: dict) -> None:
    print(f"  size        {fmt_bytes(r.get('original_bytes'))} float32 -> "
          f"{fmt_bytes(r.get('compressed_bytes'))} file ({fmt_num(r.get('compression_ratio'))}x, "
          f"header {fmt_bytes(r.get('header_bytes'))})")
    print(f"  eval rows   {fmt_count(r.get('rows_in'))} in ({r.get('eval_data', '-')})")
    print(f"\n  {'layer':<6} {'shape':<12} {'sparsity':>8} {'bytes in':>10} {'bytes out':>10}")
    for layer in r.get("layers") or []:
        shape = "x".join(map(str, layer.get("shape_out") or [])) or "-"
        print(f"  {fmt_num(layer.get('index')):<6} {shape:<12} "
              f"{fmt_num(layer.get('sparsity')):>8} "
              f"{fmt_bytes(layer.get('original_bytes')):>10} "
              f"{fmt_bytes(layer.get('compressed_bytes')):>10}")
    metrics = {k: m for k, m in (r.get("metrics") or {}).items() if isinstance(m, dict)}
    if metrics:
        names = sorted({k for m in metrics.values() for k in m})
        print(f"\n  {'metric':<14} " + " ".join(f"{n:>12}" for n in metrics))
        for k in names:
            print(f"  {k:<14} " + " ".join(f"{fmt_num(m.get(k)):>12}" for m in metrics.values()))


def show_scores(r: dict) -> None:
    print(f"  rows        {_rows(r)}, {fmt_count(r.get('invalid_rows'))} without a score "
          f"(null/NaN/inf input)")
    print(f"  method      {r.get('method', '-')}" + (", codes folded into the first layer"
                                                    if r.get("codes") == "fold" else ""))
    print(f"  broadcast   {fmt_bytes(r.get('broadcast_bytes'))} (model file "
          f"{fmt_bytes(r.get('model_file_bytes'))})")
    speed = r.get("rows_per_second")
    print(f"  speed       {'-' if speed is None else f'{speed:,.0f}'} rows/s "
          f"({fmt_num(r.get('seconds'))} s score + write)")
    if r.get("python_worker_peak_rss_bytes"):
        print(f"  memory      Python worker peak {fmt_bytes(r['python_worker_peak_rss_bytes'])}")
    columns = list(r.get("passthrough") or []) + list(r.get("output_columns") or [])
    print(f"  output      {', '.join(map(str, columns)) or '-'}")


def show_other(r: dict) -> None:
    for key, value in r.items():
        print(f"  {key:<24} {json.dumps(value, sort_keys=True)}")


SHOW: dict[str, Callable[[dict], None]] = {
    "quantize_features": show_features,
    "dequantize_features": show_restored,
    "compress_model": show_model,
    "score": show_scores,
}


def show(r: dict) -> None:
    """Print report ``r``: the layout of its job, then its warnings, if any."""
    job = r.get("job")
    # Reports written before the "job" field existed are feature reports.
    if job is None and "columns" in r and isinstance(r["columns"], dict):
        job = "quantize_features"
    print(f"  job         {job or '-'}")
    SHOW.get(job, show_other)(r)
    warnings = r.get("warnings") or []
    if warnings:
        print("\n  warnings:")
        for w in warnings:
            print(f"  - {w if isinstance(w, str) else json.dumps(w, sort_keys=True)}")


def build_parser() -> argparse.ArgumentParser:
    doc = (__doc__ or "").strip().splitlines()
    return argparse.ArgumentParser(
        prog="show_report.py", description=doc[0],
        epilog="\n".join(doc[2:]), formatter_class=argparse.RawDescriptionHelpFormatter)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("report", help="a job's report.json, or the output folder holding it")
    args = parser.parse_args(argv)
    path = Path(args.report)
    if path.is_dir():
        path = path / "report.json"
    try:
        r = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        print(f"show_report.py: error: cannot read {path}: {e.strerror}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"show_report.py: error: {path} is not JSON ({e}); pass a job's report.json",
              file=sys.stderr)
        return 2
    if not isinstance(r, dict):
        print(f"show_report.py: error: {path} holds a JSON {type(r).__name__}, not a job's "
              f"report (an object)", file=sys.stderr)
        return 2
    print(f"report: {path}")
    show(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
