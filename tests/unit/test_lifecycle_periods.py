"""Retraining's exclusion rules on a hand-checked case: which readings are left out, and why."""
import json

import numpy as np
import pandas as pd

from sentinel.lifecycle.periods import incident_periods, label_periods, mark, mute_periods

T0 = pd.Timestamp("2026-03-02T00:00:00Z")


def t(minutes):
    return T0 + pd.Timedelta(minutes=minutes)


def readings():
    """Sensors A (zone Z1) and B (zone Z2), a reading every 5 minutes from 00:00 to 00:55."""
    rows = [{"sensor_id": s, "event_time": t(m), "pressure": 40.0, "flagged": 0}
            for s in ("A", "B") for m in range(0, 60, 5)]
    f = pd.DataFrame(rows)
    for s, m in (("A", 30), ("A", 35), ("B", 55)):
        f.loc[(f["sensor_id"] == s) & (f["event_time"] == t(m)), "flagged"] = 1
    return f


def incidents():
    return pd.DataFrame([
        {"incident_id": "i1", "label": "confirmed", "sensors": json.dumps([{"sensor_id": "A", "share": 1.0}]),
         "first_sensor": "A", "opened_at": t(10), "last_seen": t(20), "closed_at": t(50)},
        {"incident_id": "i2", "label": "false_alarm", "sensors": json.dumps([{"sensor_id": "A"}]),
         "first_sensor": "A", "opened_at": t(30), "last_seen": t(35), "closed_at": None},
        {"incident_id": "i3", "label": None, "sensors": json.dumps(["B"]), "first_sensor": "B",
         "opened_at": t(5), "last_seen": t(5), "closed_at": None},
        {"incident_id": "i4", "label": "sensor_fault", "sensors": json.dumps([{"sensor_id": "A"}, {"sensor_id": "B"}]),
         "first_sensor": "A", "opened_at": t(50).isoformat(), "last_seen": t(50).isoformat(), "closed_at": None},
    ])


def mutes():
    return pd.DataFrame([
        {"mute_id": "m1", "sensor_id": None, "zone": "Z2", "starts_at": t(40), "ends_at": t(50)},  # end exclusive
        {"mute_id": "m2", "sensor_id": "A", "zone": None, "starts_at": t(120), "ends_at": t(180)},  # after the data
    ])


def periods(margin_s=0):
    f = readings()
    return pd.concat([incident_periods(incidents(), margin_s),
                      mute_periods(mutes(), {"A": "Z1", "B": "Z2"}, f["sensor_id"].unique())], ignore_index=True)


def left_out(marked, col="excluded"):
    sel = marked[marked[col]]
    return {(s, int((e - T0) / pd.Timedelta(minutes=1))) for s, e in zip(sel["sensor_id"], sel["event_time"])}


def test_exactly_the_labelled_periods_are_left_out():
    marked, counts = mark(readings(), periods())
    assert left_out(marked) == {("A", 10), ("A", 15), ("A", 20), ("A", 50),                # confirmed, sensor fault
                                ("B", 5), ("B", 40), ("B", 45), ("B", 50), ("B", 55)}      # unlabelled, mute, fault, flagged
    assert counts == {"rows": 24, "excluded": 9, "false_alarm_kept": 2, "confirmed": 3, "sensor_fault": 2,
                      "maintenance": 0, "unlabelled": 1, "muted": 2, "labelled": 0, "flagged": 1}
    by = dict(zip(zip(marked["sensor_id"], marked["event_time"]), marked["reason"]))
    assert by[("A", t(30))] == by[("A", t(35))] == "false_alarm_kept"   # flagged, but a labelled false alarm
    assert by[("B", t(50))] == "sensor_fault"                            # the mute ended at 00:50 (exclusive)
    assert by[("B", t(55))] == "flagged"                                 # flagged in no incident
    assert by[("A", t(25))] == ""
    # a stray flag is left out of training but still counts as a normal reading when comparing models
    assert left_out(marked, "excluded") - left_out(marked.assign(out=~marked["normal"]), "out") == {("B", 55)}


def test_the_margin_widens_left_out_incidents_only():
    marked, counts = mark(readings(), periods(margin_s=300))
    assert left_out(marked) == {("A", m) for m in (5, 10, 15, 20, 25, 45, 50, 55)} | {
        ("B", m) for m in (0, 5, 10, 40, 45, 50, 55)}
    assert counts["false_alarm_kept"] == 2  # 00:30 and 00:35 stay normal: a false alarm has no margin


def test_history_labels_are_periods_too():
    f = readings().assign(flagged=0)
    f["label"] = 0
    f.loc[(f["sensor_id"] == "B") & f["event_time"].isin([t(15), t(20), t(35)]), "label"] = 1
    p = label_periods(f, "label")
    assert [(r.sensor_id, r.start, r.end) for r in p.itertuples()] == [("B", t(15), t(20)), ("B", t(35), t(35))]
    marked, counts = mark(f, p)
    assert left_out(marked) == {("B", 15), ("B", 20), ("B", 35)} and counts["labelled"] == 3


def test_nothing_to_leave_out():
    f = readings().assign(flagged=0)
    marked, counts = mark(f, incident_periods(None))
    assert not marked["excluded"].any() and marked["normal"].all() and counts["excluded"] == 0
    assert np.array_equal(marked["pressure"].to_numpy(), f["pressure"].to_numpy())  # nothing else changed
