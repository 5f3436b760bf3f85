"""Alarm-load KPIs on a hand-made incident list: a flood, a chattering sensor, a stale incident."""
import json

import pandas as pd
import pytest

from sentinel.config import load_settings
from sentinel.incidents.load import LoadRules, alarm_load, markdown

D0 = pd.Timestamp("2026-01-20T00:00:00Z")
M = pd.Timedelta(minutes=1)


def inc(iid, opened, sensor, closed=None, status="closed", label=None, muted=False, extra=()):
    sensors = [{"sensor_id": s} for s in (sensor, *extra)]
    return {"incident_id": iid, "opened_at": opened, "last_seen": closed or opened, "closed_at": closed,
            "status": status, "label": label, "muted": muted, "first_sensor": sensor, "sensors": json.dumps(sensors)}


def hand_made() -> pd.DataFrame:
    rows = [inc(f"F{i}", D0 + pd.Timedelta(hours=10) + i * M, f"S{i}", D0 + pd.Timedelta(hours=11))
            for i in range(10)]                                             # a flood: 10 in 9 minutes
    rows += [inc(f"C{i}", D0 + pd.Timedelta(hours=14) + 20 * i * M, "CHAT", D0 + pd.Timedelta(hours=14, minutes=20 * i + 5))
             for i in range(3)]                                             # CHAT opens 3 within 40 min
    rows.append(inc("OLD", D0 + 5 * M, "S0", None, status="new", extra=("S1",)))  # open since day 1 00:05
    rows.append(inc("MUTED", D0 + pd.Timedelta(hours=10, minutes=5), "S5", D0 + pd.Timedelta(hours=12), muted=True))
    labels = {"F0": "false_alarm", "F1": "false_alarm", "F2": "confirmed", "C0": "sensor_fault"}
    for r in rows:
        r["label"] = labels.get(r["incident_id"])
    return pd.DataFrame(rows)


def test_a_flood_a_chattering_sensor_a_stale_incident_and_the_budget():
    lo = alarm_load(hand_made(), LoadRules(), D0, D0 + pd.Timedelta(hours=30))
    assert (lo["incidents"], lo["muted_incidents"]) == (14, 1)               # the muted one is not load
    assert lo["hours"] == 30 and lo["incidents_per_day"] == pytest.approx(14 / 1.25)
    assert lo["incidents_per_operator_hour"] == pytest.approx(14 / 30, abs=1e-3)
    assert (lo["most_in_an_hour"], lo["most_in_an_hour_at"]) == (10, "2026-01-20T10:00:00Z")
    assert (lo["busiest_window"], lo["busiest_window_at"]) == (10, "2026-01-20T10:00:00Z")
    assert lo["floods"] == 1 and lo["flood_list"] == [{"start": "2026-01-20T10:00:00Z", "end": "2026-01-20T10:09:00Z",
                                                        "incidents": 10}]
    assert lo["chattering"] == [{"sensor_id": "CHAT", "most_in_an_hour": 3, "at": "2026-01-20T14:00:00Z", "incidents": 3}]
    assert lo["stale"] == [{"incident_id": "OLD", "opened_at": "2026-01-20T00:05:00Z", "open_hours": 29.9,
                            "still_open": True}]
    assert lo["bad_actors"][:3] == [{"sensor_id": "CHAT", "incidents": 3}, {"sensor_id": "S0", "incidents": 2},
                                    {"sensor_id": "S1", "incidents": 2}]
    assert (lo["labelled"], lo["false_alarms"], lo["false_alarm_share"]) == (4, 2, 0.5)
    assert lo["budget_exceeded"] and not lo["within_budget"]
    assert lo["hours_over_budget"] == 1 and lo["hours_over_budget_at"] == ["2026-01-20T10:00:00Z"]
    assert lo["per_day"] == {"2026-01-20": 14}
    json.dumps(lo)                                                            # ready for JSON
    md = markdown(lo)
    assert md.startswith("## Alarm load") and "**over the budget**" in md and "| floods (>= 10 in 600 s) | 1 |" in md


def test_a_quiet_week_is_within_the_budget_and_settings_change_the_rules():
    rows = pd.DataFrame([inc(f"Q{i}", D0 + pd.Timedelta(hours=5 * i), f"S{i % 3}", D0 + pd.Timedelta(hours=5 * i + 1))
                         for i in range(6)])
    lo = alarm_load(rows, load_settings(None))
    assert lo["within_budget"] and lo["floods"] == 0 and lo["most_in_an_hour"] == 1 and lo["stale_incidents"] == 0
    assert lo["false_alarm_share"] is None and "within the budget of 6 per hour" in markdown(lo)
    strict = alarm_load(rows, LoadRules(alarm_budget_per_hour=0.5, chatter_per_hour=1, stale_s=1800))
    assert strict["budget_exceeded"] and strict["hours_over_budget"] == 6
    assert strict["chattering_sensors"] == 3 and strict["stale_incidents"] == 6
    empty = alarm_load(pd.DataFrame(columns=["incident_id", "opened_at"]), None, D0, D0 + pd.Timedelta(days=1))
    assert empty["incidents"] == 0 and empty["within_budget"] and empty["most_in_an_hour"] == 0
