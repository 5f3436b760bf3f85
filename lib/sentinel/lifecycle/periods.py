"""Which readings of a retraining window are normal: incident labels, mutes, history labels.

Rules (one period per incident and sensor, times inclusive, mutes end-exclusive):

- readings of an incident's sensors from its ``opened_at`` to its ``last_seen`` are left out
  when it is labelled ``confirmed``, ``sensor_fault`` or ``maintenance`` or not labelled at
  all; ``lifecycle.incident_margin_s`` widens these periods on both sides;
- readings inside an incident labelled ``false_alarm`` are kept as normal, flagged or not;
- readings of a muted sensor or zone between a mute's ``starts_at`` and ``ends_at`` are left out;
- a flagged reading (the score record's ``is_anomaly``, ``flagged`` here) in no incident is left
  out (stores without incidents); labelled readings of a history file (``data.label_field``) are left out.

Left-out readings are *marked*, not deleted: ``fit_bundle`` drops every window holding a marked
reading, so no window joins readings across a left-out stretch. ``confirmed``,
``sensor_fault`` and history-labelled periods are also the truth recall is measured on.
Pure pandas/numpy; hand-checked in tests/unit/test_lifecycle_periods.py.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

log = logging.getLogger("sentinel.retrain")

PERIOD_COLUMNS = ["sensor_id", "start", "end", "kind", "incident_id"]
LABELS = ("confirmed", "false_alarm", "maintenance", "sensor_fault")
# kinds whose readings are left out of training and are not normal in the comparison
EXCLUDED_KINDS = ("confirmed", "sensor_fault", "maintenance", "unlabelled", "muted", "labelled")
TRUTH_KINDS = ("confirmed", "sensor_fault", "labelled")  # recall is measured on these


def _utc(col) -> pd.Series:
    return pd.to_datetime(pd.Series(col), utc=True, errors="coerce", format="mixed")


def _incident_sensors(row) -> list[str]:
    """An incident's sensors: the ``sensors`` JSON list (dicts or ids), else ``first_sensor``."""
    raw = row.get("sensors")
    if isinstance(raw, str) and raw.strip():
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = None
    out = []
    if isinstance(raw, (list, tuple)):
        out = [str(s["sensor_id"]) if isinstance(s, dict) else str(s) for s in raw
               if (isinstance(s, dict) and s.get("sensor_id") is not None) or isinstance(s, str)]
    if not out and isinstance(row.get("first_sensor"), str):
        out = [row["first_sensor"]]
    return out


def incident_periods(incidents: pd.DataFrame | None, margin_s: int = 0) -> pd.DataFrame:
    """Incidents (store records) -> one period per incident and sensor (``PERIOD_COLUMNS``).

    ``kind`` is the label, or ``unlabelled``; an unknown label counts as ``unlabelled`` (left
    out). The margin widens left-out periods only (a false alarm's readings stay normal anyway).
    """
    if incidents is None or incidents.empty:
        return pd.DataFrame(columns=PERIOD_COLUMNS)
    rows = []
    for rec in incidents.to_dict("records"):
        label = rec.get("label")
        kind = label if isinstance(label, str) and label in LABELS else "unlabelled"
        start = _utc([rec.get("opened_at")]).iloc[0]
        end = _utc([rec.get("last_seen")]).iloc[0]
        if pd.isna(end):
            end = _utc([rec.get("closed_at")]).iloc[0]
        if pd.isna(start):
            continue
        if pd.isna(end):
            end = start
        if kind != "false_alarm" and margin_s:
            start, end = start - pd.Timedelta(seconds=margin_s), end + pd.Timedelta(seconds=margin_s)
        for sid in _incident_sensors(rec):
            rows.append({"sensor_id": sid, "start": start, "end": end, "kind": kind,
                         "incident_id": rec.get("incident_id")})
    return pd.DataFrame(rows, columns=PERIOD_COLUMNS)


def mute_periods(mutes: pd.DataFrame | None, zones: dict[str, str | None], sensors) -> pd.DataFrame:
    """Mutes (``sensor_id`` or ``zone``, ``starts_at``, ``ends_at``) -> periods of kind ``muted``.

    A zone mute covers every sensor of ``sensors`` whose zone (``zones``: sensor -> zone, the
    sensor registry) is that zone. The end is exclusive: the period ends 1 ns before it.
    """
    if mutes is None or mutes.empty:
        return pd.DataFrame(columns=PERIOD_COLUMNS)
    rows, sensors = [], [str(s) for s in sensors]
    for rec in mutes.to_dict("records"):
        start = _utc([rec.get("starts_at")]).iloc[0]
        end = _utc([rec.get("ends_at")]).iloc[0]
        if pd.isna(start) or pd.isna(end) or end <= start:
            continue
        sid, zone = rec.get("sensor_id"), rec.get("zone")
        if isinstance(sid, str) and sid:
            covered = [sid]
        elif isinstance(zone, str) and zone:
            covered = [s for s in sensors if zones.get(s) == zone]
            if not covered:
                log.warning("mute %s of zone %s covers no sensor of the window (is the sensor registry loaded?)",
                            rec.get("mute_id"), zone)
        else:
            covered = []
        for s in covered:
            rows.append({"sensor_id": s, "start": start, "end": end - pd.Timedelta(1, "ns"), "kind": "muted",
                         "incident_id": None})
    return pd.DataFrame(rows, columns=PERIOD_COLUMNS)


def label_periods(frame: pd.DataFrame, label_col: str | None) -> pd.DataFrame:
    """Runs of labelled readings (a history file's 0/1 label column) -> periods of kind ``labelled``."""
    if not label_col or label_col not in frame or frame.empty:
        return pd.DataFrame(columns=PERIOD_COLUMNS)
    rows = []
    for sid, g in frame.sort_values("event_time").groupby("sensor_id", sort=True):
        lab = pd.to_numeric(g[label_col], errors="coerce").fillna(0).astype(bool).to_numpy()
        if not lab.any():
            continue
        ts = g["event_time"].to_numpy()
        edges = np.diff(np.concatenate([[0], lab.astype(np.int8), [0]]))
        for a, b in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0] - 1):
            rows.append({"sensor_id": str(sid), "start": pd.Timestamp(ts[a]), "end": pd.Timestamp(ts[b]),
                         "kind": "labelled", "incident_id": None})
    out = pd.DataFrame(rows, columns=PERIOD_COLUMNS)
    for c in ("start", "end"):
        out[c] = pd.to_datetime(out[c], utc=True)
    return out


def in_periods(frame: pd.DataFrame, periods: pd.DataFrame) -> np.ndarray:
    """(n,) bool: the reading (``sensor_id``, ``event_time``) lies in one of ``periods``."""
    out = np.zeros(len(frame), dtype=bool)
    if frame.empty or periods.empty:
        return out
    t = pd.to_datetime(frame["event_time"], utc=True).astype("int64").to_numpy()
    sid = frame["sensor_id"].astype(str).to_numpy()
    starts = pd.to_datetime(periods["start"], utc=True).astype("int64").to_numpy()
    ends = pd.to_datetime(periods["end"], utc=True).astype("int64").to_numpy()
    by_sensor = {}
    for i, s in enumerate(periods["sensor_id"].astype(str).to_numpy()):
        by_sensor.setdefault(s, []).append(i)
    order = np.lexsort((t, sid))  # rows by sensor, then time: one searchsorted per period
    sid_sorted, t_sorted = sid[order], t[order]
    bounds = np.concatenate([[0], np.nonzero(sid_sorted[1:] != sid_sorted[:-1])[0] + 1, [len(order)]])
    for a, b in zip(bounds[:-1], bounds[1:]):
        for i in by_sensor.get(sid_sorted[a], ()):
            lo = a + np.searchsorted(t_sorted[a:b], starts[i], side="left")
            hi = a + np.searchsorted(t_sorted[a:b], ends[i], side="right")
            out[order[lo:hi]] = True
    return out


def mark(frame: pd.DataFrame, periods: pd.DataFrame, flag_col: str | None = "flagged") -> tuple[pd.DataFrame, dict]:
    """Mark the readings to leave out: returns ``frame`` with columns ``excluded`` (left out of
    training), ``normal`` (counts as normal in the comparison) and ``reason``, and the counts.

    ``normal`` differs from ``not excluded`` only for flagged readings in no incident: they are
    left out of training but still count as (the champion's) false alarms when compared.
    """
    reason = np.full(len(frame), "", dtype=object)
    masks = {}
    for kind in ("false_alarm", *EXCLUDED_KINDS):
        masks[kind] = in_periods(frame, periods[periods["kind"] == kind]) if len(periods) else np.zeros(len(frame), bool)
    out_period = np.zeros(len(frame), dtype=bool)
    for kind in EXCLUDED_KINDS[::-1]:  # the first kind listed names the reason
        reason[masks[kind]] = kind
        out_period |= masks[kind]
    flagged = np.zeros(len(frame), dtype=bool)
    if flag_col and flag_col in frame:
        flagged = pd.to_numeric(frame[flag_col], errors="coerce").fillna(0).astype(bool).to_numpy()
    stray = flagged & ~out_period & ~masks["false_alarm"]
    reason[stray] = "flagged"
    kept_fa = masks["false_alarm"] & ~out_period
    reason[kept_fa] = "false_alarm_kept"
    marked = frame.assign(excluded=out_period | stray, normal=~out_period, reason=reason)
    counts = {"rows": int(len(frame)), "excluded": int((out_period | stray).sum()),
              "false_alarm_kept": int(kept_fa.sum())}
    for kind in (*EXCLUDED_KINDS, "flagged"):
        counts[kind] = int((reason == kind).sum())
    return marked, counts
