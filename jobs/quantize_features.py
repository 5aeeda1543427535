"""Quantize the feature columns of a dataset and write compact Parquet plus a codebook.

Thin entry point for ``spark-submit jobs/quantize_features.py ...`` from a checkout; the job is
:mod:`spark_compress.jobs.quantize_features` (``spark-compress quantize_features`` runs it from an installed package).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout

from spark_compress.jobs.quantize_features import *  # noqa: E402,F401,F403
from spark_compress.jobs.quantize_features import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
