"""The exceptions spark-compress raises for bad input.

Every error a user can fix (a config key, a column, a file) is one of these, with a message that
names the culprit and, where there is one, the fix. Jobs map them to exit code 2; anything else is
a failure (exit code 1).
"""

from __future__ import annotations


class SparkCompressError(Exception):
    """Base class of the errors caused by the caller's input, config or files."""


class ConfigError(SparkCompressError, ValueError):
    """A config key or parameter value is unknown, missing or out of range."""


class SchemaError(SparkCompressError, TypeError):
    """A column is missing, has a type that cannot be encoded, or is configured twice."""


class DataError(SparkCompressError, ValueError):
    """The data itself cannot be processed (for example an empty dataset)."""


class FormatError(SparkCompressError, ValueError):
    """A codebook or model file is corrupt, truncated, of an unknown version or tampered with."""


class NotFittedError(SparkCompressError, ValueError):
    """An estimator was used before ``fit``."""


class QualityGateFailed(Exception):
    """A job finished and wrote its output, but the output failed the quality gate of its
    config (``[gate]``): not bad input, so not a :class:`SparkCompressError`. Jobs map it to
    exit code 3 ("quality gate failed"). ``summary`` is the job's JSON summary (it includes the
    ``gate``); ``str(self)`` the one-line message naming the failed checks."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary
