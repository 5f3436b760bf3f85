"""A small deterministic feed for the web app's tests and benchmark, written as the stream writes
it: :class:`BatchRecords` through the real sinks (SQLite, PostgreSQL, S3).

Every reading is known in advance, so counts can be checked by hand:

- ``n`` sensors ``PT-0001..``, on a grid of 0.01° around Madrid, zones ``west``, ``centre``,
  ``east`` in bands from west to east; one reading per sensor every ``interval_s`` (5 minutes) from START.
- pressure: 40, 41 or 42 (``40 + hour % 3``, the same for the whole UTC hour), so an hour's
  mean is one of those; expected = the same value; score 0.25, threshold 1.0 (severity 0.25).
- an :class:`Episode` makes one sensor anomalous for some steps: pressure ``drop`` lower, score =
  severity x threshold, ``is_anomaly`` true, one anomaly record per step, and one incident
  (opened at its first step, ``last_seen`` its newest flagged step so far, closed once the
  feed is ``quiet_steps`` past it).
- ``silent_after``: sensors that stop reporting after that step.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd
from sentinel.incidents.ids import incident_id
from sentinel.store.sinks.base import (
    ANOMALY_COLUMNS,
    INCIDENT_EVENT_COLUMNS,
    INCIDENT_STREAM_COLUMNS,
    SCORE_COLUMNS,
    BatchRecords,
    batch_record,
)

START = pd.Timestamp("2026-01-19T00:00:00Z")
MODEL = "20260119T000000Z-test"
THRESHOLD = 1.0
NORMAL_SCORE = 0.25
ZONES = ("west", "centre", "east")


def sensor_ids(n: int) -> list[str]:
    return [f"PT-{i + 1:04d}" for i in range(n)]


def registry(n: int) -> pd.DataFrame:
    ids = sensor_ids(n)
    side = max(1, round(n ** 0.5))
    return pd.DataFrame({"sensor_id": ids,
                         "latitude": [round(40.40 + 0.01 * (i // side), 6) for i in range(n)],
                         "longitude": [round(-3.72 + 0.01 * (i % side), 6) for i in range(n)],
                         "zone": [ZONES[(i % side) * len(ZONES) // side] for i in range(n)],  # bands west to east
                         "type": ["pressure"] * n})


def base_pressure(t: pd.Timestamp) -> float:
    return 40.0 + t.hour % 3


@dataclass(frozen=True)
class Episode:
    sensor_id: str
    first_step: int
    steps: int
    severity: float = 3.0
    drop: float = 8.0
    kind: str = "leak"
    incident: bool = True    # False: flagged readings that open no incident (persistence held them back)

    @property
    def last_step(self) -> int:
        return self.first_step + self.steps - 1

    def flags(self, step: int) -> bool:
        return self.first_step <= step <= self.last_step


@dataclass
class Feed:
    """Micro-batches of the feed; :meth:`batch` gives the records of steps ``[a, b)``."""

    n_sensors: int
    episodes: list[Episode] = field(default_factory=list)
    silent_after: dict[str, int] = field(default_factory=dict)
    interval_s: int = 300
    quiet_steps: int = 6
    start: pd.Timestamp = START
    model_version: str = MODEL

    def __post_init__(self):
        self.sensors = sensor_ids(self.n_sensors)
        self.zones = dict(zip(self.sensors, registry(self.n_sensors)["zone"]))

    def time(self, step: int) -> pd.Timestamp:
        return self.start + pd.Timedelta(seconds=self.interval_s * step)

    def reports(self, sensor_id: str, step: int) -> bool:
        last = self.silent_after.get(sensor_id)
        return last is None or step <= last

    def incident_id(self, e: Episode) -> str:
        return incident_id(e.sensor_id, self.time(e.first_step))

    def batch(self, batch_id: int, a: int, b: int) -> BatchRecords:
        """Steps ``a .. b-1`` as one micro-batch (BatchRecords, as the stream's writer builds it)."""
        scores, flagged = [], []
        for step in range(a, b):
            t = self.time(step)
            base = base_pressure(t)
            for sid in self.sensors:
                if not self.reports(sid, step):
                    continue
                ep = next((e for e in self.episodes if e.sensor_id == sid and e.flags(step)), None)
                value = base - ep.drop if ep else base
                score = ep.severity * THRESHOLD if ep else NORMAL_SCORE
                row = {"sensor_id": sid, "event_time": t, "score": score, "threshold": THRESHOLD,
                       "severity": score / THRESHOLD, "is_anomaly": ep is not None,
                       "values": json.dumps({"pressure": value}), "expected": json.dumps({"pressure": base}),
                       "model_version": self.model_version, "batch_id": batch_id}
                scores.append(row)
                if ep:
                    flagged.append({**row, "explanation": f"pressure {value:.1f} where {base:.1f} was expected "
                                                          f"({ep.drop:.1f} low)",
                                    "detected_at": pd.Timestamp.now(tz="UTC")})
        incidents, events = self.incidents(batch_id, a, b)
        score_frame = pd.DataFrame(scores, columns=SCORE_COLUMNS)
        times = score_frame["event_time"]
        return BatchRecords(
            batch_id, anomalies=pd.DataFrame(flagged, columns=ANOMALY_COLUMNS), scores=score_frame,
            incidents=incidents, incident_events=events,
            batch=batch_record(batch_id, events=len(scores), scored=len(scores), anomalies=len(flagged),
                               incidents_open=self.open_count(b - 1),
                               incidents_opened=int((events["event"] == "open").sum()),
                               incidents_closed=int((events["event"] == "close").sum()),
                               max_event_time=times.max() if len(times) else None,
                               model_version=self.model_version, duration_s=0.01))

    def open_count(self, step: int) -> int:
        return sum(1 for e in self.episodes if e.incident and e.first_step <= step < e.last_step + self.quiet_steps)

    def incidents(self, batch_id: int, a: int, b: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The incidents steps a..b-1 opened, updated or closed, and their events."""
        rows, events = [], []
        for e in (e for e in self.episodes if e.incident):
            close_step = e.last_step + self.quiet_steps
            if b <= e.first_step or a > close_step:
                continue
            seen = min(b - 1, e.last_step)
            closed = b - 1 >= close_step
            n = seen - e.first_step + 1
            iid = self.incident_id(e)
            now = pd.Timestamp.now(tz="UTC")
            sensors = [{"sensor_id": e.sensor_id, "share": 1.0, "peak_severity": e.severity, "readings": n,
                        "first_seen": self.time(e.first_step).isoformat(), "last_seen": self.time(seen).isoformat()}]
            rows.append({"incident_id": iid, "kind": e.kind, "status": "closed" if closed else "new",
                         "zone": self.zones[e.sensor_id], "sensors": json.dumps(sensors), "first_sensor": e.sensor_id,
                         "opened_at": self.time(e.first_step), "last_seen": self.time(seen),
                         "closed_at": self.time(close_step) if closed else None, "peak_severity": e.severity,
                         "readings": n, "explanation": f"{e.kind} at {e.sensor_id}: pressure {e.drop:.1f} below "
                                                       f"expected for {n * self.interval_s // 60} min",
                         "muted": False, "model_version": self.model_version, "detected_at": now, "updated_at": now,
                         "batch_id": batch_id})
            events.append({"incident_id": iid, "event": "open" if a <= e.first_step < b else
                           "close" if closed else "update"})
        return (pd.DataFrame(rows, columns=INCIDENT_STREAM_COLUMNS),
                pd.DataFrame(events, columns=INCIDENT_EVENT_COLUMNS))

    def write(self, sinks, steps: int, per_batch: int, first_batch: int = 0) -> int:
        """Steps 0..steps-1 to every sink in batches of ``per_batch`` steps; returns batches written."""
        n = 0
        for i, a in enumerate(range(0, steps, per_batch)):
            records = self.batch(first_batch + i, a, min(steps, a + per_batch))
            for sink in sinks:
                sink.write(records)
            n += 1
        return n
