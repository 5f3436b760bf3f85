"""Incident-level metrics against injected events (the simulators' ground truth).

* An incident is **true** when, on one of its sensors, the time that sensor spent in it
  (first_seen..last_seen; the incident's span when the sensors list has no times) overlaps an
  injected event on that sensor, the event extended by ``tolerance`` after its end (a window
  keeps an event in view for W readings).
* An event is **found** when a true incident overlaps it; **incidents per event** counts how
  many did (one is the target: a burst seen by five sensors is one incident).
* **Kind accuracy**: for each found event, the kind of the incident overlapping it longest
  against the kind its simulated type maps to (:data:`KIND_OF_TYPE`).
* **Faults as leak/burst**: the share of found sensor-fault events reported as leak or burst.

Ground truth rows: ``sensor_id, anomaly_type, start, end`` (inclusive), optionally ``event_id``
to tie the rows of one network event together (without it every row is its own event).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

# Simulated anomaly type -> the incident kind it should be reported as. Synthetic simulator:
# leak, burst, stuck, spike, drift; network simulator adds dropout, noise_burst, pump_schedule,
# valve_closure.
KIND_OF_TYPE = {
    "leak": "leak", "burst": "burst",
    "stuck": "sensor_fault", "spike": "sensor_fault", "drift": "sensor_fault",
    "dropout": "sensor_fault", "noise_burst": "sensor_fault",
    "pump_schedule": "operational", "valve_closure": "operational",
}


def expected_kind(anomaly_type: str) -> str:
    """The incident kind a simulated type should get (unknown types: ``unknown``)."""
    return KIND_OF_TYPE.get(str(anomaly_type), "unknown")


def incident_spans(incidents: pd.DataFrame) -> pd.DataFrame:
    """One row per (incident, sensor): incident_id, sensor_id, start, end (UTC), kind."""
    rows = []
    for r in incidents.to_dict("records"):
        sensors = r["sensors"]
        if isinstance(sensors, str):
            sensors = json.loads(sensors)
        opened = pd.Timestamp(r["opened_at"])
        last = pd.Timestamp(r.get("last_seen") if r.get("last_seen") is not None else r["opened_at"])
        for s in sensors:
            if isinstance(s, dict):
                start = pd.Timestamp(s.get("first_seen") or opened)
                end = pd.Timestamp(s.get("last_seen") or last)
                sid = s["sensor_id"]
            else:
                sid, start, end = str(s), opened, last
            rows.append({"incident_id": r["incident_id"], "sensor_id": sid, "start": _utc(start),
                         "end": _utc(end), "kind": r.get("kind", "unknown")})
    return pd.DataFrame(rows, columns=["incident_id", "sensor_id", "start", "end", "kind"])


def incident_metrics(truth: pd.DataFrame, incidents: pd.DataFrame, tolerance: pd.Timedelta) -> dict:
    """Precision/recall of incidents, incidents per event, kind accuracy; overall and per type.

    Args:
        truth: injected events (see the module docstring).
        incidents: incident records (``incident_id``, ``kind``, ``sensors`` JSON or list,
            ``opened_at``, ``last_seen``).
        tolerance: how long after an event's end an incident still belongs to it.
    """
    truth = truth.reset_index(drop=True).copy()
    if "event_id" not in truth:
        truth["event_id"] = np.arange(len(truth))
    truth["start"] = pd.to_datetime(truth["start"], utc=True)
    truth["end"] = pd.to_datetime(truth["end"], utc=True)
    spans = incident_spans(incidents) if len(incidents) else incident_spans(pd.DataFrame(columns=["incident_id", "sensors", "opened_at"]))
    kind_of = dict(zip(incidents["incident_id"], incidents["kind"])) if len(incidents) else {}
    # (event row, incident) overlaps on the same sensor, with the overlap's length
    by_sensor = {sid: g for sid, g in spans.groupby("sensor_id")}
    event_hits: dict = {}     # event_id -> {incident_id: overlap seconds}
    incident_events: dict = {}  # incident_id -> set of event ids
    for ev in truth.itertuples(index=False):
        g = by_sensor.get(ev.sensor_id)
        hits = event_hits.setdefault(ev.event_id, {})
        if g is None:
            continue
        lo, hi = ev.start, ev.end + tolerance
        m = g[(g["start"] <= hi) & (g["end"] >= lo)]
        for sp in m.itertuples(index=False):
            overlap = (min(sp.end, hi) - max(sp.start, lo)).total_seconds()
            hits[sp.incident_id] = max(hits.get(sp.incident_id, 0.0), overlap)
            incident_events.setdefault(sp.incident_id, set()).add(ev.event_id)
    events = truth.groupby("event_id", sort=False).agg(anomaly_type=("anomaly_type", "first")).reset_index()
    rows = []
    for ev in events.itertuples(index=False):
        hits = event_hits.get(ev.event_id, {})
        want = expected_kind(ev.anomaly_type)
        best = min(hits.items(), key=lambda kv: (-kv[1], kv[0]))[0] if hits else None
        got = kind_of.get(best) if best else None
        rows.append({"event_id": ev.event_id, "anomaly_type": ev.anomaly_type, "expected_kind": want,
                     "found": bool(hits), "incidents": len(hits), "incident_id": best, "kind": got,
                     "kind_correct": bool(hits) and got == want})
    per_event = pd.DataFrame(rows, columns=["event_id", "anomaly_type", "expected_kind", "found", "incidents",
                                            "incident_id", "kind", "kind_correct"])
    n_inc = len(incidents)
    true_inc = sum(1 for iid in (incidents["incident_id"] if n_inc else []) if iid in incident_events)
    several = sum(1 for evs in incident_events.values() if len(evs) > 1)
    found = per_event[per_event["found"]]
    faults = found[found["expected_kind"] == "sensor_fault"]
    out = {
        "events": int(len(per_event)),
        "events_found": int(len(found)),
        "incident_recall": _ratio(len(found), len(per_event)),
        "incidents": int(n_inc),
        "true_incidents": int(true_inc),
        "false_incidents": int(n_inc - true_inc),
        "incident_precision": _ratio(true_inc, n_inc),
        "incidents_per_found_event": float(found["incidents"].mean()) if len(found) else float("nan"),
        "events_with_one_incident": _ratio(int((found["incidents"] == 1).sum()), len(found)),
        "max_incidents_per_event": int(found["incidents"].max()) if len(found) else 0,
        "incidents_covering_several_events": int(several),
        "kind_accuracy": _ratio(int(found["kind_correct"].sum()), len(found)),
        "faults_as_leak_or_burst": _ratio(int(faults["kind"].isin(["leak", "burst"]).sum()), len(faults)),
        "kind_confusion": {k: {str(kk): int(vv) for kk, vv in g["kind"].value_counts().sort_index().items()}
                           for k, g in found.groupby("expected_kind")},
        "per_type": {},
    }
    for a_type, g in per_event.groupby("anomaly_type"):
        f = g[g["found"]]
        out["per_type"][str(a_type)] = {
            "events": int(len(g)), "found": int(len(f)), "recall": _ratio(len(f), len(g)),
            "incidents_per_event": float(f["incidents"].mean()) if len(f) else float("nan"),
            "kind_accuracy": _ratio(int(f["kind_correct"].sum()), len(f)),
            "kinds": {str(k): int(v) for k, v in f["kind"].value_counts().sort_index().items()},
        }
    out["per_event"] = per_event
    return out


def format_table(metrics: dict) -> str:
    """Per-type table plus the summary lines, for terminals."""
    lines = [f"{'type':<14}{'events':>7}{'found':>7}{'recall':>8}{'inc/ev':>8}{'kind ok':>9}  kinds reported"]
    for t, m in sorted(metrics["per_type"].items()):
        kinds = ", ".join(f"{k} {v}" for k, v in m["kinds"].items())
        lines.append(f"{t:<14}{m['events']:>7}{m['found']:>7}{m['recall']:>8.2f}{m['incidents_per_event']:>8.2f}"
                     f"{m['kind_accuracy']:>9.2f}  {kinds}")
    lines.append(f"{'all':<14}{metrics['events']:>7}{metrics['events_found']:>7}{metrics['incident_recall']:>8.2f}"
                 f"{metrics['incidents_per_found_event']:>8.2f}{metrics['kind_accuracy']:>9.2f}")
    lines.append(f"incidents: {metrics['incidents']} ({metrics['false_incidents']} false, "
                 f"{metrics['incidents_covering_several_events']} covering several events), precision "
                 f"{metrics['incident_precision']:.2f}; sensor faults reported as leak/burst: "
                 f"{metrics['faults_as_leak_or_burst']:.2f}")
    return "\n".join(lines)


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def _utc(t) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
