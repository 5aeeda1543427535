"""Decode the output of quantize_features back to float (and category) columns.

Thin entry point for ``spark-submit jobs/dequantize_features.py ...`` from a checkout; the job is
:mod:`spark_compress.jobs.dequantize_features` (``spark-compress dequantize_features`` runs it from an installed package).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout

from spark_compress.jobs.dequantize_features import *  # noqa: E402,F401,F403
from spark_compress.jobs.dequantize_features import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
