"""SQLite anomaly store: a single file, the embedded default.

Writes with ``INSERT ... ON CONFLICT DO NOTHING`` on the natural keys, in one transaction per
micro-batch, so a replayed batch is a no-op and a crash never leaves half a batch.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd

from sentinel.store.sinks.base import time_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS anomalies (
    sensor_id     TEXT NOT NULL,
    event_time    TEXT NOT NULL,          -- UTC, 'YYYY-MM-DD HH:MM:SS.ffffff'
    score         REAL NOT NULL,
    threshold     REAL NOT NULL,
    severity      REAL NOT NULL,          -- score / threshold
    "values"      TEXT NOT NULL,          -- JSON object feature -> reading
    model_version TEXT NOT NULL,
    batch_id      INTEGER NOT NULL,
    detected_at   TEXT NOT NULL,
    PRIMARY KEY (sensor_id, event_time, model_version)
);
CREATE INDEX IF NOT EXISTS anomalies_by_time ON anomalies (event_time);
CREATE TABLE IF NOT EXISTS rejects (
    batch_id    INTEGER NOT NULL,
    seq         TEXT NOT NULL,
    raw         TEXT NOT NULL,
    reason      TEXT NOT NULL,
    sensor_id   TEXT,
    event_time  TEXT,
    received_at TEXT NOT NULL,
    PRIMARY KEY (batch_id, seq)
);
CREATE INDEX IF NOT EXISTS rejects_by_reason ON rejects (reason);
CREATE TABLE IF NOT EXISTS sensors (
    sensor_id TEXT PRIMARY KEY,
    latitude  REAL,
    longitude REAL,
    zone      TEXT,
    type      TEXT
);
CREATE INDEX IF NOT EXISTS sensors_by_zone ON sensors (zone);
"""


class SqliteSink:
    name = "sqlite"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")  # analysts can read while the job writes
        return con

    def setup(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            con.executescript(SCHEMA)

    def write(self, anomalies: pd.DataFrame, rejects: pd.DataFrame, batch_id: int) -> None:
        a_rows = list(zip(anomalies["sensor_id"], time_text(anomalies["event_time"]), anomalies["score"],
                          anomalies["threshold"], anomalies["severity"], anomalies["values"],
                          anomalies["model_version"], anomalies["batch_id"].astype(int),
                          time_text(anomalies["detected_at"]))) if len(anomalies) else []
        r_rows = list(zip(rejects["batch_id"].astype(int), rejects["seq"], rejects["raw"], rejects["reason"],
                          rejects["sensor_id"], time_text(rejects["event_time"]),
                          time_text(rejects["received_at"]))) if len(rejects) else []
        con = self.connect()
        try:
            with con:  # one transaction: the whole batch or nothing
                con.executemany('INSERT INTO anomalies VALUES (?,?,?,?,?,?,?,?,?) '
                                'ON CONFLICT DO NOTHING', a_rows)
                con.executemany("INSERT INTO rejects VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", r_rows)
        finally:
            con.close()

    def load_sensors(self, sensors: pd.DataFrame) -> int:
        from sentinel.store import registry
        rows = registry.rows(sensors)
        con = self.connect()
        try:
            with con:
                con.executemany("INSERT INTO sensors VALUES (?,?,?,?,?) ON CONFLICT (sensor_id) DO UPDATE SET "
                                "latitude=excluded.latitude, longitude=excluded.longitude, "
                                "zone=excluded.zone, type=excluded.type", rows)
        finally:
            con.close()
        return len(rows)

    def close(self) -> None:
        pass
