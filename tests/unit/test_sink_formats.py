"""Column formats the sinks write: vectorised, and equal to the per-row definitions."""
import csv
import io

import numpy as np
import pandas as pd

from sentinel.store.sinks.base import TIME_FORMAT, time_text
from sentinel.store.sinks.postgres import A_COLUMNS, anomaly_csv
from sentinel.stream.writer import anomaly_records


def test_time_text_matches_strftime_and_keeps_missing_times_missing():
    times = pd.Series(pd.to_datetime(["2026-03-25T16:00:00.123456Z", None, "2026-03-25T18:00:00+02:00",
                                      "2099-12-31T23:59:59.999999Z", "2000-01-01T00:00:00Z"],
                                     utc=True, format="ISO8601"))
    assert time_text(times) == [None if pd.isna(t) else t.strftime(TIME_FORMAT) for t in times]
    assert time_text(times)[2] == "2026-03-25 16:00:00.000000"  # stored in UTC
    assert time_text(pd.Series([None, None])) == [None, None]
    assert time_text(pd.Series([], dtype="datetime64[ns, UTC]")) == []


def test_anomaly_csv_round_trips_every_field_exactly():
    rng = np.random.default_rng(4)
    n = 50
    frame = pd.DataFrame({"sensor_id": [f'PT,"{i}"\\x' for i in range(n)],
                          "event_time": pd.to_datetime(1_774_454_400_123_456_000 + np.arange(n) * 300_000_001_000, utc=True),
                          "score": rng.random(n) * 1e3, "threshold": rng.random(n), "values": list(rng.random((n, 2)))})
    records = anomaly_records(frame, "v 1", 12, ["pressure", "flow"])
    rows = list(csv.reader(io.StringIO(anomaly_csv(records))))
    assert len(rows) == n and all(len(r) == len(A_COLUMNS) for r in rows)
    got = pd.DataFrame(rows, columns=A_COLUMNS)
    assert got["sensor_id"].tolist() == records["sensor_id"].tolist()
    assert pd.to_datetime(got["event_time"], utc=True).tolist() == records["event_time"].tolist()
    for col in ("score", "threshold", "severity"):
        assert got[col].astype(float).tolist() == records[col].tolist()
    assert got["values"].tolist() == records["values"].tolist()
    assert set(got["batch_id"]) == {"12"} and set(got["model_version"]) == {"v 1"}
