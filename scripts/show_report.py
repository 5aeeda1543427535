"""Print a job's report.json (quantize_features, compress_model or score) so a person can read it.

    python scripts/show_report.py OUT/report.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return str(n)


def fmt_num(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    r = json.loads(Path(argv[1]).read_text())
    print(f"report: {argv[1]}")
    if r.get("job") == "compress_model":
        return show_model(r)
    if r.get("job") == "score":
        return show_scores(r)
    print(f"  rows        {r['rows_in']:,} in, {r['rows_out']:,} out")
    print(f"  bytes       {fmt_bytes(r['bytes_in'])} in ({r.get('input_format', '?')}), "
          f"{fmt_bytes(r['bytes_out'])} out (Parquet codes)")
    print(f"  ratio       {r['compression_ratio']}x smaller")
    if r.get("passthrough"):
        print(f"  passthrough {', '.join(r['passthrough'])}")
    cols = r.get("columns", {})
    print(f"\n  {'column':<16} {'method':<11} {'bits':>4} {'scale':>10} {'rmse':>10} "
          f"{'max err':>10} {'clipped':>8} {'nulls':>6} {'NaN':>5} {'bytes out':>10}")
    for name, c in cols.items():
        print(f"  {name[:16]:<16} {c['method']:<11} {c['bits']:>4} {fmt_num(c.get('scale')):>10} "
              f"{fmt_num(c.get('rmse')):>10} {fmt_num(c.get('max_abs_error')):>10} "
              f"{c.get('clipped_count', 0):>8} {c.get('null_count', 0):>6} "
              f"{c.get('nan_count', 0):>5} {fmt_bytes(c.get('bytes_out')):>10}")
    return 0


def show_model(r: dict) -> int:
    print(f"  size        {fmt_bytes(r['original_bytes'])} float32 -> "
          f"{fmt_bytes(r['compressed_bytes'])} file ({r['compression_ratio']:.2f}x, header "
          f"{fmt_bytes(r['header_bytes'])})")
    print(f"\n  {'layer':<6} {'shape':<12} {'sparsity':>8} {'bytes in':>10} {'bytes out':>10}")
    for layer in r["layers"]:
        shape = "x".join(map(str, layer["shape_out"]))
        print(f"  {layer['index']:<6} {shape:<12} {layer['sparsity']:>8.3f} "
              f"{fmt_bytes(layer['original_bytes']):>10} {fmt_bytes(layer['compressed_bytes']):>10}")
    metrics = r["metrics"]
    names = sorted({k for m in metrics.values() for k in m})
    print(f"\n  {'metric':<14} " + " ".join(f"{n:>12}" for n in metrics))
    for k in names:
        print(f"  {k:<14} " + " ".join(f"{fmt_num(m.get(k)):>12}" for m in metrics.values()))
    return 0


def show_scores(r: dict) -> int:
    print(f"  rows        {r['rows_in']:,} in, {r['rows_out']:,} out, {r['invalid_rows']:,} "
          f"without a score (null/NaN/inf input)")
    print(f"  method      {r['method']}" + (f", codes folded into the first layer"
                                             if r.get("codes") == "fold" else ""))
    print(f"  broadcast   {fmt_bytes(r['broadcast_bytes'])} (model file "
          f"{fmt_bytes(r['model_file_bytes'])})")
    print(f"  speed       {r['rows_per_second']:,.0f} rows/s ({r['seconds']} s score + write)")
    if r.get("python_worker_peak_rss_bytes"):
        print(f"  memory      Python worker peak {fmt_bytes(r['python_worker_peak_rss_bytes'])}")
    print(f"  output      {', '.join(r['passthrough'] + r['output_columns'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
