"""Print a quantize_features report.json as a table a person can read.

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


if __name__ == "__main__":
    sys.exit(main(sys.argv))
