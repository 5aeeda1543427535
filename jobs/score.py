"""Score a dataset with a compressed model file, broadcast to every executor.

Thin entry point for ``spark-submit jobs/score.py ...`` from a checkout; the job is
:mod:`spark_compress.jobs.score` (``spark-compress score`` runs it from an installed package).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout

from spark_compress.jobs.score import *  # noqa: E402,F401,F403
from spark_compress.jobs.score import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
