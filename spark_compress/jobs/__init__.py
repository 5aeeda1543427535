"""The spark-submit jobs, one module a verb: ``prepare`` / ``run`` / ``build_parser`` / ``main``.

Each runs as ``spark-submit $(spark-compress job-path NAME) ...`` or through the
``spark-compress NAME`` command; ``jobs/NAME.py`` in a checkout is a thin shim over the module.
"""

JOBS = ("quantize_features", "dequantize_features", "compress_model", "score")
