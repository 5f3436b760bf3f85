"""The sink contract: ``setup()`` once, ``write(anomalies, rejects, batch_id)`` per micro-batch.

``write`` is called on the driver from ``foreachBatch``. It must be idempotent by the natural
keys (anomaly: sensor_id, event_time, model_version; reject: batch_id, seq) so that Spark
re-running a micro-batch after a failure adds nothing. Raising fails the micro-batch loudly.

Frames follow ``stream.anomaly_records`` and ``stream.reject_records``; times are UTC.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

ANOMALY_COLUMNS = ["sensor_id", "event_time", "score", "threshold", "severity", "values",
                   "model_version", "batch_id", "detected_at"]
REJECT_COLUMNS = ["batch_id", "seq", "raw", "reason", "sensor_id", "event_time", "received_at"]
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # UTC; sorts as text and SQLite's datetime() reads it


class Sink(Protocol):
    name: str

    def setup(self) -> None:
        """Create schemas/buckets; called once before the first batch."""

    def write(self, anomalies: pd.DataFrame, rejects: pd.DataFrame, batch_id: int) -> None:
        """Store one micro-batch; idempotent by natural key."""

    def close(self) -> None:
        """Release connections."""


def time_text(series: pd.Series) -> list:
    """UTC timestamps -> 'YYYY-MM-DD HH:MM:SS.ffffff' text (None stays None)."""
    t = pd.to_datetime(series, utc=True).to_numpy(dtype="datetime64[us]")
    # numpy formats the whole column in C ('YYYY-MM-DDTHH:MM:SS.ffffff'); per-row strftime
    # was two thirds of an SQLite write.
    text = np.datetime_as_string(t, unit="us").tolist()
    return [None if nat else x.replace("T", " ", 1) for x, nat in zip(text, np.isnat(t).tolist())]
