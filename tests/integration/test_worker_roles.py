"""Only the scoring UDF's Python workers import TensorFlow (stream/scoring_udf.py,
stream/worker_daemon.py): a UDF bound to the scoring role runs in workers forked from a daemon
that preloaded TensorFlow; every other Python worker of the same session never has it."""
import pandas as pd
import pytest
from pyspark.sql.functions import pandas_udf

from sentinel.stream.scoring_udf import ROLE_ENV, SCORING_ROLE, bind_worker_role

pytestmark = pytest.mark.spark


def _probe(x: pd.Series) -> pd.Series:
    import os
    import sys
    return pd.Series([f"{os.environ.get(ROLE_ENV)}|{'tensorflow' in sys.modules}|{os.getppid()}"] * len(x))


def test_only_workers_bound_to_the_scoring_role_have_tensorflow(spark):
    df = spark.range(4).repartition(2)
    plain = pandas_udf(_probe, "string")
    scoring = bind_worker_role(pandas_udf(_probe, "string"), SCORING_ROLE)
    other = {r.p for r in df.select(plain("id").alias("p")).distinct().collect()}
    scored = {r.p for r in df.select(scoring("id").alias("p")).distinct().collect()}
    assert {p.rsplit("|", 1)[0] for p in other} == {"None|False"}           # no role, no TensorFlow
    assert {p.rsplit("|", 1)[0] for p in scored} == {f"{SCORING_ROLE}|True"}  # preloaded by their daemon
    # two daemons: the scoring workers were forked by another process than the others
    assert not {p.rsplit("|", 1)[1] for p in other} & {p.rsplit("|", 1)[1] for p in scored}
    assert ROLE_ENV not in spark.sparkContext.environment  # binding leaves the session's environment as it was


def test_a_function_that_is_not_a_udf_is_returned_unchanged():
    # a function that is not a pandas UDF (no Java function to create) is returned unchanged
    def f(x):
        return x
    assert bind_worker_role(f, SCORING_ROLE) is f
