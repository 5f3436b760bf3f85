"""Hand-made batch records for the store tests, small enough to check every count by hand.

Timeline (UTC, 2026-03-20), registry PT-1 and PT-2 in zone north, PT-3 in south, PT-4 unregistered:

    scores   PT-1 10:00 30, 10:20 31, 10:40 32, 11:00 34, 11:30 36 (flagged)
             PT-2 10:00 40, 10:30 44 (flagged)
             PT-4 11:50 20
    batch 1  readings up to 10:40 (PT-2 10:30 flagged); incidents INC-B (PT-2, burst, open) and INC-C
             (PT-3, sensor fault, muted)
    batch 2  the rest; INC-A opened (PT-1 + PT-2, leak), INC-B closed at 11:00

Hand-checked: PT-1 hour 10 has 3 readings, mean 31, 30-day std 1.0; hour 11 has 2 readings,
mean 35 and 30-day std over all five sqrt(5.8); PT-2 hour 10: mean 42, std sqrt(8).
"""
from __future__ import annotations

import json

import pandas as pd

from sentinel.store.sinks.base import BatchRecords, batch_record, score_records
from sentinel.stream.writer import anomaly_records, reject_records

T = lambda s: pd.Timestamp(f"2026-03-20T{s}:00Z")  # noqa: E731
REGISTRY = pd.DataFrame({"sensor_id": ["PT-1", "PT-2", "PT-3"], "zone": ["north", "north", "south"],
                         "latitude": [40.1, 40.2, 40.3], "longitude": [-3.1, -3.2, -3.3], "type": ["pressure"] * 3})
READINGS = [("PT-1", "10:00", 30.0, 0.5), ("PT-1", "10:20", 31.0, 0.6), ("PT-1", "10:40", 32.0, 0.7),
            ("PT-2", "10:00", 40.0, 0.4), ("PT-1", "11:00", 34.0, 0.9), ("PT-1", "11:30", 36.0, 2.5),
            ("PT-2", "10:30", 44.0, 1.8), ("PT-4", "11:50", 20.0, 0.2)]
THRESHOLD = 1.0
BATCH_OF = {"10:00": 1, "10:20": 1, "10:30": 1, "10:40": 1}  # every other reading is batch 2


def _frame(rows) -> pd.DataFrame:
    return pd.DataFrame({"sensor_id": [r[0] for r in rows], "event_time": [T(r[1]) for r in rows],
                         "values": [[r[2]] for r in rows], "score": [r[3] for r in rows],
                         "threshold": THRESHOLD, "is_anomaly": [r[3] > THRESHOLD for r in rows],
                         "expected": [[r[2] - 1.0] for r in rows]})


def sensors_json(*entries) -> str:
    return json.dumps([{"sensor_id": sid, "share": share, "peak_severity": peak, "readings": n,
                        "first_seen": first, "last_seen": last} for sid, share, peak, n, first, last in entries])


def incident(iid, kind, status, zone, sensors, opened, last, closed=None, peak=1.0, readings=1, muted=False,
             batch_id=1, explanation=None, updated="2026-03-20T12:00:00Z") -> dict:
    return {"incident_id": iid, "kind": kind, "status": status, "zone": zone, "sensors": sensors,
            "first_sensor": json.loads(sensors)[0]["sensor_id"], "opened_at": T(opened), "last_seen": T(last),
            "closed_at": T(closed) if closed else None, "peak_severity": peak, "readings": readings,
            "explanation": explanation or f"{kind} on {json.loads(sensors)[0]['sensor_id']}", "muted": muted,
            "model_version": "v1", "detected_at": pd.Timestamp("2026-03-20T12:00:00Z") + pd.Timedelta(seconds=batch_id),
            "updated_at": pd.Timestamp(updated) + pd.Timedelta(seconds=batch_id), "batch_id": batch_id}


INC_B_OPEN = dict(iid="INC-B", kind="burst", status="new", zone="north",
                  sensors=sensors_json(("PT-2", 1.0, 1.8, 1, "2026-03-20T10:30:00Z", "2026-03-20T10:30:00Z")),
                  opened="10:30", last="10:30", peak=1.8)
INC_C = dict(iid="INC-C", kind="sensor_fault", status="new", zone="south",
             sensors=sensors_json(("PT-3", 1.0, 1.2, 3, "2026-03-20T09:00:00Z", "2026-03-20T09:40:00Z")),
             opened="09:00", last="09:40", peak=1.2, readings=3, muted=True)
INC_A = dict(iid="INC-A", kind="leak", status="new", zone="north",
             sensors=sensors_json(("PT-1", 0.7, 2.5, 1, "2026-03-20T11:30:00Z", "2026-03-20T11:30:00Z"),
                                  ("PT-2", 0.3, 1.8, 1, "2026-03-20T10:30:00Z", "2026-03-20T10:30:00Z")),
             opened="11:30", last="11:30", peak=2.5)


def batch(batch_id: int) -> BatchRecords:
    """Batch 1 or 2 of the timeline above (built fresh each call: a replay has new wall clocks)."""
    rows = [r for r in READINGS if BATCH_OF.get(r[1], 2) == batch_id]
    frame = _frame(rows)
    flagged = frame[frame["is_anomaly"]]
    anomalies = anomaly_records(flagged, "v1", batch_id, ["pressure"])
    anomalies["expected"] = [json.dumps({"pressure": v[0]}) for v in flagged["expected"]]
    anomalies["explanation"] = [f"pressure {v[0]:.0f} vs expected {e[0]:.0f}" for v, e in
                                zip(flagged["values"], flagged["expected"])]
    scores = score_records(frame, "v1", batch_id, ["pressure"])
    rej = reject_records(pd.DataFrame({"raw": [f"junk {batch_id}"], "reject_reason": ["not_json: x"],
                                       "sensor_id": [None], "event_time": [pd.NaT]}), batch_id)
    if batch_id == 1:
        incidents = [incident(**INC_B_OPEN, batch_id=1), incident(**INC_C, batch_id=1)]
        events = [("INC-B", "open"), ("INC-C", "open")]
    else:
        incidents = [incident(**INC_A, batch_id=2),
                     incident(**{**INC_B_OPEN, "status": "closed"}, closed="11:00", batch_id=2)]
        events = [("INC-A", "open"), ("INC-B", "close")]
    inc = pd.DataFrame(incidents)
    return BatchRecords(batch_id, anomalies=anomalies, rejects=rej, scores=scores, incidents=inc,
                        incident_events=pd.DataFrame(events, columns=["incident_id", "event"]),
                        batch=batch_record(batch_id, events=len(rows), scored=len(rows), rejects=1,
                                           anomalies=len(anomalies), incidents_open=2 if batch_id == 1 else 2,
                                           incidents_opened=2 if batch_id == 1 else 1,
                                           incidents_closed=0 if batch_id == 1 else 1,
                                           max_event_time=frame["event_time"].max(), model_version="v1",
                                           duration_s=0.1 * batch_id))
