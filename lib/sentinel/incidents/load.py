"""Alarm load: how many incidents an operator had to handle, measured as alarm management does.

EEMUA 191 and ANSI/ISA-18.2 call about one alarm per 10 minutes in steady operation manageable
and 10 or more in 10 minutes a flood. :func:`alarm_load` computes, from a frame of incident
records (``opened_at`` in event time) over a time range:

* incidents per day and per operator-hour (the average), the most opened in any hour (a sliding
  hour, from each incident's opening) and the clock hours over ``alarm_budget_per_hour``;
* the busiest ``flood_window_s`` (10 minutes) and the floods: stretches where at least
  ``flood_count`` incidents opened within ``flood_window_s`` (overlapping windows merged);
* chattering sensors: a sensor opening ``chatter_per_hour`` or more incidents within an hour;
* stale incidents: open for more than ``stale_s`` at the end of the range (or before closing);
* the top-10 "bad actors" (sensors in most incidents) and the share labelled false_alarm;
* the budget verdict: within budget when no hour exceeds it and there is no flood.

Muted incidents (maintenance windows) are counted apart and left out of the load: nobody was
alerted. :func:`markdown` renders the figures for ``sentinel report``. Pure pandas.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sentinel.incidents.ids import to_ns

NS = 1_000_000_000
HOUR_NS = 3600 * NS
BAD_ACTORS = 10
STALE_LISTED = 10


@dataclass(frozen=True)
class LoadRules:
    """The ``[incidents]`` settings the figures use (``IncidentSettings`` has the same fields)."""

    alarm_budget_per_hour: float = 6.0
    flood_count: int = 10
    flood_window_s: int = 600
    chatter_per_hour: int = 3
    stale_s: int = 86400


def _rules(settings) -> LoadRules:
    if settings is None:
        return LoadRules()
    src = getattr(settings, "incidents", settings)  # Settings or IncidentSettings/LoadRules
    return LoadRules(**{k: getattr(src, k) for k in LoadRules.__dataclass_fields__})


def _ns(col: pd.Series) -> np.ndarray:
    t = pd.to_datetime(col, utc=True)
    out = t.astype("int64").to_numpy().copy()
    out[t.isna().to_numpy()] = np.iinfo(np.int64).min
    return out


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return pd.Timestamp(int(ns), tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _sliding_max(times: np.ndarray, width_ns: int) -> tuple[int, int | None]:
    """Most events in any window [t, t + width) starting at an event, and that window's start."""
    if times.size == 0:
        return 0, None
    t = np.sort(times)
    ends = np.searchsorted(t, t + width_ns, side="left")
    counts = ends - np.arange(t.size)
    i = int(counts.argmax())
    return int(counts[i]), int(t[i])


def _floods(times: np.ndarray, count: int, width_ns: int) -> list[dict]:
    """Stretches where at least ``count`` events fall within ``width_ns`` (windows merged)."""
    t = np.sort(times)
    ends = np.searchsorted(t, t + width_ns, side="left")
    spans = [(int(t[i]), int(t[ends[i] - 1])) for i in range(t.size) if ends[i] - i >= count]
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out = []
    for a, b in merged:
        n = int(((t >= a) & (t <= b)).sum())
        out.append({"start": _iso(a), "end": _iso(b), "incidents": n})
    return out


def _sensors_of(row: dict) -> list[str]:
    s = row.get("sensors")
    if isinstance(s, str) and s:
        try:
            s = json.loads(s)
        except ValueError:
            s = None
    if isinstance(s, (list, tuple)) and s:
        return sorted({(x["sensor_id"] if isinstance(x, dict) else str(x)) for x in s})
    first = row.get("first_sensor")
    return [str(first)] if first is not None and first == first else []


def alarm_load(incidents: pd.DataFrame, settings=None, since=None, until=None) -> dict:
    """The alarm-load figures (a dict ready for JSON: numbers, text, lists of small dicts).

    Args:
        incidents: incident records: ``incident_id``, ``opened_at`` and, where present,
            ``closed_at``, ``last_seen``, ``status``, ``muted``, ``label``, ``first_sensor``,
            ``sensors`` (JSON list or list).
        settings: ``Settings``, ``IncidentSettings`` or :class:`LoadRules`; if not given, the
            defaults (budget 6 per hour, flood 10 in 600 s, chatter 3 per hour, stale 24 h).
        since, until: the range (tz-aware); if not given, the incidents' first opening to their
            last activity.
    """
    r = _rules(settings)
    inc = incidents.reset_index(drop=True) if incidents is not None else pd.DataFrame()
    n_all = len(inc)
    opened = _ns(inc["opened_at"]) if n_all else np.empty(0, dtype=np.int64)
    muted = inc["muted"].fillna(False).astype(bool).to_numpy() if n_all and "muted" in inc else np.zeros(n_all, bool)
    lo = to_ns(since) if since is not None else (int(opened.min()) if n_all else None)
    ends = [opened]
    for c in ("last_seen", "closed_at"):
        if n_all and c in inc:
            ends.append(_ns(inc[c]))
    latest = int(np.max(np.concatenate(ends))) if n_all else None
    hi = to_ns(until) if until is not None else latest
    if n_all and (since is not None or until is not None):
        keep = np.ones(n_all, dtype=bool)
        if since is not None:
            keep &= opened >= lo
        if until is not None:
            keep &= opened < hi
        inc, opened, muted = inc[keep].reset_index(drop=True), opened[keep], muted[keep]
    counted = ~muted
    t = opened[counted]
    span_ns = max((hi - lo) if lo is not None and hi is not None else 0, HOUR_NS)
    hours, days = span_ns / HOUR_NS, span_ns / (24 * HOUR_NS)
    max_hour, max_hour_at = _sliding_max(t, HOUR_NS)
    busiest, busiest_at = _sliding_max(t, r.flood_window_s * NS)
    floods = _floods(t, r.flood_count, r.flood_window_s * NS)
    clock_hours = pd.Series(t // HOUR_NS).value_counts() if t.size else pd.Series(dtype="int64")
    over = sorted(int(h) for h, n in clock_hours.items() if n > r.alarm_budget_per_hour)
    by_day = pd.Series(pd.to_datetime(t, utc=True).strftime("%Y-%m-%d")).value_counts().sort_index() if t.size else pd.Series(dtype="int64")

    rows = inc.to_dict("records")
    # chattering: incidents a sensor opened, any hour with chatter_per_hour or more
    first = [str(x.get("first_sensor")) for x in rows]
    chatter = []
    for sid in sorted(set(f for f, c in zip(first, counted) if c)):
        mine = opened[np.array([f == sid for f in first]) & counted]
        most, at = _sliding_max(mine, HOUR_NS)
        if most >= r.chatter_per_hour:
            chatter.append({"sensor_id": sid, "most_in_an_hour": most, "at": _iso(at), "incidents": int(mine.size)})
    # stale: open longer than stale_s (still open at the end of the range, or before closing)
    stale = []
    end_of_range = hi if hi is not None else 0
    for x, o, c in zip(rows, opened, counted):
        closed = x.get("closed_at")
        closed_ns = pd.Timestamp(closed).value if closed is not None and not pd.isna(closed) else None
        is_open = closed_ns is None and x.get("status") != "closed"
        until_ns = end_of_range if is_open else (closed_ns if closed_ns is not None else _ns(pd.Series([x.get("last_seen")]))[0])
        age = (until_ns - o) / NS
        if c and age > r.stale_s:
            stale.append({"incident_id": x["incident_id"], "opened_at": _iso(o), "open_hours": round(age / 3600, 1),
                          "still_open": bool(is_open)})
    stale.sort(key=lambda s: (-s["open_hours"], s["incident_id"]))
    # bad actors: sensors in most (counted) incidents
    actors: dict[str, int] = {}
    for x, c in zip(rows, counted):
        if c:
            for sid in _sensors_of(x):
                actors[sid] = actors.get(sid, 0) + 1
    bad = [{"sensor_id": s, "incidents": n} for s, n in sorted(actors.items(), key=lambda kv: (-kv[1], kv[0]))[:BAD_ACTORS]]
    labels = inc["label"] if n_all and "label" in inc else pd.Series([None] * len(inc), dtype=object)
    labelled = labels.notna() & (labels.astype(str) != "")
    false_alarms = int((labels == "false_alarm").sum())
    n = int(counted.sum())
    exceeded = bool(max_hour > r.alarm_budget_per_hour)
    return {
        "since": _iso(lo), "until": _iso(hi), "hours": round(hours, 2),
        "incidents": n, "muted_incidents": int(muted.sum()),
        "incidents_per_day": round(n / days, 2), "incidents_per_operator_hour": round(n / hours, 3),
        "most_in_an_hour": max_hour, "most_in_an_hour_at": _iso(max_hour_at),
        "busiest_window_s": r.flood_window_s, "busiest_window": busiest, "busiest_window_at": _iso(busiest_at),
        "floods": len(floods), "flood_rule": f">= {r.flood_count} in {r.flood_window_s} s",
        "chattering_sensors": len(chatter), "stale_incidents": len(stale),
        "stale_open": sum(1 for s in stale if s["still_open"]),
        "labelled": int(labelled.sum()), "false_alarms": false_alarms,
        "false_alarm_share": round(false_alarms / int(labelled.sum()), 3) if labelled.any() else None,
        "alarm_budget_per_hour": r.alarm_budget_per_hour,
        "hours_over_budget": len(over), "budget_exceeded": exceeded,
        "within_budget": bool(not exceeded and not floods),
        "per_day": {str(k): int(v) for k, v in by_day.items()},
        "hours_over_budget_at": [_iso(h * HOUR_NS) for h in over],
        "flood_list": floods, "chattering": chatter, "stale": stale[:STALE_LISTED], "bad_actors": bad,
    }


def markdown(load: dict) -> str:
    """A short "Alarm load" section for ``sentinel report`` (Markdown)."""
    lines = ["## Alarm load", ""]
    verdict = ("within the budget" if load["within_budget"] else
               "**over the budget**" if load["budget_exceeded"] else "**floods**")
    lines.append(f"{load['incidents']} incidents from {load['since']} to {load['until']} "
                 f"({load['incidents_per_day']} per day, {load['incidents_per_operator_hour']} per operator-hour; "
                 f"{load['muted_incidents']} muted, not counted): {verdict} of {load['alarm_budget_per_hour']:g} per hour.")
    lines.append("")
    lines += ["| figure | value |", "|---|---:|",
              f"| most incidents in one hour | {load['most_in_an_hour']} (from {load['most_in_an_hour_at'] or '-'}) |",
              f"| clock hours over budget | {load['hours_over_budget']} |",
              f"| busiest {load['busiest_window_s'] // 60} minutes | {load['busiest_window']} (from {load['busiest_window_at'] or '-'}) |",
              f"| floods ({load['flood_rule']}) | {load['floods']} |",
              f"| chattering sensors | {load['chattering_sensors']} |",
              f"| stale incidents (still open) | {load['stale_incidents']} ({load['stale_open']}) |",
              f"| labelled false alarm | {load['false_alarms']} of {load['labelled']} labelled"
              + (f" ({100 * load['false_alarm_share']:.0f} %)" if load["false_alarm_share"] is not None else "") + " |"]
    if load["bad_actors"]:
        lines += ["", "Bad actors (sensors in most incidents): "
                  + ", ".join(f"{b['sensor_id']} ({b['incidents']})" for b in load["bad_actors"]) + "."]
    if load["chattering"]:
        lines += ["", "Chattering: " + ", ".join(f"{c['sensor_id']} ({c['most_in_an_hour']} in an hour from {c['at']})"
                                                for c in load["chattering"]) + "."]
    if load["flood_list"]:
        lines += ["", "Floods: " + ", ".join(f"{f['start']}..{f['end']} ({f['incidents']})" for f in load["flood_list"]) + "."]
    return "\n".join(lines) + "\n"
