"""Replaying a micro-batch into SQLite adds nothing (the foreachBatch writer, with Spark)."""
import json
import sqlite3
from datetime import datetime

import pandas as pd
import pyarrow as pa
import pytest

from sentinel.store.sinks.base import BatchRecords
from sentinel.store.sinks.sqlite import SqliteSink
from sentinel.stream.chunks import encode_table, rejects_table
from sentinel.stream.driver_state import DriverState
from sentinel.stream.writer import BatchWriter, anomaly_records, reject_records

pytestmark = pytest.mark.spark


def _counts(path):
    with sqlite3.connect(path) as con:
        return (con.execute("SELECT count(*) FROM anomalies").fetchone()[0],
                con.execute("SELECT count(*) FROM rejects").fetchone()[0])


def _incidents(path):
    with sqlite3.connect(path) as con:
        return con.execute("SELECT incident_id, first_sensor, opened_at, readings, peak_severity, status "
                           "FROM incidents ORDER BY incident_id").fetchall()


def _chunk(rows):
    """(sensor, event_time, value, score, threshold) rows -> an anomalies chunk as the stream carries it."""
    return encode_table(pa.table({
        "sensor_id": [r[0] for r in rows],
        "event_time": pa.array([int(pd.Timestamp(r[1], tz="UTC").value) for r in rows], pa.int64()),
        "values": pa.FixedSizeListArray.from_arrays(pa.array([float(r[2]) for r in rows]), 1),
        "score": [r[3] for r in rows], "threshold": [r[4] for r in rows], "is_anomaly": [True] * len(rows)}))


def test_replayed_batch_is_a_no_op(spark, tmp_path):
    sink = SqliteSink(tmp_path / "a.db")
    sink.setup()
    junk = rejects_table(["junk", "junk"], ["not_json: x", "not_json: x"], [None, None], [None, None],
                         ["reject", "reject"])
    rows = [(0, 3, 0, None, 3, _chunk([("PT-1", datetime(2026, 1, 1, 0, 0), 30.0, 5.0, 1.0)]), None),
            (1, 1, 0, None, 1, _chunk([("PT-2", datetime(2026, 1, 1, 0, 0), 20.0, 3.0, 1.0)]), None),
            (-1, 2, 0, encode_table(junk), 0, None, None)]
    t_ns = int(pd.Timestamp("2026-01-01", tz="UTC").value)
    rows = [r + (t_ns if r[5] is not None else None, None) for r in rows]
    schema = ("bucket int, n_events long, n_warmup long, rejects binary, n_scored long, anomalies binary, "
              "scores binary, max_time long, model_error string")
    batch = spark.createDataFrame(rows, schema)
    manifest = {"version": "v1", "features": ["pressure"], "window": {"length": 4}, "units": "mca"}
    state = DriverState(tmp_path / "driver")
    writer = BatchWriter([sink], manifest, ["pressure"], state=state)
    writer(batch, 7)
    assert _counts(sink.path) == (2, 2)  # two identical junk lines are two rejects
    assert writer.totals == {"events": 6, "rejects": 2, "anomalies": 2, "windows": 4, "batches": 1,
                             "incidents_opened": 2, "incidents_closed": 0}
    assert state.ids("incidents") == [7]
    first = _incidents(sink.path)
    writer(batch, 7)  # Spark re-runs batch 7 after a restart: from the state before it, same records
    assert _counts(sink.path) == (2, 2)
    assert _incidents(sink.path) == first and len(first) == 2
    with sqlite3.connect(sink.path) as con:
        sev = dict(con.execute("SELECT sensor_id, severity FROM anomalies"))
        vals = dict(con.execute("SELECT sensor_id, \"values\" FROM anomalies"))
    assert sev == {"PT-1": 5.0, "PT-2": 3.0}
    assert json.loads(vals["PT-1"]) == {"pressure": 30.0}


def test_same_anomaly_under_another_model_version_is_kept(tmp_path):
    sink = SqliteSink(tmp_path / "b.db")
    sink.setup()
    df = pd.DataFrame({"sensor_id": ["a"], "event_time": [pd.Timestamp("2026-01-01", tz="UTC")],
                       "score": [2.0], "threshold": [1.0], "values": [[1.0]]})
    empty = reject_records(pd.DataFrame(columns=["raw", "reject_reason", "sensor_id", "event_time"]), 1)
    sink.write(BatchRecords(1, anomalies=anomaly_records(df, "v1", 1, ["p"]), rejects=empty))
    sink.write(BatchRecords(1, anomalies=anomaly_records(df, "v2", 1, ["p"]), rejects=empty))
    assert _counts(sink.path) == (2, 0)
