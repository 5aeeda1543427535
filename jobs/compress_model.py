"""Compress a trained model (prune, quantize, share, factorize) and evaluate it against the

Thin entry point for ``spark-submit jobs/compress_model.py ...`` from a checkout; the job is
:mod:`spark_compress.jobs.compress_model` (``spark-compress compress_model`` runs it from an installed package).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout

from spark_compress.jobs.compress_model import *  # noqa: E402,F401,F403
from spark_compress.jobs.compress_model import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
