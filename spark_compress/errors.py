"""The exceptions spark-compress raises for bad input.

Every error a user can fix (a config key, a column, a file) is one of these, with a message that
names the culprit and, where there is one, the fix. Jobs map them to exit code 2; anything else is
a failure (exit code 1). A data error found inside a Spark task is a :class:`TaskDataError`,
whose marked text lets the driver recover its message from Spark's exception
(:func:`task_data_error_message`); jobs map it to exit code 2 too.
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


# The marker a TaskDataError puts in front of its message. Spark hands a task's failure to the
# driver as text (a PythonException carrying the worker's traceback, a Py4JJavaError, the
# SparkRuntimeException of SQL ``raise_error``), never as the Python object, so the driver finds
# the message again by this marker. Square brackets, like Spark's own error classes.
TASK_DATA_ERROR_MARKER = "[SPARK_COMPRESS_DATA_ERROR]"


class TaskDataError(DataError):
    """A :class:`DataError` raised inside a Spark task (``mapInArrow``, an Arrow UDF, SQL
    ``raise_error``). Its text is ``[SPARK_COMPRESS_DATA_ERROR] <one-line message>``; the
    driver recovers the message with :func:`task_data_error_message` and jobs exit 2 with it.

    ``str(e)`` is the marked text; ``e.message`` the one-line message alone.
    """

    def __init__(self, message: str) -> None:
        self.message = " ".join(str(message).split())  # one line, whatever the caller built
        super().__init__(f"{TASK_DATA_ERROR_MARKER} {self.message}")


def marked(message: str) -> str:
    """``message`` with the marker in front, for SQL ``raise_error`` (the text a JVM task
    raises must carry the marker the same way a Python task's does)."""
    return f"{TASK_DATA_ERROR_MARKER} {message}"


def task_data_error_message(error: BaseException | str) -> str | None:
    """The one-line message of the first :class:`TaskDataError` marker in ``error``'s text (the
    exception's ``str`` and those of its causes; for Spark's exceptions that includes the task's
    Python traceback or the JVM error), or ``None`` when there is none.

    The message runs from the marker to the end of its line, without the ``SQLSTATE: ...``
    that Spark appends to a SQL ``raise_error`` message.
    """
    text = error if isinstance(error, str) else _text(error)
    at = text.find(TASK_DATA_ERROR_MARKER)
    if at < 0:
        return None
    rest = text[at + len(TASK_DATA_ERROR_MARKER):]
    line = rest.splitlines()[0] if rest else ""
    return line.split(" SQLSTATE: ", 1)[0].strip() or None


def _text(error: BaseException) -> str:
    parts = [str(error)]
    cause = error.__cause__ or error.__context__
    seen = {id(error)}
    while cause is not None and id(cause) not in seen:  # chained exceptions, once each
        seen.add(id(cause))
        parts.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    return "\n".join(parts)
