"""The sink contract: ``setup()`` once, ``write(records)`` per micro-batch, ``close()`` at the end.

``write`` is called on the driver from ``foreachBatch`` with one :class:`BatchRecords`. It
must be idempotent by the records' keys so that Spark re-running a micro-batch after a failure
adds nothing:

- anomaly and score: ``(sensor_id, event_time, model_version)``, first write kept;
- reject: ``(batch_id, seq)``;
- incident: ``incident_id``, upserted: stream-owned fields replaced by the same or a newer
  batch (``detected_at`` keeps the first write), ``status`` merged by rank (new < acknowledged <
  closed, never back), and the operator-owned fields (:data:`INCIDENT_OPERATOR_COLUMNS`) never
  written by the stream;
- batch: ``batch_id``, replaced.

Stores with transactions write a batch in one (all or nothing). Raising fails the micro-batch
loudly; Spark re-runs it after a restart. Times are UTC; JSON fields (``values``, ``expected``,
``sensors``) are JSON text in the frames.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

import numpy as np
import pandas as pd

ANOMALY_COLUMNS = ["sensor_id", "event_time", "score", "threshold", "severity", "values", "expected",
                   "explanation", "model_version", "batch_id", "detected_at"]
ANOMALY_KEY = ["sensor_id", "event_time", "model_version"]
REJECT_COLUMNS = ["batch_id", "seq", "raw", "reason", "sensor_id", "event_time", "received_at"]
SCORE_COLUMNS = ["sensor_id", "event_time", "score", "threshold", "severity", "is_anomaly", "values", "expected",
                 "model_version", "batch_id"]
# What the stream writes for an incident (status included: it writes "new" or "closed").
INCIDENT_STREAM_COLUMNS = ["incident_id", "kind", "status", "zone", "sensors", "first_sensor", "opened_at",
                           "last_seen", "closed_at", "peak_severity", "readings", "explanation", "muted",
                           "model_version", "detected_at", "updated_at", "batch_id"]
# What only operators write (sentinel incidents, the web app); the stream never touches them.
INCIDENT_OPERATOR_COLUMNS = ["acknowledged_by", "acknowledged_at", "closed_by", "label", "labelled_by",
                             "labelled_at", "comment"]
INCIDENT_COLUMNS = INCIDENT_STREAM_COLUMNS + INCIDENT_OPERATOR_COLUMNS
INCIDENT_EVENT_COLUMNS = ["incident_id", "event"]
INCIDENT_EVENTS = ("open", "update", "close")
INCIDENT_ACTION_COLUMNS = ["action_id", "incident_id", "action", "actor", "at", "label", "comment"]
MUTE_COLUMNS = ["mute_id", "sensor_id", "zone", "starts_at", "ends_at", "reason", "created_by", "created_at"]
BATCH_COLUMNS = ["batch_id", "written_at", "events", "scored", "warmup", "rejects", "anomalies", "incidents_open",
                 "incidents_opened", "incidents_closed", "max_event_time", "model_version", "duration_s"]

# The status vocabulary the stores merge by (sentinel.incidents.lifecycle holds the same
# tuple; a unit test keeps them equal: store sits below incidents and cannot import it).
STATUSES = ("new", "acknowledged", "closed")
STATUS_RANK = {s: i for i, s in enumerate(STATUSES)}
# Scores retention runs on the first batch after setup, then every this many batches.
RETENTION_EVERY_BATCHES = 100

TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # UTC; sorts as text and SQLite's datetime() reads it


def empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=columns)


@dataclass
class BatchRecords:
    """Everything one micro-batch writes, handed to every sink's ``write``.

    Attributes:
        batch_id: Spark's micro-batch id.
        anomalies: ANOMALY_COLUMNS (``expected``/``explanation`` may be missing: stored null).
        rejects: REJECT_COLUMNS.
        scores: SCORE_COLUMNS, every scored reading; None when ``sinks.write_scores`` is off.
        incidents: INCIDENT_STREAM_COLUMNS, the incidents this batch opened, updated or closed.
        incident_events: INCIDENT_EVENT_COLUMNS, ``open | update | close`` per incident (alert topic).
        batch: the batch record (BATCH_COLUMNS), see :func:`batch_record`.
    """

    batch_id: int
    anomalies: pd.DataFrame = field(default_factory=lambda: empty(ANOMALY_COLUMNS))
    rejects: pd.DataFrame = field(default_factory=lambda: empty(REJECT_COLUMNS))
    scores: pd.DataFrame | None = None
    incidents: pd.DataFrame = field(default_factory=lambda: empty(INCIDENT_STREAM_COLUMNS))
    incident_events: pd.DataFrame = field(default_factory=lambda: empty(INCIDENT_EVENT_COLUMNS))
    batch: dict = field(default_factory=dict)

    def __post_init__(self):
        self.batch_id = int(self.batch_id)
        for name in ("anomalies", "rejects", "incidents", "incident_events"):
            if getattr(self, name) is None:
                setattr(self, name, empty(_COLUMNS[name]))
        if not self.batch:
            self.batch = batch_record(self.batch_id, anomalies=len(self.anomalies), rejects=len(self.rejects))
        if self.batch.get("batch_id") != self.batch_id:
            raise ValueError(f"batch record says batch {self.batch.get('batch_id')}, the records batch {self.batch_id}")


_COLUMNS = {"anomalies": ANOMALY_COLUMNS, "rejects": REJECT_COLUMNS, "incidents": INCIDENT_STREAM_COLUMNS,
            "incident_events": INCIDENT_EVENT_COLUMNS}


class Sink(Protocol):
    name: str
    wants_scores: bool  # writes records.scores (sinks.write_scores); the stream keeps scores if any sink does

    def setup(self) -> None:
        """Create or upgrade schemas/buckets; called once before the first batch."""

    def write(self, records: BatchRecords) -> None:
        """Store one micro-batch, idempotently by key; one transaction where the store has them."""

    def close(self) -> None:
        """Release connections."""


def batch_record(batch_id: int, *, events: int = 0, scored: int = 0, warmup: int = 0, rejects: int = 0,
                 anomalies: int = 0, incidents_open: int = 0, incidents_opened: int = 0, incidents_closed: int = 0,
                 max_event_time=None, model_version: str = "", duration_s: float = 0.0,
                 written_at: datetime | None = None) -> dict:
    """The batch record (one row of ``batches``). ``written_at``: if not given, now (UTC)."""
    t = pd.Timestamp(max_event_time) if max_event_time is not None and not pd.isna(max_event_time) else None
    if t is not None:
        t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return {"batch_id": int(batch_id), "written_at": pd.Timestamp(written_at or datetime.now(timezone.utc)),
            "events": int(events), "scored": int(scored), "warmup": int(warmup), "rejects": int(rejects),
            "anomalies": int(anomalies), "incidents_open": int(incidents_open),
            "incidents_opened": int(incidents_opened), "incidents_closed": int(incidents_closed),
            "max_event_time": t, "model_version": str(model_version), "duration_s": float(duration_s)}


def conform(frame: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    """``frame`` with exactly ``columns`` (missing ones, e.g. ``expected`` from an older writer, as null)."""
    if frame is None:
        return empty(columns)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        frame = frame.assign(**{c: None for c in missing})
    return frame[columns]


def incident_rows(incidents: pd.DataFrame) -> pd.DataFrame:
    """The batch's incidents ready to upsert: one row per id (the last wins: an upsert cannot
    touch a row twice in one statement), statuses checked."""
    inc = conform(incidents, INCIDENT_STREAM_COLUMNS)
    if not len(inc):
        return inc
    bad = sorted(set(inc["status"].astype(str)) - set(STATUSES))
    if bad:
        raise ValueError(f"incident status {bad[0]!r} is not one of {', '.join(STATUSES)}")
    return inc.drop_duplicates("incident_id", keep="last").reset_index(drop=True)


def rank_sql(expr: str) -> str:
    """SQL for the rank of a status expression (same text on SQLite and PostgreSQL)."""
    whens = " ".join(f"WHEN '{s}' THEN {r}" for s, r in STATUS_RANK.items())
    return f"(CASE {expr} {whens} ELSE -1 END)"


def incident_upsert(table: str, values: str) -> str:
    """``INSERT ... ON CONFLICT (incident_id) DO UPDATE`` for the stream's incident rows; the
    same text runs on SQLite (>= 3.24) and PostgreSQL. ``values``: ``VALUES (?, ...)`` or ``VALUES %s``.
    A row from a batch older than the stored one changes nothing."""
    cols = ", ".join(f'"{c}"' for c in INCIDENT_STREAM_COLUMNS)
    replaced = [c for c in INCIDENT_STREAM_COLUMNS if c not in ("incident_id", "status", "detected_at")]
    sets = [f'"{c}" = excluded."{c}"' for c in replaced]
    sets.append('"detected_at" = COALESCE(i."detected_at", excluded."detected_at")')  # first detection
    sets.append(f'"status" = CASE WHEN {rank_sql("excluded.status")} > {rank_sql("i.status")} '
                'THEN excluded.status ELSE i.status END')
    # A version from an older batch never replaces a newer one (S3 readers keep the newest too).
    return (f"INSERT INTO {table} AS i ({cols}) {values} ON CONFLICT (incident_id) DO UPDATE SET {', '.join(sets)} "
            'WHERE excluded."batch_id" >= i."batch_id"')


def score_records(df: pd.DataFrame, model_version: str, batch_id: int, features: list[str]) -> pd.DataFrame:
    """Every scored reading of a micro-batch (``stream.writer`` frames: sensor_id, event_time,
    values (vectors), score, threshold, is_anomaly, optional expected (vectors)) -> SCORE_COLUMNS."""
    if df.empty:
        return empty(SCORE_COLUMNS)
    out = pd.DataFrame({"sensor_id": df["sensor_id"].astype(str),
                        "event_time": pd.to_datetime(df["event_time"], utc=True),
                        "score": df["score"].astype(float), "threshold": df["threshold"].astype(float)})
    out["severity"] = out["score"] / out["threshold"]
    out["is_anomaly"] = df["is_anomaly"].fillna(False).astype(bool).to_numpy()
    out["values"] = [json.dumps(dict(zip(features, map(float, v)))) for v in df["values"]]
    out["expected"] = ([None if v is None else json.dumps(dict(zip(features, map(float, v)))) for v in df["expected"]]
                       if "expected" in df else None)
    # the version that scored each row (a hot swap can change it within a job), else the given one
    out["model_version"] = (df["model_version"].fillna(model_version).astype(str).to_numpy()
                            if "model_version" in df else model_version)
    out["batch_id"] = int(batch_id)
    return out[SCORE_COLUMNS].reset_index(drop=True)


class Retention:
    """When to delete old scores: on the first batch after setup, then every ``every`` batches.

    Args:
        days: keep scores whose event time is within this many days of the newest one written;
            0 keeps everything.
        every: batches between two clean-ups (default RETENTION_EVERY_BATCHES).
    """

    def __init__(self, days: int, every: int = RETENTION_EVERY_BATCHES):
        self.days, self.every = int(days), max(1, int(every))
        self._next: int | None = None

    def due(self, batch_id: int) -> bool:
        if self.days <= 0:
            return False
        if self._next is None or batch_id >= self._next or batch_id < self._next - self.every:
            self._next = batch_id + self.every
            return True
        return False

    def cutoff(self, newest) -> pd.Timestamp | None:
        """Scores before this time go (None: nothing written yet)."""
        if newest is None or pd.isna(newest):
            return None
        return pd.Timestamp(newest).tz_convert("UTC") - pd.Timedelta(days=self.days)


def json_or_none(v) -> str | None:
    """A JSON field for a store: text kept, dict/list dumped, null/NaN -> None."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def text_or_none(v) -> str | None:
    if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
        return None
    return str(v)


def time_text(series: pd.Series) -> list:
    """UTC timestamps -> 'YYYY-MM-DD HH:MM:SS.ffffff' text (None stays None)."""
    t = pd.to_datetime(series, utc=True).to_numpy(dtype="datetime64[us]")
    # numpy formats the whole column in C ('YYYY-MM-DDTHH:MM:SS.ffffff'); per-row strftime
    # was two thirds of an SQLite write.
    text = np.datetime_as_string(t, unit="us").tolist()
    return [None if nat else x.replace("T", " ", 1) for x, nat in zip(text, np.isnat(t).tolist())]


def one_time_text(t) -> str | None:
    """One UTC time -> the same text as :func:`time_text`."""
    if t is None or pd.isna(t):
        return None
    return time_text(pd.Series([t]))[0]
