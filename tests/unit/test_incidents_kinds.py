"""Each kind rule on a hand-made case (kinds.classify_evidence), and evidence from a real incident."""
import dataclasses

import pandas as pd
import pytest

from sentinel.incidents import kinds
from sentinel.incidents.kinds import Evidence, classify_evidence
from sentinel.incidents.tracker import IncidentTracker

# One sensor, a gradual drop of 10 % watched for 2 hours: a leak.
BASE = Evidence(n_sensors=1, zone_size=3, onset_spread_s=0.0, drop_sensors=1, rise_sensors=0, uniformity=1.0,
                readings=24, direction=-1, onset_jump_ratio=2.0, sustained=20, flat_steps=0, roughness=1.0,
                mixed_fraction=0.0, onset_dev_fraction=0.10, watched_s=7200.0, final=False, has_deviation=True)


def ev(**kw) -> Evidence:
    return dataclasses.replace(BASE, **kw)


@pytest.mark.parametrize("evidence,kind,words", [
    (BASE, "leak", "gradual drop, 10 % below"),
    (ev(flat_steps=kinds.FLAT_MIN_STEPS, onset_jump_ratio=90.0), "sensor_fault", "flat line"),
    (ev(onset_jump_ratio=60.0, readings=4, sustained=1, direction=1), "sensor_fault", "spike: a sudden rise"),
    (ev(roughness=6.0, mixed_fraction=0.4), "sensor_fault", "noisy readings"),
    (ev(onset_jump_ratio=40.0, direction=1), "sensor_fault", "sudden rise"),
    (ev(onset_jump_ratio=40.0), "burst", "sudden drop (40x the usual step) that stays"),
    (ev(onset_jump_ratio=40.0, readings=2, sustained=1), "burst", "sudden drop"),   # too early to call a spike
    # closed after two readings: no more can come, a spike (a burst stays for hours)
    (ev(onset_jump_ratio=200.0, readings=2, sustained=2, final=True), "sensor_fault", "spike: a sudden drop"),
    (ev(onset_jump_ratio=200.0, readings=1, sustained=1, final=True), "sensor_fault", "spike: a sudden drop"),
    (ev(onset_jump_ratio=200.0, readings=3, sustained=3, final=True), "burst", "that stays"),
    # noise: one reading in five the other way is enough; a burst's rough onset only pulls down
    (ev(roughness=15.0, mixed_fraction=0.2, onset_jump_ratio=27.0, readings=5, sustained=5), "sensor_fault",
     "noisy readings"),
    (ev(roughness=15.0, mixed_fraction=0.1, onset_jump_ratio=27.0, readings=5, sustained=5), "burst", "sudden drop"),
    (ev(roughness=13.0, mixed_fraction=0.0, onset_jump_ratio=200.0), "burst", "sudden drop"),
    (ev(direction=1), "sensor_fault", "gradual rise"),
    (ev(onset_dev_fraction=0.02, watched_s=1200.0), "unknown", "an hour of readings"),
    (ev(onset_dev_fraction=0.02, watched_s=1200.0, final=True), "sensor_fault", "slow drift"),
    (ev(onset_dev_fraction=0.02), "sensor_fault", "slow drift"),
    (ev(has_deviation=False), "unknown", "no expected values"),
    (ev(direction=0), "unknown", "no clear shape"),
])
def test_single_sensor_rules(evidence, kind, words):
    got, reason = classify_evidence(evidence)
    assert got == kind and words in reason


@pytest.mark.parametrize("evidence,kind,words", [
    (ev(n_sensors=3, zone_size=5, drop_sensors=2, rise_sensors=1), "operational", "1 up and 2 down"),
    (ev(n_sensors=3, zone_size=5, drop_sensors=0, rise_sensors=3), "operational", "rose at once"),
    (ev(n_sensors=4, zone_size=5, drop_sensors=4, uniformity=0.8, onset_jump_ratio=30.0), "operational",
     "4 of the zone's 5 sensors dropped alike"),
    (ev(n_sensors=5, zone_size=5, drop_sensors=5, uniformity=0.2, onset_jump_ratio=30.0), "burst",
     "seen by 5 sensors"),
    (ev(n_sensors=3, zone_size=5, drop_sensors=3, onset_spread_s=3600.0, onset_jump_ratio=30.0), "burst", "sudden"),
    (ev(n_sensors=2, drop_sensors=2), "leak", "gradual drop seen by 2 sensors"),
    (ev(n_sensors=2, drop_sensors=0, rise_sensors=2), "operational", "rose together"),
    # two sensors in opposite directions: the leading sensor's shape (the other one its mirror)
    (ev(n_sensors=2, drop_sensors=1, rise_sensors=1), "leak", "leading sensor: gradual drop"),
    (ev(n_sensors=2, drop_sensors=1, rise_sensors=1, onset_jump_ratio=13.0), "burst", "mirror"),
    (ev(n_sensors=2, drop_sensors=1, rise_sensors=1, direction=1), "sensor_fault", "leading sensor: gradual rise"),
    (ev(n_sensors=2, drop_sensors=1, rise_sensors=1, onset_jump_ratio=90.0, readings=2, sustained=2, final=True),
     "sensor_fault", "leading sensor: spike"),
    (ev(n_sensors=3, drop_sensors=1, rise_sensors=2, onset_spread_s=1200.0), "unknown", "different directions"),
    (ev(n_sensors=2, drop_sensors=2, onset_jump_ratio=70.0, all_spikes=True), "sensor_fault", "spikes on 2 sensors"),
])
def test_network_rules(evidence, kind, words):
    got, reason = classify_evidence(evidence)
    assert got == kind and words in reason


T0 = pd.Timestamp("2026-01-20T00:00:00Z")


def _row(sid, minute, sev, dev, exp=40.0, ratio=1.5):
    return {"sensor_id": sid, "event_time": T0 + pd.Timedelta(minutes=minute), "severity": sev,
            "pressure": exp + dev, "expected_pressure": exp, "deviation": dev, "jump_ratio": ratio, "jump": dev,
            "flat_steps": 0, "roughness": 1.0, "error_steps": 5, "recent_share": 0.5}


def test_evidence_from_a_tracked_incident_ignores_a_sensor_with_a_tiny_share():
    reg = pd.DataFrame({"sensor_id": ["A", "B"], "zone": ["Z", "Z"], "latitude": [None, None], "longitude": [None, None]})
    t = IncidentTracker(["pressure"], 32, 300, merge_gap_s=3600, quiet_s=3600, registry=reg)
    rows = [_row("A", 5 * i, 50.0, -10.0 - i, ratio=40.0 if i == 0 else 1.0) for i in range(12)]
    rows.append(_row("B", 10, 1.1, +0.5))          # a blip of the neighbour, the other way: 0.2 % share
    out = t.update(pd.DataFrame(rows), T0 + pd.Timedelta(minutes=55), batch_id=1)
    inc = t.open[out.incidents.iloc[0]["incident_id"]]
    e = kinds.evidence(inc, 2)
    assert (e.n_sensors, e.direction, e.rise_sensors) == (1, -1, 0)
    assert e.onset_jump_ratio == 40.0 and e.sustained == 12
    assert e.onset_dev_fraction == pytest.approx(sum((10 + i) / 40 for i in range(6, 12)) / 6)  # 30-55 min
    assert out.incidents.iloc[0]["kind"] == "burst"


def test_a_closed_two_reading_drop_is_a_spike_not_a_burst():
    reg = pd.DataFrame({"sensor_id": ["A", "B"], "zone": ["Z", "Z"], "latitude": [None, None], "longitude": [None, None]})
    t = IncidentTracker(["pressure"], 32, 300, merge_gap_s=3600, quiet_s=3600, registry=reg)
    rows = [_row("A", 0, 900.0, -25.0, ratio=600.0), _row("A", 5, 40.0, -24.0, ratio=1.0)]
    out = t.update(pd.DataFrame(rows), T0 + pd.Timedelta(minutes=10), batch_id=1)
    assert out.incidents.iloc[0]["kind"] == "burst"              # open: it may still stay down
    out = t.update(pd.DataFrame(rows[:0]), T0 + pd.Timedelta(hours=3), batch_id=2)
    closed = out.incidents.iloc[0]
    assert closed["closed_at"] is not None and closed["kind"] == "sensor_fault"
    assert "spike" in closed["explanation"]


def test_evidence_calls_closed_two_reading_jumps_on_two_sensors_spikes():
    class Inc:  # duck-typed incident: two tracks, each a two-reading jump, closed
        closed_at = 1

        def __init__(self):
            from sentinel.incidents.tracker import SensorTrack
            self.tracks = [(s, SensorTrack(readings=2, severity_sum=10.0, sustained=2, onset_jump_ratio=300.0,
                                           dev_peak=-20.0, onset_dev_sum=-40.0, onset_drops=2))
                           for s in ("A", "B")]

        def ranked(self):
            return [(s, t, 0.5) for s, t in self.tracks]

    inc = Inc()
    assert kinds.evidence(inc).all_spikes
    inc.closed_at = None
    assert not kinds.evidence(inc).all_spikes
