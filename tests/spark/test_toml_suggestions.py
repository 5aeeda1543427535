"""The feature plan's message for an unconfigured string column suggests a TOML table that
parses and configures exactly that column (no Spark session needed: a schema is enough)."""

from __future__ import annotations

import re
import tomllib

import pytest

from spark_compress.errors import SchemaError
from spark_compress.io.config import parse_feature_config

pytestmark = pytest.mark.spark


@pytest.mark.parametrize("name", ["city", "home city", "a.b", 'say "hi"'])
def test_unconfigured_string_column_suggestion_parses(name):
    from pyspark.sql import types as T

    from spark_compress.spark.features import plan_features

    schema = T.StructType([T.StructField("x", T.DoubleType()), T.StructField(name, T.StringType())])
    with pytest.raises(SchemaError, match="is not configured") as e:
        plan_features(schema, parse_feature_config({}, source="f.toml"))
    suggestion = re.search(r"add (.*?) method = \"dictionary\"", str(e.value)).group(1)
    fixed = tomllib.loads(f'{suggestion}\nmethod = "dictionary"\n')
    assert fixed == {"columns": {name: {"method": "dictionary"}}}
    plan = plan_features(schema, parse_feature_config(fixed))
    assert [c.name for c in plan.encode] == ["x", name]
