"""Daily spark-compress pipeline for Apache Airflow: quantize the day's features, compress the
fraud model against the day's labelled rows, score the day's quantized rows with the compressed
model (the codes are scored directly: dequantization is folded into the model's first layer).

    quantize_features  ->  compress_model  ->  score

Every task is one ``spark-submit`` through ``SparkSubmitOperator``
(``apache-airflow-providers-apache-spark``); the Spark master, deploy mode and ``spark-submit``
binary come from the Airflow connection ``CONN_ID``. Inputs and outputs are partitioned by the run
date (``{{ ds }}``), so a backfill or a retry touches only its own date, and reruns are
idempotent: a job whose output for that date is finished with the same input fingerprint exits 0
with ``"status": "skipped"`` without starting Spark work (see README.md). Exit code 2 (bad
input or config) will not be fixed by a retry; exit 1 may be.

Paths are read from the environment of the Airflow workers, with the layout of the docker-compose
cluster as defaults: ``SPARK_COMPRESS_HOME`` (a checkout with ``jobs/`` and ``conf/``),
``SPARK_COMPRESS_DATA`` (``creditcard/<date>/`` Parquet with the ``Class`` label, and
``models/fraud-mlp.skops``), ``SPARK_COMPRESS_OUT`` (a filesystem every Spark node mounts).

Checked without Airflow by tests/unit/test_deploy_static.py (paths, flags, dependencies).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

HOME = os.environ.get("SPARK_COMPRESS_HOME", "/opt/spark-compress")
DATA = os.environ.get("SPARK_COMPRESS_DATA", "/data")
OUT = os.environ.get("SPARK_COMPRESS_OUT", "/out")
CONN_ID = "spark_compress_cluster"
DS = "{{ ds }}"


def spark_defaults(path: str) -> dict[str, str]:
    """The ``key value`` lines of a ``spark-defaults.conf`` as a dict: the same settings
    ``spark-submit --properties-file`` would load, passed as ``--conf`` by the operator (so the
    file stays the single place they are written)."""
    conf = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.replace("\t", " ").partition(" ")
                conf[key] = value.strip()
    return conf


SPARK_CONF = spark_defaults(f"{HOME}/conf/spark-defaults.conf")

with DAG(
    dag_id="spark_compress_daily",
    description="quantize features, compress the fraud model, score: one date per run",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["spark-compress"],
) as dag:
    quantize = SparkSubmitOperator(
        task_id="quantize_features",
        conn_id=CONN_ID,
        application=f"{HOME}/jobs/quantize_features.py",
        conf=SPARK_CONF,
        application_args=[
            "--input", f"{DATA}/creditcard/{DS}",
            "--config", f"{HOME}/conf/creditcard.toml",
            "--output", f"{OUT}/features/{DS}",
        ],
    )

    compress = SparkSubmitOperator(
        task_id="compress_model",
        conn_id=CONN_ID,
        application=f"{HOME}/jobs/compress_model.py",
        conf=SPARK_CONF,
        application_args=[
            "--model", f"{DATA}/models/fraud-mlp.skops",
            "--config", f"{HOME}/conf/fraud_model.toml",
            "--eval-data", f"{DATA}/creditcard/{DS}",
            "--output", f"{OUT}/model/{DS}",
        ],
    )

    score = SparkSubmitOperator(
        task_id="score",
        conn_id=CONN_ID,
        application=f"{HOME}/jobs/score.py",
        conf=SPARK_CONF,
        application_args=[
            "--model", f"{OUT}/model/{DS}/model.safetensors",
            "--input", f"{OUT}/features/{DS}",
            "--output", f"{OUT}/scores/{DS}",
        ],
    )

    # score reads both upstream outputs. quantize_features runs first: it reads and checks the
    # day's input (the cheapest full pass), so a bad delivery stops the run with exit 2 before
    # the model is compressed.
    quantize >> compress >> score
