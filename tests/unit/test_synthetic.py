"""The simulator: seeded, labelled, every anomaly type, a daily demand cycle."""
import numpy as np

from sentinel.ingest.synthetic import ANOMALY_TYPES, simulate


def test_same_seed_same_data_and_live_feed_continues_the_same_network():
    a = simulate(3, 2, 300, seed=5)
    b = simulate(3, 2, 300, seed=5)
    assert a.readings.equals(b.readings) and a.episodes.equals(b.episodes)
    later = simulate(3, 2, 300, seed=5, start="2026-02-01T00:00:00Z", anomalies_per_sensor_week=0)
    # same sensors, similar levels (same baseline), different noise
    m1 = a.readings[a.readings.is_anomaly == 0].groupby("sensor_id").pressure.mean()
    m2 = later.readings.groupby("sensor_id").pressure.mean()
    assert (abs(m1 - m2) < 1.5).all()
    assert not np.allclose(a.readings.pressure.values[:50], later.readings.pressure.values[:50])


def test_every_anomaly_type_is_injected_and_labelled():
    net = simulate(10, 14, 300, seed=1, anomalies_per_sensor_week=2.0)
    assert set(net.episodes.anomaly_type) == set(ANOMALY_TYPES)
    r = net.readings
    assert set(r.loc[r.is_anomaly == 1, "anomaly_type"]) == set(ANOMALY_TYPES)
    assert (r.loc[r.is_anomaly == 0, "anomaly_type"] == "").all()
    for ep in net.episodes.itertuples():
        rows = r[(r.sensor_id == ep.sensor_id) & (r.timestamp >= ep.start) & (r.timestamp <= ep.end)]
        assert (rows.is_anomaly == 1).all() and (rows.anomaly_type == ep.anomaly_type).all()


def test_daily_cycle_night_pressure_above_morning_peak():
    r = simulate(5, 7, 300, seed=2, anomalies_per_sensor_week=0).readings
    hour = r.timestamp.dt.hour
    night = r[hour.isin([2, 3, 4])].groupby("sensor_id").pressure.mean()
    morning = r[hour.isin([7, 8])].groupby("sensor_id").pressure.mean()
    assert (night > morning + 2).all()


def test_clean_data_has_no_labels_and_sensor_registry_has_coordinates():
    net = simulate(4, 1, 600, seed=0, anomalies_per_sensor_week=0)
    assert net.readings.is_anomaly.sum() == 0 and net.episodes.empty
    assert {"latitude", "longitude", "zone"} <= set(net.sensors.columns)
