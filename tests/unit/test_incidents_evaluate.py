"""Incident-level metrics and the operator sentences on hand-checked cases."""
import json
from types import SimpleNamespace

import pandas as pd
import pytest

from sentinel.incidents import evaluate
from sentinel.incidents.explain import anomaly_sentence, incident_sentence, number, unit_symbol
from sentinel.incidents.tracker import SensorTrack

T = pd.Timestamp("2026-01-20T00:00:00Z")
H = pd.Timedelta(hours=1)


def incident(iid, kind, spans):
    sensors = [{"sensor_id": s, "first_seen": str(a), "last_seen": str(b)} for s, a, b in spans]
    return {"incident_id": iid, "kind": kind, "sensors": json.dumps(sensors),
            "opened_at": min(a for _, a, _ in spans), "last_seen": max(b for _, _, b in spans)}


def test_precision_recall_incidents_per_event_and_kinds_by_hand():
    truth = pd.DataFrame([
        {"event_id": "e1", "sensor_id": "A", "anomaly_type": "burst", "start": T + 10 * H, "end": T + 11 * H},
        {"event_id": "e2", "sensor_id": "B", "anomaly_type": "stuck", "start": T + 12 * H, "end": T + 13 * H},
        {"event_id": "e3", "sensor_id": "C", "anomaly_type": "leak", "start": T + 14 * H, "end": T + 15 * H},
        {"event_id": "n1", "sensor_id": "D", "anomaly_type": "pump_schedule", "start": T + 20 * H, "end": T + 21 * H},
        {"event_id": "n1", "sensor_id": "E", "anomaly_type": "pump_schedule", "start": T + 20 * H, "end": T + 21 * H},
    ])
    incidents = pd.DataFrame([
        incident("I1", "burst", [("A", T + 10.1 * H, T + 11.4 * H)]),               # within the 30-min tolerance
        incident("I2", "leak", [("B", T + 12.2 * H, T + 12.8 * H)]),                # a stuck sensor called a leak
        incident("I3", "sensor_fault", [("B", T + 14 * H, T + 14.2 * H)]),          # after end + tolerance: false
        incident("I4", "operational", [("D", T + 20 * H, T + 21 * H), ("E", T + 20 * H, T + 21 * H)]),
        incident("I5", "burst", [("A", T + 11.2 * H, T + 11.3 * H)]),               # a second one for e1
    ])
    m = evaluate.incident_metrics(truth, incidents, pd.Timedelta(minutes=30))
    assert (m["events"], m["events_found"], m["incident_recall"]) == (4, 3, 0.75)
    assert (m["incidents"], m["true_incidents"], m["incident_precision"]) == (5, 4, 0.8)
    assert m["incidents_per_found_event"] == pytest.approx(4 / 3) and m["max_incidents_per_event"] == 2
    assert m["events_with_one_incident"] == pytest.approx(2 / 3)
    assert m["kind_accuracy"] == pytest.approx(2 / 3)                   # e1 burst ok, e2 wrong, n1 ok
    assert m["faults_as_leak_or_burst"] == 1.0
    assert m["kind_confusion"] == {"burst": {"burst": 1}, "operational": {"operational": 1}, "sensor_fault": {"leak": 1}}
    assert m["per_type"]["pump_schedule"]["events"] == 1 and m["per_type"]["leak"]["recall"] == 0.0
    e1 = m["per_event"].set_index("event_id").loc["e1"]
    assert e1["incident_id"] == "I1" and e1["incidents"] == 2           # the longest overlap decides the kind
    assert "incidents: 5 (1 false" in evaluate.format_table(m)
    assert evaluate.expected_kind("noise_burst") == "sensor_fault" and evaluate.expected_kind("???") == "unknown"


def test_two_events_in_one_incident_are_counted():
    truth = pd.DataFrame([{"sensor_id": "A", "anomaly_type": "leak", "start": T, "end": T + H},
                          {"sensor_id": "B", "anomaly_type": "drift", "start": T, "end": T + 5 * H}])
    one = pd.DataFrame([incident("I1", "leak", [("A", T, T + H), ("B", T + 0.2 * H, T + 5 * H)])])
    m = evaluate.incident_metrics(truth, one, pd.Timedelta(0))
    assert m["incidents_covering_several_events"] == 1 and m["incident_recall"] == 1.0
    assert m["kind_accuracy"] == 0.5 and m["faults_as_leak_or_burst"] == 1.0


def test_the_anomaly_sentence_reads_as_the_issue_asks():
    row = {"sensor_id": "PT-0007", "observed": 35.1, "expected": 41.2, "deviation": 35.1 - 41.2,
           "error_steps": 4, "severity": 2.04}
    assert anomaly_sentence(row, ["pressure"], "mca", 32) == (
        "PT-0007: 35.1 m read, 41.2 m expected (\u22126.1 m, drop); error in the newest 4 of 32 steps; severity 2.0")
    assert unit_symbol("mca") == "m" and unit_symbol("kPa") == "kPa" and unit_symbol("") == ""
    assert number(0.01234) == "0.0123" and number(-2.0) == "\u22122.0"


def test_the_incident_sentence_names_zone_sensors_first_worst_and_why():
    a = SensorTrack(readings=5, severity_sum=60.0, peak_severity=30.0, first_seen=T.value, last_seen=T.value,
                    dev_peak=-18.2, observed_peak=22.1, expected_peak=40.3, peak_feature="pressure",
                    features={"pressure": 60.0})
    b = SensorTrack(readings=2, severity_sum=40.0, peak_severity=20.0, first_seen=T.value, last_seen=T.value,
                    dev_peak=-4.0, observed_peak=36.0, expected_peak=40.0, features={"pressure": 40.0})
    inc = SimpleNamespace(sensors={"PT-0003": a, "PT-0011": b}, zone="Norte", first_sensor="PT-0003",
                          opened_at=T.value, readings=7, peak_severity=30.0, kind="burst",
                          kind_reason="sudden drop (41x the usual step) seen by 2 sensors")
    inc.ranked = lambda: [("PT-0003", a, 0.6), ("PT-0011", b, 0.4)]
    assert incident_sentence(inc, "mca") == (
        "Burst in zone Norte: 2 sensors (PT-0003 60 %, PT-0011 40 %); first PT-0003 at 2026-01-20 00:00 UTC; "
        "biggest deviation PT-0003: 22.1 m read, 40.3 m expected (\u221218.2 m, drop); 7 flagged readings, "
        "peak severity 30.0; why burst: sudden drop (41x the usual step) seen by 2 sensors")


def test_each_injected_event_is_shown_beside_its_incident_and_false_ones_after():
    truth = pd.DataFrame([
        {"sensor_id": "A", "anomaly_type": "burst", "start": T + 10 * H, "end": T + 11 * H},
        {"sensor_id": "B", "anomaly_type": "leak", "start": T + 12 * H, "end": T + 13 * H},
        {"sensor_id": "C", "anomaly_type": "stuck", "start": T + 14 * H, "end": T + 15 * H},
    ])
    incidents = pd.DataFrame([
        incident("INC-a", "burst", [("A", T + 10.25 * H, T + 11 * H)]) | {"zone": "Norte", "peak_severity": 3.04,
                                                                          "explanation": "Burst in zone Norte"},
        incident("INC-b", "sensor_fault", [("B", T + 12.5 * H, T + 13 * H)]) | {"zone": None, "peak_severity": 1.6,
                                                                                "explanation": "x" * 50},
        incident("INC-f", "unknown", [("A", T + 20 * H, T + 21 * H)]) | {"zone": None, "peak_severity": 1.2,
                                                                         "explanation": "nothing injected"},
    ])
    m = evaluate.incident_metrics(truth, incidents, pd.Timedelta(minutes=30))
    ev = m["per_event"].set_index("sensors")
    assert ev.loc["A", "delay_s"] == 15 * 60 and ev.loc["B", "delay_s"] == 30 * 60
    assert pd.isna(ev.loc["C", "delay_s"]) and ev.loc["C", "incident_id"] is None
    assert m["false_incident_ids"] == ["INC-f"]
    text = evaluate.format_events(m, incidents, explain_chars=20)
    lines = text.splitlines()
    a = next(line for line in lines if "INC-a" in line)
    assert a.split()[:2] == ["1", "burst"] and "burst" in a and " ok " in a and "Norte" in a and "+15m" in a
    assert "3.0" in a and "01-20 10:15" in a                      # opened at the event's sensor first alarm
    b = next(line for line in lines if "INC-b" in line)
    assert "!=lea" in b and "+30m" in b                           # a leak reported as a sensor fault
    assert lines[lines.index(b) + 1].strip() == "x" * 19 + "\u2026"  # explanation cut to 20 characters
    assert "(no incident: missed)" in next(line for line in lines if line.split()[:2] == ["3", "stuck"])
    assert "incidents matching no injected event: 1" in text
    assert "false" in next(line for line in lines if "INC-f" in line)
    assert "Burst in zone" not in evaluate.format_events(m, incidents, explain_chars=0)
    sentence = ("Burst in zone Norte: 2 sensors (A 60 %, B 40 %); first A at 2026-01-20 10:15 UTC; biggest deviation A: "
                "22.1 m read, 40.3 m expected; 7 flagged readings, peak severity 3.0; why burst: sudden drop")
    assert evaluate._why(sentence) == "biggest deviation A: 22.1 m read, 40.3 m expected; why burst: sudden drop"
