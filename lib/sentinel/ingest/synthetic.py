"""Labelled pressure-network simulator.

Pressure in metres of water column (mca) at each sensor = its baseline (elevation) minus a
demand-driven head loss that follows the clock (high at night, dips at the morning and
evening peaks, later and smaller at weekends), plus slow wander and sensor noise. Anomaly
episodes of five kinds are injected and labelled per reading:

* ``leak``  - gradual drop over hours, held until repair;
* ``burst`` - sudden large drop, partial recovery;
* ``stuck`` - the sensor repeats one value (a flat line);
* ``spike`` - one or two wild readings;
* ``drift`` - the sensor's calibration drifts away linearly, then is reset.

Seeded: the same arguments give the same data. Pure numpy/pandas.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

ANOMALY_TYPES = ("leak", "burst", "stuck", "spike", "drift")
ZONES = ("Centro", "Norte", "Sur", "Puerto", "Alameda", "Colinas", "Ribera", "Industrial")


@dataclass(frozen=True)
class Network:
    readings: pd.DataFrame   # sensor_id, timestamp, pressure, is_anomaly, anomaly_type
    episodes: pd.DataFrame   # sensor_id, anomaly_type, start, end (inclusive)
    sensors: pd.DataFrame    # sensor_id, latitude, longitude, zone, type, elevation_m


def sensor_table(n_sensors: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng([seed, 1])
    ids = [f"PT-{i + 1:04d}" for i in range(n_sensors)]
    return pd.DataFrame({
        "sensor_id": ids,
        "latitude": np.round(40.4168 + rng.normal(0, 0.03, n_sensors), 6),
        "longitude": np.round(-3.7038 + rng.normal(0, 0.04, n_sensors), 6),
        "zone": [ZONES[i % len(ZONES)] for i in range(n_sensors)],
        "type": "pressure",
        "elevation_m": np.round(rng.uniform(0, 40, n_sensors), 1),
    })


def _demand(hours: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    """Relative water demand (0..~1.2) by hour of day; weekend peaks later and lower."""
    morning = np.where(weekend, 9.5, 7.5)
    peak = np.where(weekend, 0.8, 1.0)
    return (0.15 + peak * 0.85 * np.exp(-0.5 * ((hours - morning) / 1.3) ** 2)
            + 0.75 * np.exp(-0.5 * ((hours - 20.0) / 1.8) ** 2)
            + 0.35 * np.exp(-0.5 * ((hours - 13.5) / 2.0) ** 2))


def simulate(n_sensors: int = 20, days: float = 14, interval_s: int = 300, seed: int = 7,
             start: str = "2026-01-05T00:00:00Z", anomalies_per_sensor_week: float = 2.0,
             types: tuple[str, ...] = ANOMALY_TYPES, warmup_s: int = 6 * 3600,
             demand_shift: float = 0.0, shift_at: str | None = None) -> Network:
    """Simulate a network of pressure sensors.

    Args:
        n_sensors: number of sensors (ids ``PT-0001`` ...).
        days: length of the series per sensor.
        interval_s: sampling interval in seconds.
        seed: random seed; the same seed and arguments give identical output.
        start: first timestamp (UTC).
        anomalies_per_sensor_week: expected anomaly episodes per sensor and week; 0 gives
            clean data.
        types: anomaly kinds to draw from (cycled, so every kind appears).
        warmup_s: no anomaly starts within this time of the series start, so detectors
            that need history can see every episode.
        demand_shift: relative change of demand from ``shift_at`` on (0.15 = +15 %: the
            demand-driven head loss grows by that share, as when a district grows); 0 = none.
        shift_at: when the shift starts (UTC); if not given, the shift applies throughout.
    """
    unknown = set(types) - set(ANOMALY_TYPES)
    if unknown:
        raise ValueError(f"unknown anomaly types {sorted(unknown)}: use {', '.join(ANOMALY_TYPES)}")
    sensors = sensor_table(n_sensors, seed)
    n = int(days * 86400 // interval_s)
    t0 = pd.Timestamp(start)
    t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    times = t0 + pd.to_timedelta(np.arange(n) * interval_s, unit="s")
    hours = np.asarray(times.hour + times.minute / 60.0 + times.second / 3600.0)
    weekend = np.asarray(times.dayofweek >= 5)
    demand = _demand(hours, weekend)
    if demand_shift:  # a lasting change of the network's demand, not an anomaly: unlabelled
        at = pd.Timestamp(shift_at) if shift_at else t0
        at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")
        demand = demand * np.where(np.asarray(times >= at), 1.0 + demand_shift, 1.0)
    # The network (each sensor's level, swing and noise) depends on the seed only; noise and
    # anomalies also on the start time, so a live feed continues the same network as history.
    rng = np.random.default_rng([seed, int(t0.value // 10**9)])

    frames, episodes = [], []
    type_cycle = 0
    for s, sid in enumerate(sensors["sensor_id"]):
        net = np.random.default_rng([seed, 2, s])
        base = net.uniform(30.0, 55.0) - sensors["elevation_m"].iloc[s] * 0.2
        amp = net.uniform(4.0, 9.0)
        noise = net.uniform(0.15, 0.35)
        # Slow wander: AR(1) with a time constant of a few hours.
        phi = np.exp(-interval_s / (4 * 3600))
        wander = np.zeros(n)
        shocks = rng.normal(0, 0.25 * np.sqrt(1 - phi ** 2), n)
        for i in range(1, n):
            wander[i] = phi * wander[i - 1] + shocks[i]
        p = base - amp * demand + wander + rng.normal(0, noise, n)
        label = np.zeros(n, dtype=np.int8)
        kind = np.full(n, "", dtype=object)

        n_eps = rng.poisson(anomalies_per_sensor_week * days / 7.0) if anomalies_per_sensor_week > 0 else 0
        first = int(np.ceil(warmup_s / interval_s))
        occupied = np.zeros(n, dtype=bool)
        for _ in range(n_eps):
            a_type = types[type_cycle % len(types)]
            type_cycle += 1
            placed = _inject(p, label, kind, occupied, a_type, first, interval_s, base, rng)
            if placed is not None:
                episodes.append({"sensor_id": sid, "anomaly_type": a_type,
                                 "start": times[placed[0]], "end": times[placed[1]]})
        frames.append(pd.DataFrame({"sensor_id": sid, "timestamp": times, "pressure": np.round(p, 3),
                                    "is_anomaly": label, "anomaly_type": kind}))
    readings = pd.concat(frames, ignore_index=True).sort_values(["timestamp", "sensor_id"], kind="stable")
    ep = pd.DataFrame(episodes, columns=["sensor_id", "anomaly_type", "start", "end"])
    return Network(readings.reset_index(drop=True), ep.sort_values(["start", "sensor_id"]).reset_index(drop=True), sensors)


def _inject(p, label, kind, occupied, a_type, first, interval_s, base, rng):
    """Modify ``p`` in place with one episode; return (first, last) index or None if no room."""
    n = p.size
    per_h = 3600 / interval_s
    length = {
        "leak": int(rng.uniform(8, 20) * per_h),
        "burst": int(rng.uniform(2, 5) * per_h),
        "stuck": int(rng.uniform(4, 10) * per_h),
        "spike": int(rng.integers(1, 3)),
        "drift": int(rng.uniform(16, 30) * per_h),
    }[a_type]
    length = max(length, 1)
    guard = int(3 * per_h)  # keep episodes apart so each is a distinct event
    for _ in range(50):
        i0 = int(rng.integers(first, max(first + 1, n - length - 1)))
        lo, hi = max(0, i0 - guard), min(n, i0 + length + guard)
        if i0 + length <= n and not occupied[lo:hi].any():
            break
    else:
        return None
    i1 = i0 + length
    k = np.arange(length)
    if a_type == "leak":
        depth = rng.uniform(0.15, 0.3) * base
        ramp = max(1, int(rng.uniform(1.5, 3) * per_h))
        p[i0:i1] -= depth * np.minimum(1.0, (k + 1) / ramp)
    elif a_type == "burst":
        depth = rng.uniform(0.35, 0.55) * base
        recover = 0.5 * (1 - np.exp(-k / (0.5 * per_h)))
        p[i0:i1] -= depth * (1 - recover)
    elif a_type == "stuck":
        p[i0:i1] = round(float(p[i0]), 3)
    elif a_type == "spike":
        sign = rng.choice([-1.0, 1.0])
        p[i0:i1] += sign * rng.uniform(0.3, 0.5) * base
    elif a_type == "drift":
        sign = rng.choice([-1.0, 1.0])
        p[i0:i1] += sign * rng.uniform(0.2, 0.3) * base * (k + 1) / length
    label[i0:i1] = 1
    kind[i0:i1] = a_type
    occupied[i0:i1] = True
    return i0, i1 - 1


def simulate_air_quality(n_sensors: int = 3, days: float = 14, interval_s: int = 60, seed: int = 11,
                         start: str = "2025-10-20T00:00:00Z") -> pd.DataFrame:
    """Normal readings in the older air-quality system's format (``id_sensor``, ``timestamp``,
    ``nivelco2``, ``nivelpm10``, ``nivelmetano``): CO2 around 23 with a mild daily swing, PM10
    around 47, methane around 1013, each with small noise. Used to train the example model
    behind ``conf/examples/air_quality.toml``."""
    rng = np.random.default_rng(seed)
    n = int(days * 86400 // interval_s)
    t0 = pd.Timestamp(start)
    times = t0 + pd.to_timedelta(np.arange(n) * interval_s, unit="s")
    hours = np.asarray(times.hour + times.minute / 60.0)
    frames = []
    for s in range(n_sensors):
        daily = np.sin(2 * np.pi * (hours - 8) / 24)
        frames.append(pd.DataFrame({
            "id_sensor": f"sensor_{s + 1}", "timestamp": times,
            "nivelco2": np.round(23.0 + 0.6 * daily + rng.normal(0, 0.5, n), 2),
            "nivelpm10": np.round(47.0 + 2.0 * daily + rng.normal(0, 2.0, n), 2),
            "nivelmetano": np.round(1013.0 + rng.normal(0, 0.6, n), 2),
        }))
    return pd.concat(frames, ignore_index=True).sort_values(["timestamp", "id_sensor"], kind="stable").reset_index(drop=True)
