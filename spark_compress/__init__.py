"""spark-compress: compress feature columns and models for batch ML pipelines on Spark."""

__version__ = "0.1.0"
