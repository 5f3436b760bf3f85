"""SQLite store: a single file, the embedded default.

Writes one transaction per micro-batch: anomalies, scores and rejects with ``INSERT ... ON
CONFLICT DO NOTHING`` on their keys, incidents and the batch row upserted
(:func:`base.incident_upsert`), so a replayed batch changes nothing and a crash never leaves
half a batch. A failed write (a full disk, a lock held too long) rolls the batch back and raises
a one-sentence :class:`StoreError` naming the file and the fix; the micro-batch then fails and
re-runs after a restart.

Schema: ``SCHEMA`` is the first version's tables, unchanged; ``setup()`` then adds what later
versions brought to a file that lacks it (``ALTER TABLE ... ADD COLUMN`` for the anomaly
columns ``expected`` and ``explanation``, ``CREATE TABLE IF NOT EXISTS`` for scores, incidents,
incident_actions, mutes and batches), so a file written by an older version keeps working and
a new file has the same columns in the same order.
"""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pandas as pd

from sentinel.store.errors import StoreError
from sentinel.store.sinks.base import (ANOMALY_COLUMNS, BATCH_COLUMNS, INCIDENT_STREAM_COLUMNS, REJECT_COLUMNS,
                                       SCORE_COLUMNS, BatchRecords, Retention, conform, incident_rows,
                                       incident_upsert, json_or_none, one_time_text, text_or_none, time_text)

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

# (table, column, declaration): added by setup() to a file that lacks them.
ADDED_COLUMNS = [
    ("anomalies", "expected", "TEXT"),       # JSON object feature -> expected value, or null
    ("anomalies", "explanation", "TEXT"),    # one sentence, or null
]

TABLES = """
CREATE TABLE IF NOT EXISTS scores (
    sensor_id     TEXT NOT NULL,
    event_time    TEXT NOT NULL,
    score         REAL NOT NULL,
    threshold     REAL NOT NULL,
    severity      REAL NOT NULL,
    is_anomaly    INTEGER NOT NULL,       -- 0 / 1
    "values"      TEXT NOT NULL,
    expected      TEXT,
    model_version TEXT NOT NULL,
    batch_id      INTEGER NOT NULL,
    PRIMARY KEY (sensor_id, event_time, model_version)
);
CREATE INDEX IF NOT EXISTS scores_by_time ON scores (event_time);
CREATE TABLE IF NOT EXISTS incidents (
    incident_id     TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,        -- leak | burst | sensor_fault | operational | unknown
    status          TEXT NOT NULL,        -- new | acknowledged | closed (merged by rank)
    zone            TEXT,
    sensors         TEXT NOT NULL,        -- JSON list, ranked by share
    first_sensor    TEXT NOT NULL,
    opened_at       TEXT NOT NULL,        -- event time of the first reading
    last_seen       TEXT NOT NULL,
    closed_at       TEXT,                 -- event time; null while open
    peak_severity   REAL NOT NULL,
    readings        INTEGER NOT NULL,
    explanation     TEXT,
    muted           INTEGER NOT NULL,     -- 0 / 1
    model_version   TEXT NOT NULL,
    detected_at     TEXT NOT NULL,        -- wall clock when first written
    updated_at      TEXT NOT NULL,        -- wall clock of the last stream update
    batch_id        INTEGER NOT NULL,
    acknowledged_by TEXT,                 -- operator-owned from here on
    acknowledged_at TEXT,
    closed_by       TEXT,
    label           TEXT,
    labelled_by     TEXT,
    labelled_at     TEXT,
    comment         TEXT
);
CREATE INDEX IF NOT EXISTS incidents_by_opened ON incidents (opened_at);
CREATE INDEX IF NOT EXISTS incidents_by_status ON incidents (status);
CREATE TABLE IF NOT EXISTS incident_actions (
    action_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL,
    action      TEXT NOT NULL,            -- ack | close | label
    actor       TEXT NOT NULL,
    at          TEXT NOT NULL,
    label       TEXT,
    comment     TEXT
);
CREATE INDEX IF NOT EXISTS incident_actions_by_incident ON incident_actions (incident_id);
CREATE TABLE IF NOT EXISTS mutes (
    mute_id    TEXT PRIMARY KEY,
    sensor_id  TEXT,
    zone       TEXT,
    starts_at  TEXT NOT NULL,
    ends_at    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    CHECK ((sensor_id IS NULL) <> (zone IS NULL)),
    CHECK (ends_at > starts_at)
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id         INTEGER PRIMARY KEY,
    written_at       TEXT NOT NULL,
    events           INTEGER NOT NULL,
    scored           INTEGER NOT NULL,
    warmup           INTEGER NOT NULL,
    rejects          INTEGER NOT NULL,
    anomalies        INTEGER NOT NULL,
    incidents_open   INTEGER NOT NULL,
    incidents_opened INTEGER NOT NULL,
    incidents_closed INTEGER NOT NULL,
    max_event_time   TEXT,
    model_version    TEXT NOT NULL,
    duration_s       REAL NOT NULL
);
"""

_ph = lambda n: ", ".join("?" * n)  # noqa: E731
_cols = lambda cols: ", ".join(f'"{c}"' for c in cols)  # noqa: E731
A_INSERT = f"INSERT INTO anomalies ({_cols(ANOMALY_COLUMNS)}) VALUES ({_ph(len(ANOMALY_COLUMNS))}) ON CONFLICT DO NOTHING"
R_INSERT = f"INSERT INTO rejects ({_cols(REJECT_COLUMNS)}) VALUES ({_ph(len(REJECT_COLUMNS))}) ON CONFLICT DO NOTHING"
S_INSERT = f"INSERT INTO scores ({_cols(SCORE_COLUMNS)}) VALUES ({_ph(len(SCORE_COLUMNS))}) ON CONFLICT DO NOTHING"
I_UPSERT = incident_upsert("incidents", f"VALUES ({_ph(len(INCIDENT_STREAM_COLUMNS))})")
B_UPSERT = (f"INSERT INTO batches ({_cols(BATCH_COLUMNS)}) VALUES ({_ph(len(BATCH_COLUMNS))}) "
            "ON CONFLICT (batch_id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in BATCH_COLUMNS[1:]))


def anomaly_rows(anomalies: pd.DataFrame) -> list[tuple]:
    a = conform(anomalies, ANOMALY_COLUMNS)
    if not len(a):
        return []
    return list(zip(a["sensor_id"], time_text(a["event_time"]), a["score"], a["threshold"], a["severity"],
                    a["values"], [json_or_none(v) for v in a["expected"]], [text_or_none(v) for v in a["explanation"]],
                    a["model_version"], a["batch_id"].astype(int), time_text(a["detected_at"])))


def score_rows(scores: pd.DataFrame | None) -> list[tuple]:
    s = conform(scores, SCORE_COLUMNS)
    if not len(s):
        return []
    return list(zip(s["sensor_id"], time_text(s["event_time"]), s["score"].astype(float), s["threshold"].astype(float),
                    s["severity"].astype(float), s["is_anomaly"].astype(bool).astype(int), s["values"],
                    [json_or_none(v) for v in s["expected"]], s["model_version"], s["batch_id"].astype(int)))


def incident_values(incidents: pd.DataFrame) -> list[tuple]:
    i = incident_rows(incidents)
    if not len(i):
        return []
    return list(zip(i["incident_id"].astype(str), i["kind"].astype(str), i["status"].astype(str),
                    [text_or_none(v) for v in i["zone"]], [json_or_none(v) for v in i["sensors"]],
                    i["first_sensor"].astype(str), time_text(i["opened_at"]), time_text(i["last_seen"]),
                    time_text(i["closed_at"]), i["peak_severity"].astype(float), i["readings"].astype(int),
                    [text_or_none(v) for v in i["explanation"]], i["muted"].fillna(False).astype(bool).astype(int),
                    i["model_version"].astype(str), time_text(i["detected_at"]), time_text(i["updated_at"]),
                    i["batch_id"].astype(int)))


def batch_values(batch: dict) -> tuple:
    b = {c: batch.get(c) for c in BATCH_COLUMNS}
    b["written_at"], b["max_event_time"] = one_time_text(b["written_at"]), one_time_text(b["max_event_time"])
    return tuple(b[c] for c in BATCH_COLUMNS)


class SqliteSink:
    name = "sqlite"

    def __init__(self, path: str | Path, write_scores: bool = True, scores_retention_days: int = 0,
                 retention_every: int | None = None):
        self.path = Path(path)
        self.wants_scores = bool(write_scores)
        self.retention = Retention(scores_retention_days, *([retention_every] if retention_every else []))

    @classmethod
    def from_settings(cls, settings) -> "SqliteSink":
        return cls(settings.sinks.sqlite.path, settings.sinks.write_scores, settings.sinks.scores_retention_days)

    def connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")  # analysts can read while the job writes
        return con

    def setup(self) -> list[str]:
        """Create the tables, or upgrade a file written by an older version; returns the
        columns added (``table.column``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = self.connect()
            try:
                with con:
                    con.executescript(SCHEMA)
                added = upgrade(con)
                with con:
                    con.executescript(TABLES)
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise self._failed("setup (creating or upgrading the tables) failed", exc) from exc
        return added

    def write(self, records: BatchRecords) -> None:
        a_rows = anomaly_rows(records.anomalies)
        r = conform(records.rejects, REJECT_COLUMNS)
        r_rows = list(zip(r["batch_id"].astype(int), r["seq"], r["raw"], r["reason"], r["sensor_id"],
                          time_text(r["event_time"]), time_text(r["received_at"]))) if len(r) else []
        s_rows = score_rows(records.scores) if self.wants_scores else []
        i_rows = incident_values(records.incidents)
        prune = self.wants_scores and self.retention.due(records.batch_id)
        try:
            con = self.connect()
            try:
                with con:  # one transaction: the whole batch or nothing
                    con.executemany(A_INSERT, a_rows)
                    con.executemany(R_INSERT, r_rows)
                    con.executemany(S_INSERT, s_rows)
                    con.executemany(I_UPSERT, i_rows)
                    con.execute(B_UPSERT, batch_values(records.batch))
                    if prune:
                        newest = con.execute("SELECT max(event_time) FROM scores").fetchone()[0]
                        cutoff = self.retention.cutoff(pd.Timestamp(newest, tz="UTC") if newest else None)
                        if cutoff is not None:
                            con.execute("DELETE FROM scores WHERE event_time < ?", (one_time_text(cutoff),))
            finally:
                con.close()  # an uncommitted transaction rolls back here
        except sqlite3.Error as exc:
            raise self._failed(f"batch {records.batch_id} was not written, none of its rows were stored", exc) from exc

    def _failed(self, what: str, exc: sqlite3.Error) -> StoreError:
        """One sentence for a failed SQLite call: the file, what failed, the error and the fix.
        A full disk shows as SQLITE_FULL or, when even the WAL index cannot grow, as a "disk I/O
        error" (SQLITE_IOERR_SHMSIZE), so the free space decides which fix to name."""
        code = getattr(exc, "sqlite_errorname", "") or type(exc).__name__
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            free = None
        if code == "SQLITE_FULL" or (free is not None and free < 1 << 20):
            fix = (f"the disk holding it has {free if free is not None else 'no'} bytes free: free space there (or "
                   "move sinks.sqlite.path) and restart the job, which re-runs the batch from its checkpoint")
        elif code == "SQLITE_BUSY":
            fix = "another process holds the write lock too long: stop it and restart the job"
        else:
            fix = ("check the file and its folder (permissions, disk, another program holding it) and restart the job, "
                   "which re-runs the batch from its checkpoint")
        reason = " ".join(str(exc).split()) or code
        return StoreError(f"sqlite store {self.path}: {what} ({reason}, {code}); {fix}")

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


def upgrade(con: sqlite3.Connection) -> list[str]:
    """Add the ADDED_COLUMNS a file lacks; re-running adds nothing. Checked and altered under the
    write lock, so two processes starting at once cannot both add a column."""
    added = []
    con.execute("BEGIN IMMEDIATE")
    try:
        for table, column, decl in ADDED_COLUMNS:
            have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                con.execute(f'ALTER TABLE {table} ADD COLUMN "{column}" {decl}')
                added.append(f"{table}.{column}")
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return added
