"""One local[2] SparkSession for the whole test run (a cold start costs about 10 s)."""

from __future__ import annotations

import os
import sys

import pytest

# The hostname resolves to a non-loopback address on these machines.
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
# Python workers run this interpreter (the venv's), also when pytest is run without make.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("spark-compress-tests")
        .config("spark.sql.shuffle.partitions", "4")
        # Tiny on purpose: forces many Arrow batches per partition.
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "7")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-XX:-DontCompileHugeMethods")
        .config("spark.sql.codegen.methodSplitThreshold", "256")
        .getOrCreate()
    )
    yield session
    session.stop()
