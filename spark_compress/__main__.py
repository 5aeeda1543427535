"""``python -m spark_compress``: the ``spark-compress`` command (see :mod:`spark_compress.cli`)."""

import sys

from spark_compress.cli import main

sys.exit(main())
