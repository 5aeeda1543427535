"""The numpy core and the file formats import with pyspark and pandas absent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: this test process may already have pyspark or pandas loaded.
SCRIPT = textwrap.dedent("""
    import sys

    BLOCKED = {"pyspark", "pandas"}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())

    for name in sorted(BLOCKED):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"the blocker let {name} through")

    import spark_compress.core.quantize
    import spark_compress.io.codebook
    import spark_compress.io.config

    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    if loaded:
        raise SystemExit(f"loaded: {loaded}")
    print("ok")
""")


def test_core_and_io_import_without_pyspark_and_pandas():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
