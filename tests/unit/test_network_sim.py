"""Unit tests of the WNTR network simulator (Net1, a couple of days: each test takes about a second)."""
from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
import pytest


from sentinel.ingest import network as netsim
from sentinel.ingest.network import NetworkSimError, list_networks, simulate_network

QUIET = dict(leaks_per_week=0.0, faults_per_week=0.0, operational_per_week=0.0)


def _sim(**kw):
    args = dict(network="Net1", days=2, seed=3, cache=False)
    args.update(kw)
    return simulate_network(**args)


def test_list_networks_has_the_shipped_ones():
    names = list_networks()
    for name in ("Net1", "Net3", "Net6", "ky10"):
        assert name in names


def test_unknown_network_is_a_one_sentence_error():
    with pytest.raises(NetworkSimError) as err:
        simulate_network("Net9", days=1, cache=False)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert msg.startswith("unknown network 'Net9': use one of ")
    assert "Net1" in msg and "ky10" in msg and msg.endswith("or a path to an .inp file")
    assert "\n" not in msg
    with pytest.raises(NetworkSimError, match="does not exist"):
        simulate_network("/nonexistent/town.inp", days=1, cache=False)
    with pytest.raises(NetworkSimError, match="interval_s"):
        simulate_network("Net1", days=1, interval_s=7, cache=False)


def test_frames_match_the_synthetic_contract():
    sim = _sim(leaks_per_week=7, faults_per_week=7)
    r = sim.readings
    assert list(r.columns) == ["sensor_id", "timestamp", "pressure", "is_anomaly", "anomaly_type"]
    assert str(r["timestamp"].dt.tz) == "UTC"
    assert r["is_anomaly"].dtype == np.int8
    assert ((r["anomaly_type"] == "") == (r["is_anomaly"] == 0)).all()
    assert r.equals(r.sort_values(["timestamp", "sensor_id"], kind="stable"))
    # rounded to 0.01 m
    assert np.allclose(r["pressure"] * 100, np.round(r["pressure"] * 100), atol=1e-6)
    assert {"sensor_id", "anomaly_type", "start", "end", "event_id"} <= set(sim.episodes.columns)
    assert {"sensor_id", "latitude", "longitude", "zone", "type", "elevation_m", "noise_sd_m", "node"} \
        <= set(sim.sensors.columns)
    assert {"event_id", "kind", "target", "start", "end", "size", "max_impact_m", "max_impact_noise"} \
        <= set(sim.events.columns)
    assert {"event_id", "sensor_id", "max_abs_impact_m", "mean_impact_m", "noise_sd_m"} <= set(sim.impacts.columns)
    assert set(sim.events["kind"]) <= set(netsim.EVENT_KINDS)
    # 2 days of 5-min readings per sensor, minus dropouts
    n = 2 * 288 * len(sim.sensors)
    missing = sim.events.loc[sim.events.kind == "dropout"]
    lost = sum(int((e.end - e.start) / pd.Timedelta(minutes=5)) + 1 for e in missing.itertuples())
    assert len(r) == n - lost


def test_deterministic_for_a_seed():
    a = _sim(leaks_per_week=7, faults_per_week=7)
    b = _sim(leaks_per_week=7, faults_per_week=7)
    pd.testing.assert_frame_equal(a.readings, b.readings)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.impacts, b.impacts)
    c = _sim(leaks_per_week=7, faults_per_week=7, seed=4)
    assert not np.array_equal(a.readings["pressure"].to_numpy()[:500], c.readings["pressure"].to_numpy()[:500])


def test_pressure_dependent_demand_is_on():
    p = dict(days=1.0, interval_s=300, seed=1, start=pd.Timestamp("2026-01-05", tz="UTC").isoformat(),
             sensors=None, required_pressure_m=15.0, spinup_s=86400)
    prep = netsim._prepare("Net1", netsim._resolve_network("Net1")[1], pd.Timestamp("2026-01-05", tz="UTC"), p)
    hyd = prep.wn.options.hydraulic
    assert hyd.demand_model in ("PDD", "PDA")
    assert hyd.required_pressure == 15.0 and hyd.minimum_pressure == 0.0
    assert prep.wn.options.time.hydraulic_timestep == 300
    assert _sim(**QUIET).info["demand_model"] == "PDD"


def test_demand_has_daily_and_weekly_cycles():
    p = dict(days=14.0, interval_s=300, seed=1, start="2026-01-05T00:00:00+00:00", sensors=None,
             required_pressure_m=15.0, spinup_s=0)
    prep = netsim._prepare("Net1", netsim._resolve_network("Net1")[1], pd.Timestamp("2026-01-05", tz="UTC"), p)
    name = prep.wn.get_node(prep.juncs[0]).demand_timeseries_list[0].pattern_name
    m = pd.Series(prep.wn.get_pattern(name).multipliers, index=prep.sim_times[:len(prep.sim_times)])
    hourly = m.groupby(m.index.hour).mean()
    assert hourly.max() / hourly.min() > 1.5           # a daily shape
    daily = m.resample("D").mean()
    assert daily[daily.index.dayofweek >= 5].mean() < daily[daily.index.dayofweek < 5].mean()
    assert daily.std() > 0                              # day-to-day variation
    assert np.abs(np.diff(m.to_numpy())).mean() > 0     # step noise


def test_burst_lowers_nearby_pressures_and_the_impact_table_says_so():
    kw = dict(leaks_per_week=7, burst_fraction=1.0, leak_visibility=(30.0, 40.0), faults_per_week=0.0,
              operational_per_week=0.0)
    sim = _sim(**kw)
    clean = _sim(**QUIET)
    bursts = sim.events[sim.events.kind == "burst"]
    assert len(bursts) >= 1
    ev = bursts.iloc[0]
    assert ev.size > 0 and ev.size_unit == "L/s" and ev.target_type == "node"
    assert ev.max_impact_noise > 10 and ev.n_affected >= 1
    imp = sim.impacts[sim.impacts.event_id == ev.event_id].set_index("sensor_id")
    top = imp["max_abs_impact_m"].idxmax()
    assert top == ev.top_sensor
    assert imp.loc[top, "mean_impact_m"] < 0          # a leak lowers pressure
    # the same seed without events has the same noise: the difference is the burst
    w = lambda f: f[(f.sensor_id == top) & (f.timestamp >= ev.start) & (f.timestamp <= ev.end)]  # noqa: E731
    diff = w(sim.readings)["pressure"].to_numpy() - w(clean.readings)["pressure"].to_numpy()
    assert diff.mean() < -2 * imp.loc[top, "noise_sd_m"]
    assert abs(diff.mean() - imp.loc[top, "mean_impact_m"]) < 0.05 + 0.05 * abs(imp.loc[top, "mean_impact_m"])
    # labelled on the affected sensors, from the first reading past 2 x noise to the end
    ep = sim.episodes[sim.episodes.event_id == ev.event_id]
    assert set(ep.sensor_id) == set(imp.index[imp["affected"]])
    lab = w(sim.readings)
    assert (lab["anomaly_type"] == "burst").all() and (lab["is_anomaly"] == 1).all()
    # before the burst the readings are normal
    assert (sim.readings.loc[sim.readings.timestamp < ev.start, "is_anomaly"] == 0).all() or \
        (sim.events.start < ev.start).any()


def test_sensor_faults_are_labelled_with_their_kind_and_dropout_rows_are_absent():
    sim = _sim(days=6, faults_per_week=10, leaks_per_week=0.0, operational_per_week=0.0, seed=5)
    faults = sim.events[sim.events.kind.isin(netsim.FAULT_KINDS)]
    assert set(faults.kind) == set(netsim.FAULT_KINDS)
    r = sim.readings
    for ev in faults.itertuples():
        span = r[(r.timestamp >= ev.start) & (r.timestamp <= ev.end)]
        own = span[span.sensor_id == ev.target]
        others = span[span.sensor_id != ev.target]
        assert (others["is_anomaly"] == 0).all()
        if ev.kind == "dropout":
            assert own.empty
            assert others.sensor_id.nunique() == len(sim.sensors) - 1
        else:
            assert len(own) >= 1
            assert (own["anomaly_type"] == ev.kind).all() and (own["is_anomaly"] == 1).all()
        if ev.kind == "stuck":
            assert own["pressure"].nunique() == 1
        if ev.kind == "spike":
            assert ev.max_impact_m >= 2.0
    # every labelled reading lies in an episode of its sensor with the same kind, and vice versa
    lab = r[r.is_anomaly == 1]
    n_in_episodes = 0
    for ep in sim.episodes.itertuples():
        sel = r[(r.sensor_id == ep.sensor_id) & (r.timestamp >= ep.start) & (r.timestamp <= ep.end)]
        assert (sel["anomaly_type"] == ep.anomaly_type).all()
        n_in_episodes += len(sel)
    assert n_in_episodes == len(lab)


def test_operational_events_are_their_own_kinds():
    sim = _sim(days=3, operational_per_week=7, leaks_per_week=0.0, faults_per_week=0.0, seed=2)
    ops = sim.events[sim.events.kind.isin(netsim.OPERATIONAL_KINDS)]
    assert len(ops) >= 1
    assert (ops.target_type == "link").all()
    assert not sim.events.kind.isin(["leak", "burst"]).any()
    for ev in ops.itertuples():
        lab = sim.readings[(sim.readings.timestamp >= ev.start) & (sim.readings.timestamp <= ev.end)]
        assert set(lab.loc[lab.is_anomaly == 1, "anomaly_type"]) <= {ev.kind}


def test_registry_has_zones_and_lat_lon():
    sim = _sim(**QUIET)
    s = sim.sensors
    assert s["sensor_id"].is_unique and s["node"].is_unique
    assert s["sensor_id"].str.fullmatch(r"PT-\d{4}").all()
    assert s["zone"].nunique() >= 2 and s["zone"].str.fullmatch(r"Z\d+").all()
    assert s["latitude"].between(-90, 90).all() and s["longitude"].between(-180, 180).all()
    assert s["latitude"].nunique() > 1 and s["longitude"].nunique() > 1
    # a city-sized area: within 30 km
    assert (s["latitude"].max() - s["latitude"].min()) * 111 < 30
    assert (s["type"] == "pressure").all()
    assert s["noise_sd_m"].between(0.03, 0.08).all()
    assert set(sim.readings.sensor_id) == set(s.sensor_id)


def test_clean_days_give_a_normal_history_then_events():
    sim = _sim(days=3, clean_days=1.5, leaks_per_week=7, faults_per_week=7)
    assert sim.events_from == pd.Timestamp("2026-01-06T12:00:00Z")
    assert (sim.events.start >= sim.events_from).all() and len(sim.events) >= 1
    train, test = sim.split()
    assert train.is_anomaly.sum() == 0 and train.timestamp.max() < sim.events_from <= test.timestamp.min()
    assert len(train) + len(test) == len(sim.readings)


def test_the_cache_is_hit_on_a_second_call(tmp_path):
    kw = dict(network="Net1", days=2, seed=3, leaks_per_week=7, faults_per_week=7, cache_dir=tmp_path)
    a = simulate_network(**kw)
    assert not a.info["cache_hit"] and list(tmp_path.glob("Net1-*.pkl"))
    t = time.perf_counter()
    b = simulate_network(**kw)
    assert b.info["cache_hit"]
    assert time.perf_counter() - t < 2.0
    pd.testing.assert_frame_equal(a.readings, b.readings)
    pd.testing.assert_frame_equal(a.events, b.events)
    # a different parameter of the hydraulics is another cache entry; a fault rate is not
    c = simulate_network(**{**kw, "seed": 4})
    assert not c.info["cache_hit"]
    d = simulate_network(**{**kw, "faults_per_week": 0.0})
    assert d.info["cache_hit"]


def test_a_continued_run_reproduces_the_baseline():
    """Event-alone runs start from the baseline's state: with no event they must match it."""
    captured = {}
    orig = netsim._Engine.run

    def spy(self, *a, **k):
        r = orig(self, *a, **k)
        if a[0] == 0 and "engine" not in captured:
            captured["engine"], captured["base"], captured["nodes"] = self, r, a[4]
            t = sorted(r.states)[-1]
            for replay in (None, r.changes):
                w = orig(self, t, min(t + 6 * 3600, a[1]), r, [], a[4], replay=replay)
                k0 = t // self.dt
                captured.setdefault("diff", []).append(
                    float(np.nanmax(np.abs(w.pressure - r.pressure[k0:k0 + len(w.pressure)]))))
        return r

    netsim._Engine.run = spy
    try:
        _sim(leaks_per_week=7, burst_fraction=1.0)
    finally:
        netsim._Engine.run = orig
    assert max(captured["diff"]) < 1e-3


def test_a_daily_schedule_in_absolute_times_keeps_going_past_its_week():
    """Net3 schedules pump 10 as absolute times for one week only: it becomes a clock-time schedule."""
    changes = []
    orig = netsim._Engine.run

    def spy(self, *a, **k):
        r = orig(self, *a, **k)
        if k.get("record_changes"):
            changes.extend(r.changes)
        return r

    netsim._Engine.run = spy
    try:
        sim = simulate_network("Net3", days=9, seed=1, cache=False, leaks_per_week=7, faults_per_week=0.0,
                               operational_per_week=0.0)
    finally:
        netsim._Engine.run = orig
    assert sim.info["clock_controls"] == 14
    # sim time 0 is midnight; pump 10 opens at 01:00 and closes at 15:00 every day, also on days 8-10
    pump10 = [(t, status) for t, link, status, _ in changes if link == "10"]
    late = [(t % 86400, s) for t, s in pump10 if t >= 8 * 86400]
    assert (3600, 1) in late and (54000, 0) in late
