"""Spark ML stages for feature compression, so it composes in a ``pyspark.ml.Pipeline``.

* :class:`FeatureQuantizer` (``Estimator``): fits a codebook with :func:`plan_features` and
  :func:`fit_codebook`; its Params mirror the feature config file.
* :class:`FeatureQuantizerModel` (``Model``): replaces every encoded column by its integer codes,
  in place; the dropped columns go, every other column of the input stays as it is.
* :class:`FeatureDequantizer` (``Transformer``): decodes the codes back to values.

All three persist with ``DefaultParamsWritable``/``DefaultParamsReadable``, standalone and inside
``Pipeline``/``PipelineModel.save``/``load``. The fitted state is the codebook's own JSON
(:meth:`Codebook.to_json`, checksummed) in the ``codebookJson`` Param; it is validated with
:func:`parse_codebook` when a stage uses it, so a tampered or truncated saved pipeline raises
:class:`FormatError` at ``transform``, never silently encodes with wrong parameters.

Params are stored as given; they are validated at ``fit`` by the same code that validates the
config file (:func:`parse_feature_config`), with ``"FeatureQuantizer"`` as the source named in
every message.
"""

from __future__ import annotations

import json
from typing import Any

from pyspark import keyword_only
from pyspark.ml import Estimator, Model, Transformer
from pyspark.ml.param import Param, Params
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame

from spark_compress.errors import ConfigError, FormatError, NotFittedError
from spark_compress.io.codebook import Codebook, parse_codebook
from spark_compress.io.config import FeatureConfig, parse_feature_config
from spark_compress.spark.features import (
    decode_features,
    encode_features,
    fit_codebook,
    plan_features,
)

SOURCE = "FeatureQuantizer"

__all__ = ["FeatureQuantizer", "FeatureQuantizerModel", "FeatureDequantizer"]


def _stored(value: Any) -> Any:
    """Keep a Param value as given, only turning numpy scalars and tuples into their plain Python
    equivalents so that the saved metadata is JSON; validation is :meth:`FeatureQuantizer.fit`'s.
    """
    if isinstance(value, tuple):
        return [_stored(v) for v in value]
    if isinstance(value, list):
        return [_stored(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


class _QuantizerParams(Params):
    passthroughCols: Param[list] = Param(
        Params._dummy(), "passthroughCols",
        "columns copied unchanged (config file: [job] passthrough)", typeConverter=_stored)
    dropCols: Param[list] = Param(
        Params._dummy(), "dropCols",
        "columns removed from the output (config file: [job] drop)", typeConverter=_stored)
    method: Param[str] = Param(
        Params._dummy(), "method",
        "default method: minmax, percentile, symmetric, quantile or dictionary",
        typeConverter=_stored)
    bits: Param[int] = Param(
        Params._dummy(), "bits", "default bits per value: 2, 4, 8 or 16", typeConverter=_stored)
    clip: Param[float] = Param(
        Params._dummy(), "clip",
        "default fraction clipped at each tail by method percentile, in (0, 0.5)",
        typeConverter=_stored)
    maxCategories: Param[int] = Param(
        Params._dummy(), "maxCategories",
        "default vocabulary size cap of method dictionary", typeConverter=_stored)
    strings: Param[str] = Param(
        Params._dummy(), "strings",
        "string columns without a method: error, dictionary or passthrough",
        typeConverter=_stored)
    columnSettings: Param[str] = Param(
        Params._dummy(), "columnSettings",
        "JSON object: column name -> {method, bits, clip, max_categories} overriding the defaults",
        typeConverter=_stored)
    relativeError: Param[float] = Param(
        Params._dummy(), "relativeError",
        "approxQuantile relative error for percentile/quantile columns, in (0, 0.1); "
        "unset: derived from bits and clip", typeConverter=_stored)

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(passthroughCols=[], dropCols=[], method="minmax", bits=8, clip=0.001,
                         maxCategories=1000, strings="error", columnSettings="{}")

    def getPassthroughCols(self) -> list:
        return self.getOrDefault(self.passthroughCols)

    def getDropCols(self) -> list:
        return self.getOrDefault(self.dropCols)

    def getMethod(self) -> str:
        return self.getOrDefault(self.method)

    def getBits(self) -> int:
        return self.getOrDefault(self.bits)

    def getClip(self) -> float:
        return self.getOrDefault(self.clip)

    def getMaxCategories(self) -> int:
        return self.getOrDefault(self.maxCategories)

    def getStrings(self) -> str:
        return self.getOrDefault(self.strings)

    def getColumnSettings(self) -> str:
        return self.getOrDefault(self.columnSettings)

    def getRelativeError(self) -> float | None:
        """The relative error, or ``None`` when unset (the fit derives it from bits and clip)."""
        return self.getOrDefault(self.relativeError) if self.isDefined(self.relativeError) \
            else None


class _CodebookParams(Params):
    codebookJson: Param[str] = Param(
        Params._dummy(), "codebookJson",
        "the fitted codebook as its checksummed JSON (Codebook.to_json)", typeConverter=_stored)

    def getCodebookJson(self) -> str:
        self._require_codebook()
        return self.getOrDefault(self.codebookJson)

    @property
    def codebook(self) -> Codebook:
        """The parsed, validated codebook. Raises :class:`NotFittedError` when ``codebookJson`` is
        not set and :class:`FormatError` when it is not a valid codebook."""
        self._require_codebook()
        text = self.getOrDefault(self.codebookJson)
        cached = getattr(self, "_parsed_codebook", None)
        if cached is not None and cached[0] == text:
            return cached[1]
        if not isinstance(text, str):
            raise FormatError(f"{self._where()}: codebookJson must be a JSON string, got "
                              f"{type(text).__name__}")
        codebook = parse_codebook(text, source=self._where())
        self._parsed_codebook = (text, codebook)
        return codebook

    def _where(self) -> str:
        return f"{type(self).__name__} {self.uid} codebookJson"

    def _require_codebook(self) -> None:
        if not self.isDefined(self.codebookJson):
            raise NotFittedError(self._not_fitted_message())

    def _not_fitted_message(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


class FeatureQuantizer(Estimator, _QuantizerParams, DefaultParamsReadable, DefaultParamsWritable):
    """Fits per-column quantization of the features of a DataFrame.

    Every input column is encoded, passed through (``passthroughCols``) or dropped
    (``dropCols``); string columns need a ``dictionary`` method in ``columnSettings`` or a
    ``strings`` policy. ``fit`` makes one aggregation pass, plus one ``approxQuantile`` pass for
    percentile/quantile columns and one grouped count for dictionary columns.

    >>> FeatureQuantizer(passthroughCols=["id"], bits=8,
    ...                  columnSettings='{"city": {"method": "dictionary"}}')  # doctest: +SKIP
    """

    @keyword_only
    def __init__(self, *, passthroughCols: list | None = None, dropCols: list | None = None,
                 method: str | None = None, bits: int | None = None, clip: float | None = None,
                 maxCategories: int | None = None, strings: str | None = None,
                 columnSettings: str | None = None, relativeError: float | None = None) -> None:
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, passthroughCols: list | None = None, dropCols: list | None = None,
                  method: str | None = None, bits: int | None = None, clip: float | None = None,
                  maxCategories: int | None = None, strings: str | None = None,
                  columnSettings: str | None = None, relativeError: float | None = None,
                  ) -> "FeatureQuantizer":
        """Set the given Params; ``None`` leaves a Param as it is."""
        return self._set(**self._input_kwargs)

    def setPassthroughCols(self, value: list) -> "FeatureQuantizer":
        return self._set(passthroughCols=value)

    def setDropCols(self, value: list) -> "FeatureQuantizer":
        return self._set(dropCols=value)

    def setMethod(self, value: str) -> "FeatureQuantizer":
        return self._set(method=value)

    def setBits(self, value: int) -> "FeatureQuantizer":
        return self._set(bits=value)

    def setClip(self, value: float) -> "FeatureQuantizer":
        return self._set(clip=value)

    def setMaxCategories(self, value: int) -> "FeatureQuantizer":
        return self._set(maxCategories=value)

    def setStrings(self, value: str) -> "FeatureQuantizer":
        return self._set(strings=value)

    def setColumnSettings(self, value: str) -> "FeatureQuantizer":
        return self._set(columnSettings=value)

    def setRelativeError(self, value: float) -> "FeatureQuantizer":
        return self._set(relativeError=value)

    @classmethod
    def fromConfig(cls, config: FeatureConfig) -> "FeatureQuantizer":
        """A FeatureQuantizer with the settings of a parsed config file (its ``source`` is not
        kept: errors at ``fit`` name ``FeatureQuantizer``)."""
        d = config.defaults
        columns = {name: {k: v for k, v in (("method", s.method), ("bits", s.bits),
                                            ("clip", s.clip),
                                            ("max_categories", s.max_categories))
                          if v is not None}
                   for name, s in config.columns.items()}
        return cls(passthroughCols=list(config.passthrough), dropCols=list(config.drop),
                   method=d.method, bits=d.bits, clip=d.clip, maxCategories=d.max_categories,
                   strings=d.strings, columnSettings=json.dumps(columns, sort_keys=True),
                   relativeError=config.relative_error)

    def toConfig(self) -> FeatureConfig:
        """Validate the Params and return them as a :class:`FeatureConfig`; raises
        :class:`ConfigError` with the config file's messages, ``FeatureQuantizer`` as the source.
        """
        settings = self.getColumnSettings()
        if not isinstance(settings, str):
            raise ConfigError(f"{SOURCE}: columnSettings must be a JSON string, e.g. "
                              f"json.dumps({{\"city\": {{\"method\": \"dictionary\"}}}}). "
                              f"Got {type(settings).__name__}.")
        try:
            columns = json.loads(settings)
        except ValueError as e:
            raise ConfigError(f"{SOURCE}: columnSettings is not valid JSON ({e}); expected an "
                              f"object such as {{\"city\": {{\"method\": \"dictionary\"}}}}."
                              ) from e
        if not isinstance(columns, dict):
            raise ConfigError(f"{SOURCE}: columnSettings must be a JSON object mapping column "
                              f"names to settings. Got {type(columns).__name__}.")
        doc: dict[str, Any] = {
            "job": {"passthrough": self.getPassthroughCols(), "drop": self.getDropCols()},
            "defaults": {"method": self.getMethod(), "bits": self.getBits(),
                         "clip": self.getClip(), "max_categories": self.getMaxCategories(),
                         "strings": self.getStrings()},
            "columns": columns,
        }
        if self.getRelativeError() is not None:
            doc["fit"] = {"relative_error": self.getRelativeError()}
        return parse_feature_config(doc, source=SOURCE)

    def _fit(self, dataset: DataFrame) -> "FeatureQuantizerModel":
        config = self.toConfig()
        plan = plan_features(dataset.schema, config)
        codebook, _rows = fit_codebook(dataset, plan, relative_error=config.relative_error)
        return FeatureQuantizerModel(codebookJson=codebook.to_json(), dropCols=list(plan.drop))


class FeatureQuantizerModel(Model, _CodebookParams, DefaultParamsReadable, DefaultParamsWritable):
    """Replaces each codebook column by its integer codes (``tinyint``/``smallint``/``int``, see
    the codebook's ``code_type``), in place; removes ``dropCols``; keeps every other column,
    including columns the fit never saw. Null stays null; NaN/+inf/-inf/out-of-vocabulary get the
    negative sentinel codes of :mod:`spark_compress.core.quantize`."""

    dropCols: Param[list] = Param(
        Params._dummy(), "dropCols", "columns removed from the output", typeConverter=_stored)

    @keyword_only
    def __init__(self, *, codebookJson: str | None = None, dropCols: list | None = None) -> None:
        super().__init__()
        self._setDefault(dropCols=[])
        self._set(**self._input_kwargs)

    def getDropCols(self) -> list:
        return self.getOrDefault(self.dropCols)

    def _not_fitted_message(self) -> str:
        return (f"This FeatureQuantizerModel ({self.uid}) has no codebook: get one from "
                f"FeatureQuantizer.fit, or load a saved one with FeatureQuantizerModel.load / "
                f"PipelineModel.load.")

    def inverse(self) -> "FeatureDequantizer":
        """A :class:`FeatureDequantizer` that decodes this model's output."""
        _ = self.codebook  # validate before handing the JSON on
        return FeatureDequantizer(codebookJson=self.getCodebookJson())

    def _transform(self, dataset: DataFrame) -> DataFrame:
        codebook = self.codebook
        drop = set(self.getDropCols())
        return encode_features(dataset, codebook,
                               keep=[n for n in dataset.columns if n not in drop])


class FeatureDequantizer(Transformer, _CodebookParams, DefaultParamsReadable,
                         DefaultParamsWritable):
    """Decodes the codes of a :class:`FeatureQuantizerModel`'s output back to values, in place:
    float sources come back as float, other numeric sources as double, dictionary columns as
    their source type (out-of-vocabulary -> null); null -> null, NaN/+-inf exactly. Every other
    column is kept as it is."""

    @keyword_only
    def __init__(self, *, codebookJson: str | None = None) -> None:
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, codebookJson: str | None = None) -> "FeatureDequantizer":
        return self._set(**self._input_kwargs)

    def setCodebookJson(self, value: str) -> "FeatureDequantizer":
        return self._set(codebookJson=value)

    def _not_fitted_message(self) -> str:
        return (f"This FeatureDequantizer ({self.uid}) has no codebook: build it with "
                f"FeatureQuantizerModel.inverse() or set codebookJson.")

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return decode_features(dataset, self.codebook)
