"""Train the demo's fraud model: ``python scripts/demo_model.py CREDITCARD.csv OUT_DIR``.

Thin entry point from a checkout; the code is :mod:`spark_compress.demo`, which the installed
command runs as ``spark-compress demo-model CREDITCARD.csv OUT_DIR``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout

from spark_compress.demo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="scripts/demo_model.py"))
