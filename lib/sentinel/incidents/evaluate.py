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


PER_EVENT_COLUMNS = ["event_id", "anomaly_type", "sensors", "start", "end", "expected_kind", "found", "incidents",
                     "incident_id", "kind", "kind_correct", "delay_s"]


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
    event_onset: dict = {}    # event_id -> {incident_id: its earliest span start on the event's sensors}
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
            onset = event_onset.setdefault(ev.event_id, {})
            onset[sp.incident_id] = min(onset.get(sp.incident_id, sp.start), sp.start)
            incident_events.setdefault(sp.incident_id, set()).add(ev.event_id)
    events = truth.groupby("event_id", sort=False).agg(
        anomaly_type=("anomaly_type", "first"), sensors=("sensor_id", lambda s: ",".join(dict.fromkeys(s))),
        start=("start", "min"), end=("end", "max")).reset_index()
    rows = []
    for ev in events.itertuples(index=False):
        hits = event_hits.get(ev.event_id, {})
        want = expected_kind(ev.anomaly_type)
        best = min(hits.items(), key=lambda kv: (-kv[1], kv[0]))[0] if hits else None
        got = kind_of.get(best) if best else None
        # delay: from the event's start to the best incident's first alarm on the event's sensors
        delay = (event_onset[ev.event_id][best] - ev.start).total_seconds() if best else float("nan")
        rows.append({"event_id": ev.event_id, "anomaly_type": ev.anomaly_type, "sensors": ev.sensors,
                     "start": ev.start, "end": ev.end, "expected_kind": want,
                     "found": bool(hits), "incidents": len(hits), "incident_id": best, "kind": got,
                     "kind_correct": bool(hits) and got == want, "delay_s": delay})
    per_event = pd.DataFrame(rows, columns=PER_EVENT_COLUMNS)
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
    out["false_incident_ids"] = [str(i) for i in (incidents["incident_id"] if n_inc else []) if i not in incident_events]
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


def format_events(metrics: dict, incidents: pd.DataFrame, explain_chars: int = 170) -> str:
    """Each injected event beside the incident that matched it, then the incidents that matched
    none, for terminals: one line per event (type, sensors, start, end | incident id, kind, whether
    the kind is right, zone, the incident's sensors, opened, delay, peak severity), the incident's
    explanation under it, less what the cells say (cut to ``explain_chars``, 0 = left out).

    Args:
        metrics: :func:`incident_metrics`' result (its ``per_event`` and ``false_incident_ids``).
        incidents: the incident records it was computed from.
    """
    by_id = {r["incident_id"]: r for r in incidents.to_dict("records")} if len(incidents) else {}
    head = (f"{'#':>3} {'injected':<8} {'sensors':<9} {'start':<11} {'end':<11} | {'incident':<20} {'kind':<12} "
            f"{'':<5} {'zone':<10} {'sensors':<17} {'opened':<11} {'delay':>6} {'sev':>5}")
    lines = [head, "-" * len(head)]
    for i, ev in enumerate(metrics["per_event"].to_dict("records"), 1):
        left = (f"{i:>3} {str(ev['anomaly_type']):<8} {_short(ev['sensors'], 9):<9} {_hm(ev['start']):<11} "
                f"{_hm(ev['end']):<11} | ")
        inc = by_id.get(ev["incident_id"])
        if inc is None:
            lines.append(left + "(no incident: missed)")
            continue
        ok = "ok" if ev["kind_correct"] else f"!={ev['expected_kind'][:3]}"
        extra = f" +{ev['incidents'] - 1} more" if ev["incidents"] > 1 else ""
        lines.append(left + _incident_cells(inc, ok, _duration(ev["delay_s"])) + extra)
        if explain_chars:
            lines.append(f"{'':>4}{_short(_why(inc.get('explanation')), explain_chars)}")
    false_ids = metrics.get("false_incident_ids", [])
    lines.append(f"incidents matching no injected event: {len(false_ids) or 'none'}")
    for iid in false_ids:
        inc = by_id[iid]
        lines.append(f"{'':>3} {'-':<8} {'':<9} {'':<11} {'':<11} | " + _incident_cells(inc, "false", ""))
        if explain_chars:
            lines.append(f"{'':>4}{_short(_why(inc.get('explanation')), explain_chars)}")
    return "\n".join(lines)


def _incident_cells(inc: dict, ok: str, delay: str) -> str:
    sensors = inc["sensors"]
    if isinstance(sensors, str):
        sensors = json.loads(sensors)
    ids = [s["sensor_id"] if isinstance(s, dict) else str(s) for s in sensors]
    names = ",".join(ids[:2]) + (f",+{len(ids) - 2}" if len(ids) > 2 else "")
    zone = "" if inc.get("zone") is None or inc.get("zone") != inc.get("zone") else str(inc["zone"])
    sev = inc.get("peak_severity")
    return (f"{str(inc['incident_id']):<20} {str(inc.get('kind')):<12} {ok:<5} {_short(zone, 10):<10} "
            f"{_short(names, 17):<17} {_hm(inc['opened_at']):<11} {delay:>6} "
            f"{'' if sev is None else f'{float(sev):.1f}':>5}")


def _why(explanation) -> str:
    """An incident's explanation without what the table's cells already say (its kind and zone,
    first sensor and time, readings and peak severity: ``explain.incident_sentence``'s parts)."""
    parts = str(explanation or "").split("; ")
    kept = [p for p in parts[1:] if not p.startswith("first ") and "flagged readings" not in p]
    return "; ".join(kept) if kept else "; ".join(parts)


def _hm(t) -> str:
    """A UTC time as MM-DD HH:MM (the demo's feed spans days of one month)."""
    return "" if t is None or t != t else _utc(t).strftime("%m-%d %H:%M")


def _duration(seconds: float) -> str:
    if seconds != seconds:
        return ""
    sign, m = ("-" if seconds < 0 else "+"), round(abs(seconds) / 60)
    return f"{sign}{m}m" if m < 100 else f"{sign}{m / 60:.1f}h"


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(0, n - 1)] + "\u2026"


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def _utc(t) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
