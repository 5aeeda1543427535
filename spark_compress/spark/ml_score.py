"""``CompressedModelScorer``: a Spark ML ``Transformer`` that scores with a compressed model file.

It adds ``prediction`` (and ``probability`` for classifiers) like
:func:`spark_compress.spark.score.score_dataframe`, which does the work. The model file's bytes
live in the ``modelBase64`` Param, so a saved ``PipelineModel`` is self-contained: no path has to
stay reachable, and loading re-validates the file (checksum, every field) before first use.
Nothing in it is pickled; the bytes are the same safetensors file ``compress_model`` writes.

Put it after a :class:`~spark_compress.spark.ml.FeatureQuantizerModel` and give it that stage's
codebook (``codebookJson``) to score the codes directly, dequantization folded into the first
layer::

    quantizer = FeatureQuantizer(...).fit(train)
    scorer = CompressedModelScorer.fromFile("out/model.safetensors",
                                            codebookJson=quantizer.getCodebookJson())
    PipelineModel([quantizer, scorer]).transform(data)
"""

from __future__ import annotations

import base64
from pathlib import Path

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame

from spark_compress.errors import ConfigError, FormatError, NotFittedError
from spark_compress.io.codebook import parse_codebook
from spark_compress.spark.ml import _stored
from spark_compress.spark.score import (
    DEFAULT_BATCH_SIZE,
    ModelFile,
    model_file_from_bytes,
    score_dataframe,
)

__all__ = ["CompressedModelScorer"]


class CompressedModelScorer(Transformer, DefaultParamsReadable, DefaultParamsWritable):
    """Score with a compressed model file. Params (all stored as given, checked at transform):

    ``modelBase64`` the file's bytes, base64; ``featuresCols`` the input columns in the model's
    order (default: the names the file records) or ``featuresCol`` one array column;
    ``codebookJson`` set when the inputs are codes; ``method`` (auto, expression, arrow);
    ``batchSize``; ``predictionCol``; ``probabilityCol``.
    """

    modelBase64: Param[str] = Param(Params._dummy(), "modelBase64",
                                    "the compressed model file's bytes, base64",
                                    typeConverter=_stored)
    featuresCols: Param[list] = Param(Params._dummy(), "featuresCols",
                                      "input columns in the model's order (default: the names "
                                      "the model file records)", typeConverter=_stored)
    featuresCol: Param[str] = Param(Params._dummy(), "featuresCol",
                                    "one array<numeric> input column (instead of featuresCols)",
                                    typeConverter=_stored)
    codebookJson: Param[str] = Param(Params._dummy(), "codebookJson",
                                     "codebook of the input codes (their dequantization is "
                                     "folded into the first layer)", typeConverter=_stored)
    method: Param[str] = Param(Params._dummy(), "method", "auto, expression or arrow",
                               typeConverter=_stored)
    batchSize: Param[int] = Param(Params._dummy(), "batchSize",
                                  "rows per forward pass in a Python worker",
                                  typeConverter=_stored)
    predictionCol: Param[str] = Param(Params._dummy(), "predictionCol", "prediction column",
                                      typeConverter=_stored)
    probabilityCol: Param[str] = Param(Params._dummy(), "probabilityCol",
                                       "class probability column (classifiers)",
                                       typeConverter=_stored)

    @keyword_only
    def __init__(self, *, modelBase64: str | None = None, featuresCols: list | None = None,
                 featuresCol: str | None = None, codebookJson: str | None = None,
                 method: str = "auto", batchSize: int = DEFAULT_BATCH_SIZE,
                 predictionCol: str = "prediction", probabilityCol: str = "probability") -> None:
        super().__init__()
        self._setDefault(method="auto", batchSize=DEFAULT_BATCH_SIZE,
                         predictionCol="prediction", probabilityCol="probability")
        self._set(**self._input_kwargs)
        self._cached: tuple[str, ModelFile] | None = None

    @classmethod
    def fromFile(cls, path: str | Path, **params) -> "CompressedModelScorer":
        """A scorer holding the model file at ``path`` (validated now)."""
        data = Path(path).read_bytes()
        model_file_from_bytes(data, source=str(path))
        return cls(modelBase64=base64.b64encode(data).decode("ascii"), **params)

    def model_file(self) -> ModelFile:
        """The validated model file (decoded once per scorer object)."""
        if not self.isDefined(self.modelBase64):
            raise NotFittedError(f"This CompressedModelScorer ({self.uid}) has no model: build "
                                 f"it with CompressedModelScorer.fromFile(path) or set "
                                 f"modelBase64.")
        text = self.getOrDefault(self.modelBase64)
        if self._cached is None or self._cached[0] != text:
            try:
                data = base64.b64decode(text, validate=True)
            except (ValueError, TypeError) as e:
                raise FormatError(f"CompressedModelScorer {self.uid}: modelBase64 is not base64: "
                                  f"{e}") from None
            self._cached = (text, model_file_from_bytes(
                data, source=f"CompressedModelScorer {self.uid} modelBase64"))
        return self._cached[1]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        cols = self.getOrDefault(self.featuresCols) if self.isDefined(self.featuresCols) else None
        col = self.getOrDefault(self.featuresCol) if self.isDefined(self.featuresCol) else None
        if cols is not None and col is not None:
            raise ConfigError("set featuresCols or featuresCol, not both")
        codebook = (parse_codebook(self.getOrDefault(self.codebookJson),
                                   source=f"CompressedModelScorer {self.uid} codebookJson")
                    if self.isDefined(self.codebookJson) else None)
        return score_dataframe(
            dataset, self.model_file(), features=col if col is not None else cols,
            codebook=codebook, method=self.getOrDefault(self.method),
            batch_size=self.getOrDefault(self.batchSize),
            prediction_col=self.getOrDefault(self.predictionCol),
            probability_col=self.getOrDefault(self.probabilityCol))
