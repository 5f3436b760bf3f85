"""Replaying a micro-batch into SQLite adds nothing (the foreachBatch writer, with Spark)."""
import sqlite3
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from sentinel.sinks.sqlite import SqliteSink
from sentinel.stream import BatchWriter, anomaly_records, reject_records

pytestmark = pytest.mark.spark


def _counts(path):
    with sqlite3.connect(path) as con:
        return (con.execute("SELECT count(*) FROM anomalies").fetchone()[0],
                con.execute("SELECT count(*) FROM rejects").fetchone()[0])


def _packed(*values: float) -> bytes:
    """Readings as the stream carries them: packed float64."""
    return np.array(values, dtype=np.float64).tobytes()


def test_replayed_batch_is_a_no_op(spark, tmp_path):
    sink = SqliteSink(tmp_path / "a.db")
    sink.setup()
    rows = [("PT-1", datetime(2026, 1, 1, 0, 0), _packed(30.0), "l1", "window", None, 5.0, 1.0, True),
            ("PT-1", datetime(2026, 1, 1, 0, 5), _packed(31.0), "l2", "window", None, 0.5, 1.0, False),
            ("PT-2", datetime(2026, 1, 1, 0, 0), _packed(20.0), "l3", "window", None, 3.0, 1.0, True),
            (None, None, None, "junk", "reject", "not_json: x", None, None, None),
            (None, None, None, "junk", "reject", "not_json: x", None, None, None)]
    schema = ("sensor_id string, event_time timestamp, `values` binary, raw string, status string, "
              "reject_reason string, score double, threshold double, is_anomaly boolean")
    batch = spark.createDataFrame(rows, schema)
    writer = BatchWriter([sink], "v1", ["pressure"])
    writer(batch, 7)
    assert _counts(sink.path) == (2, 2)  # two identical junk lines are two rejects
    writer(batch, 7)  # Spark re-runs batch 7 after a restart
    assert _counts(sink.path) == (2, 2)
    with sqlite3.connect(sink.path) as con:
        sev = dict(con.execute("SELECT sensor_id, severity FROM anomalies"))
    assert sev == {"PT-1": 5.0, "PT-2": 3.0}


def test_same_anomaly_under_another_model_version_is_kept(tmp_path):
    sink = SqliteSink(tmp_path / "b.db")
    sink.setup()
    df = pd.DataFrame({"sensor_id": ["a"], "event_time": [pd.Timestamp("2026-01-01", tz="UTC")],
                       "score": [2.0], "threshold": [1.0], "values": [[1.0]]})
    empty = reject_records(pd.DataFrame(columns=["raw", "reject_reason", "sensor_id", "event_time"]), 1)
    sink.write(anomaly_records(df, "v1", 1, ["p"]), empty, 1)
    sink.write(anomaly_records(df, "v2", 1, ["p"]), empty, 1)
    assert _counts(sink.path) == (2, 0)
