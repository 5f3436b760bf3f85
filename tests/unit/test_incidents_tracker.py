"""IncidentTracker with lists in and lists out: grouping, persistence, closing, mutes, replays."""
import json

import pandas as pd
import pytest

from sentinel.incidents import incident_id
from sentinel.incidents.lifecycle import Mute
from sentinel.incidents.tracker import EVENT_COLUMNS, INCIDENT_COLUMNS, IncidentTracker

T0 = pd.Timestamp("2026-01-20T00:00:00Z")
MIN = pd.Timedelta(minutes=1)
# Five sensors in zone Norte, one in Sur, one without a zone 300 m from A, one far away.
REG = pd.DataFrame({"sensor_id": ["A", "B", "C", "D", "E", "F", "X", "Y"],
                    "zone": ["Norte"] * 5 + ["Sur", None, None],
                    "latitude": [40.0, 40.01, 40.02, 40.03, 40.04, 40.2, 40.0027, 41.0],
                    "longitude": [-3.7] * 8})


def flag(sid, minute, sev=5.0, dev=-6.0, exp=40.0, jump_ratio=1.5, flat=0, steps=4, rough=1.0):
    return {"sensor_id": sid, "event_time": T0 + minute * MIN, "severity": sev, "pressure": exp + dev,
            "expected_pressure": exp, "share_pressure": 1.0, "recent_share": 0.5, "error_steps": steps,
            "top_feature": "pressure", "deviation": dev, "jump": dev, "jump_ratio": jump_ratio,
            "roughness": rough, "flat_steps": flat}


def frame(*rows):
    return pd.DataFrame(list(rows))


def tracker(**kw):
    args = dict(merge_gap_s=1800, quiet_s=3600, merge_onset_s=900, merge_distance_m=500, registry=REG,
                model_version="v1")
    args.update(kw)
    return IncidentTracker(["pressure"], 32, 300, **args)


def test_a_burst_on_five_sensors_of_one_zone_is_one_incident_with_the_sensors_ranked():
    rows = [flag("A", 0, sev=50, dev=-20, jump_ratio=40), flag("B", 0, sev=30, dev=-12, jump_ratio=35),
            flag("C", 5, sev=20, dev=-8, jump_ratio=30), flag("D", 5, sev=10, dev=-6, jump_ratio=20),
            flag("E", 10, sev=4, dev=-3, jump_ratio=12), flag("A", 5, sev=40, dev=-19),
            flag("F", 5, sev=9)]                                    # zone Sur: its own incident
    out = tracker().update(frame(*rows), T0 + 10 * MIN, batch_id=1)
    assert list(out.incidents.columns) == INCIDENT_COLUMNS and list(out.events.columns) == EVENT_COLUMNS
    assert len(out.incidents) == 2 and out.events["event"].tolist() == ["open", "open"]
    burst = out.incidents.iloc[0]
    sensors = json.loads(burst["sensors"])
    assert [s["sensor_id"] for s in sensors] == ["A", "B", "C", "D", "E"]       # by share of severity
    assert sensors[0]["share"] == pytest.approx(90 / 154, abs=1e-4) and sensors[0]["readings"] == 2
    assert (burst["first_sensor"], burst["zone"], burst["readings"], burst["kind"]) == ("A", "Norte", 6, "burst")
    assert burst["incident_id"] == incident_id("A", T0) and burst["peak_severity"] == 50
    assert burst["opened_at"] == T0 and burst["last_seen"] == T0 + 10 * MIN and pd.isna(burst["closed_at"])
    assert burst["status"] == "new" and burst["batch_id"] == 1 and burst["model_version"] == "v1"
    assert "5 sensors (A 58 %, B 19 %" in burst["explanation"] and "sudden drop" in burst["explanation"]
    assert out.incidents.iloc[1]["first_sensor"] == "F"
    assert out.alarms["incident_id"].tolist().count(burst["incident_id"]) == 6
    assert out.alarms["explanation"].iloc[0].startswith("A: 20.0 m read, 40.0 m expected (\u221220.0 m, drop)")


def test_gaps_below_the_merge_gap_stay_one_incident_above_it_two():
    t = tracker()
    out = t.update(frame(flag("A", 0), flag("A", 5), flag("A", 30)), T0 + 30 * MIN, batch_id=1)  # gap 25 min
    assert len(out.incidents) == 1 and out.incidents.iloc[0]["readings"] == 3
    out = t.update(frame(flag("A", 66)), T0 + 66 * MIN, batch_id=2)                           # gap 36 min
    assert out.events["event"].tolist() == ["open"]
    assert out.incidents.iloc[0]["incident_id"] == incident_id("A", T0 + 66 * MIN)
    assert len(t.open) == 2    # the first closes once its quiet time has passed


def test_quiet_time_closes_at_last_seen_plus_quiet():
    t = tracker()
    t.update(frame(flag("A", 0), flag("A", 5)), T0 + 5 * MIN, batch_id=1)
    assert t.update(frame(), T0 + 65 * MIN, batch_id=2).events.empty           # exactly quiet_s: still open
    out = t.update(frame(), T0 + 66 * MIN, batch_id=3)
    assert out.events["event"].tolist() == ["close"]
    rec = out.incidents.iloc[0]
    assert rec["status"] == "closed" and rec["closed_at"] == T0 + 65 * MIN and rec["batch_id"] == 3
    assert not t.open and not t.sensor_open and not t.pending                 # closed incidents leave the state


def test_persistence_two_of_three_drops_a_lone_spike_and_keeps_a_run_across_batches():
    t = tracker(persistence_m=2, persistence_n=3)
    out = t.update(frame(flag("A", 0, sev=80)), T0, batch_id=1)               # a lone spike
    assert out.alarms.empty and out.incidents.empty and out.dropped == 1
    out = t.update(frame(flag("A", 60)), T0 + 60 * MIN, batch_id=2)           # first of a run: held
    assert out.alarms.empty
    t = IncidentTracker.from_json(t.to_json(), ["pressure"], 32, 300, merge_gap_s=1800, quiet_s=3600,
                                  persistence_m=2, persistence_n=3, registry=REG)   # a restart
    out = t.update(frame(flag("A", 65), flag("A", 70)), T0 + 70 * MIN, batch_id=3)
    assert out.alarms["event_time"].tolist() == [T0 + 65 * MIN, T0 + 70 * MIN]
    assert out.incidents.iloc[0]["opened_at"] == T0 + 65 * MIN
    # only the flags inside the last 3 intervals stay: 60, 65, 70 (0 is gone)
    assert t.flags == {"A": [(T0 + m * MIN).value for m in (60, 65, 70)]}


def _strip(out):
    return (out.incidents.drop(columns=["detected_at", "updated_at"]).to_json(date_unit="ns"),
            out.events.to_json(date_unit="ns"), out.alarms.to_json(date_unit="ns"))


def test_a_replay_from_the_saved_state_gives_identical_records_but_the_wall_clock():
    t = tracker(open_severity=2.0)
    t.update(frame(flag("A", 0), flag("B", 5, sev=1.2)), T0 + 5 * MIN, batch_id=1)
    saved = t.to_json()
    batch2 = frame(flag("B", 10, sev=1.3), flag("A", 15), flag("C", 15, sev=3), flag("F", 20, sev=1.1))
    first = t.update(batch2, T0 + 20 * MIN, batch_id=2, wall=pd.Timestamp("2026-02-01T00:00:00Z"))
    again = IncidentTracker.from_json(saved, ["pressure"], 32, 300, merge_gap_s=1800, quiet_s=3600,
                                      merge_onset_s=900, merge_distance_m=500, open_severity=2.0,
                                      registry=REG, model_version="v1")
    second = again.update(batch2, T0 + 20 * MIN, batch_id=2, wall=pd.Timestamp("2026-02-02T00:00:00Z"))
    assert _strip(first) == _strip(second)
    assert (first.incidents["updated_at"] != second.incidents["updated_at"]).all()
    assert again.to_json() == t.to_json().replace("2026-02-01", "2026-02-02")
    assert IncidentTracker.from_json(saved, ["pressure"], 32).to_json() == saved   # exact round trip
    with pytest.raises(ValueError, match="reload the state saved after batch 1"):
        t.update(batch2, T0 + 20 * MIN, batch_id=2)


def test_rows_are_processed_in_event_time_then_sensor_order_whatever_the_input_order():
    rows = [flag("B", 0, sev=9), flag("A", 0, sev=9), flag("C", 5)]
    a = tracker().update(frame(*rows), T0 + 5 * MIN, batch_id=1, wall=T0)
    b = tracker().update(frame(*rows[::-1]), T0 + 5 * MIN, batch_id=1, wall=T0)
    assert a.incidents.to_json() == b.incidents.to_json()
    assert a.incidents.iloc[0]["first_sensor"] == "A"


def test_the_opening_bar_holds_a_blip_and_dates_the_incident_from_its_first_alarm():
    t = tracker(open_severity=2.0)
    out = t.update(frame(flag("A", 0, sev=1.2)), T0, batch_id=1)
    assert out.incidents.empty and out.alarms["incident_id"].tolist() == [None]   # an anomaly row, no incident
    out = t.update(frame(flag("A", 5, sev=1.3), flag("A", 10, sev=3.0)), T0 + 10 * MIN, batch_id=2)
    rec = out.incidents.iloc[0]
    assert rec["incident_id"] == incident_id("A", T0) and rec["opened_at"] == T0 and rec["readings"] == 3
    assert out.alarms["incident_id"].tolist() == [rec["incident_id"]] * 2
    assert out.events["at"].tolist() == [T0 + 10 * MIN]                          # raised by the 3.0
    # a flat line opens an incident at any severity; a pending blip is forgotten after the merge gap
    t2 = tracker(open_severity=2.0)
    assert len(t2.update(frame(flag("B", 0, sev=1.1, flat=8)), T0, batch_id=1).incidents) == 1
    t2.update(frame(flag("C", 0, sev=1.1)), T0, batch_id=2)
    t2.update(frame(), T0 + 31 * MIN, batch_id=3)
    assert "C" not in t2.pending


def test_onset_and_distance_rules_keep_unrelated_sensors_apart():
    t = tracker()
    t.update(frame(flag("A", 0, sev=9), flag("A", 20, sev=9), flag("A", 40, sev=9)), T0 + 40 * MIN, batch_id=1)
    out = t.update(frame(flag("B", 45, sev=9)), T0 + 45 * MIN, batch_id=2)        # 45 min after A's opening
    assert out.events["event"].tolist() == ["open"]                                # own incident
    late = tracker(merge_onset_s=0)                                                 # literal overlap rule
    late.update(frame(flag("A", 0, sev=9), flag("A", 20, sev=9), flag("A", 40, sev=9)), T0 + 40 * MIN, batch_id=1)
    assert late.update(frame(flag("B", 45, sev=9)), T0 + 45 * MIN, batch_id=2).events["event"].tolist() == ["update"]
    near = tracker().update(frame(flag("A", 0, sev=9), flag("X", 5), flag("Y", 5)), T0 + 5 * MIN, batch_id=1)
    firsts = near.incidents["first_sensor"].tolist()
    assert firsts == ["A", "Y"]                                                     # X (300 m) joined A
    assert [s["sensor_id"] for s in json.loads(near.incidents.iloc[0]["sensors"])] == ["A", "X"]


def test_mutes_mark_incidents_muted_while_all_their_readings_are():
    mute = Mute("MUTE-1", "A", None, T0.value, (T0 + 30 * MIN).value, "pump work", "ops")
    t = tracker(mutes=[mute])
    out = t.update(frame(flag("A", 0), flag("A", 5), flag("F", 5)), T0 + 5 * MIN, batch_id=1)
    assert out.incidents["muted"].tolist() == [True, False]
    assert out.alarms["muted"].tolist() == [True, True, False]
    out = t.update(frame(flag("A", 35)), T0 + 35 * MIN, batch_id=2)                # after the window
    assert out.incidents.iloc[0]["muted"] == False                                  # noqa: E712
    zone = Mute("MUTE-2", None, "Sur", T0.value, (T0 + 60 * MIN).value)
    out = tracker().update(frame(flag("F", 5)), T0 + 5 * MIN, batch_id=1,
                           mutes=pd.DataFrame([zone.record()]))
    assert out.incidents.iloc[0]["muted"] == True                                   # noqa: E712


def test_values_column_and_no_explanation_columns_still_give_records():
    rows = frame({"sensor_id": "A", "event_time": T0, "score": 0.6, "threshold": 0.1,
                  "values": json.dumps({"pressure": 31.0})})
    out = tracker().update(rows, T0, batch_id=1)
    rec = out.incidents.iloc[0]
    assert rec["peak_severity"] == pytest.approx(6.0) and rec["kind"] == "unknown"
    assert out.alarms["expected"].tolist() == [None]
    assert out.alarms["explanation"].iloc[0] == "A: deviation unknown; severity 6.0"


def test_multivariate_alarms_name_the_features_and_their_shares():
    t = IncidentTracker(["pressure", "flow"], 16, 60, registry=REG)
    row = {"sensor_id": "A", "event_time": T0, "severity": 3.0, "pressure": 30.0, "flow": 5.0,
           "expected_pressure": 31.0, "expected_flow": 2.0, "share_pressure": 0.25, "share_flow": 0.75,
           "top_feature": "flow", "error_steps": 2, "jump_ratio": 2.0, "jump": 3.0, "roughness": 1.0,
           "flat_steps": 0, "recent_share": 0.9}
    out = t.update(frame(row), T0, batch_id=1)
    assert out.alarms["explanation"].iloc[0] == ("A: flow 5.0 m read, 2.0 m expected (+3.0 m, rise); error in the "
                                                 "newest 2 of 16 steps; error by feature: flow 75 %, pressure 25 %; "
                                                 "severity 3.0")
    assert json.loads(out.alarms["expected"].iloc[0]) == {"pressure": 31.0, "flow": 2.0}
    assert "error by feature: flow 75 %, pressure 25 %" in out.incidents.iloc[0]["explanation"]


def test_bad_persistence_and_an_empty_first_batch():
    with pytest.raises(ValueError, match="1 <= m <= n"):
        tracker(persistence_m=3, persistence_n=2)
    out = tracker().update(pd.DataFrame(), None, batch_id=0)
    assert out.incidents.empty and out.events.empty and out.alarms.empty


def test_incident_ids_are_deterministic_and_need_a_timezone():
    a = incident_id("PT-0007", "2026-01-20T03:15:00Z")
    assert a == incident_id("PT-0007", pd.Timestamp("2026-01-20T04:15:00+01:00"))
    assert a == incident_id("PT-0007", pd.Timestamp("2026-01-20T03:15:00Z").value)
    assert a.startswith("INC-") and len(a) == 20 and int(a[4:], 16) >= 0
    assert a != incident_id("PT-0008", "2026-01-20T03:15:00Z") != incident_id("PT-0007", "2026-01-20T03:20:00Z")
    with pytest.raises(ValueError, match="has no timezone"):
        incident_id("PT-0007", "2026-01-20T03:15:00")


def test_settings_build_the_tracker_and_bad_incident_settings_stop_with_one_sentence():
    from sentinel.config import ConfigError, load_settings
    s = load_settings(None, ["incidents.merge_gap_s=600", "incidents.quiet_s=900", "threshold.persistence_m=2",
                             "threshold.persistence_n=3"])
    t = IncidentTracker.from_settings(s, ["pressure"], 32, registry=REG)
    assert (t.merge_gap_ns, t.quiet_ns, t.m, t.n, t.interval_ns) == (600e9, 900e9, 2, 3, 300e9)
    assert (t.open_severity, t.merge_onset_ns) == (s.incidents.open_severity, s.incidents.merge_onset_s * 1e9)
    for bad, words in [("incidents.quiet_s=60", "shorter than 'incidents.merge_gap_s'"),
                       ("incidents.merge_gap_s=0", "at least 1"),
                       ("incidents.open_severity=0.5", "below 1"),
                       ("incidents.merge_distance_m=-1", "must not be negative"),
                       ("incidents.alarm_budget_per_hour=0", "must be positive")]:
        with pytest.raises(ConfigError) as err:
            load_settings(None, [bad])
        assert words in str(err.value) and "\n" not in str(err.value)
