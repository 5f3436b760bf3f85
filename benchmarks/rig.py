"""Synthetic pump test-rig recording for the small-data scenario: 8 channels in different units,
1-second sampling (benchmarks/quality_small.py).

One rig (one sensor id) of a centrifugal pump driven by an induction motor. Every channel
follows from a shared, slowly wandering operating point (the speed set-point ``u`` around 1)
through simple pump physics, plus each channel's own measurement noise:

=================  =======  ===========  =============================================
channel            unit     nominal      driven by
=================  =======  ===========  =============================================
inlet_pressure     bar      2.0          tank level (slow), minus suction loss ~ flow^2
outlet_pressure    bar      6.0          inlet + pump head ~ u^2
flow               L/min    120          ~ u
motor_current      A        12           hydraulic power, supply voltage
supply_voltage     V        235          grid (slow wander), slight droop with load
motor_temp         degC     50 -> ~56    first-order warm-up (tau 40 min), load
vibration          mm/s     2.0          ~ u^2
speed              rpm      1450         ~ u, minus slip with load
=================  =======  ===========  =============================================

The first ``n_train`` readings (400) are normal (the motor is still warming up, so
``motor_temp`` keeps rising through the whole recording: a *normal* slow drift). The
``n_test`` readings after them hold labelled anomaly episodes of six kinds, each kind twice,
at random sizes from subtle to obvious:

* ``cavitation``  - inlet pressure drops, vibration rises and gets noisier, flow/head dip;
* ``blockage``    - flow drops, outlet pressure rises, motor current falls (ramps in over ~10 s);
* ``stuck``       - one channel freezes at its last value (noise gone, no longer follows the rig);
* ``spike``       - one channel jumps for 1-3 readings;
* ``drift``       - one channel's reading drifts linearly away (sensor calibration drift);
* ``voltage_sag`` - supply voltage drops 6-30 V for 5-30 s; current rises, speed dips.

Timestamps carry +-30 ms jitter and about 0.5 % of readings are missing (gaps of 2-4 s), as
a real data logger delivers them. The generator was written before any detector was measured on
it and not changed afterwards; drift episodes end abruptly, like a recalibration (harsh on any
adaptive detector, deliberately). Pure numpy/pandas, deterministic for a seed.

    .venv/bin/python benchmarks/rig.py --seed 0 --out rig.csv     # write one recording
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pandas as pd

FEATURES = ["inlet_pressure", "outlet_pressure", "flow", "motor_current", "supply_voltage",
            "motor_temp", "vibration", "speed"]
UNITS = {"inlet_pressure": "bar", "outlet_pressure": "bar", "flow": "L/min", "motor_current": "A",
         "supply_voltage": "V", "motor_temp": "degC", "vibration": "mm/s", "speed": "rpm"}
NOISE = {"inlet_pressure": 0.015, "outlet_pressure": 0.025, "flow": 0.8, "motor_current": 0.06,
         "supply_voltage": 0.4, "motor_temp": 0.08, "vibration": 0.05, "speed": 1.5}
# Logger resolution: every channel is stored rounded to this step (as a real logger does).
RESOLUTION = {"inlet_pressure": 0.001, "outlet_pressure": 0.001, "flow": 0.01, "motor_current": 0.001,
              "supply_voltage": 0.01, "motor_temp": 0.01, "vibration": 0.001, "speed": 0.1}
KINDS = ("cavitation", "blockage", "stuck", "spike", "drift", "voltage_sag")
DURATION = {"cavitation": (20, 90), "blockage": (30, 120), "stuck": (40, 150), "spike": (1, 3),
            "drift": (60, 200), "voltage_sag": (5, 30)}
SENSOR_ID = "RIG-1"
START = pd.Timestamp("2026-03-02T08:00:00Z")


@dataclass(frozen=True)
class Episode:
    kind: str
    start: int        # index into the recording (inclusive)
    end: int          # exclusive
    channel: str      # the channel of a sensor fault, "" for process anomalies
    severity: float   # 0..1, 0.15 subtle, 1 obvious


def _ou(rng: np.random.Generator, n: int, tau: float, sd: float) -> np.ndarray:
    """Ornstein-Uhlenbeck path with time constant ``tau`` steps and stationary ``sd``."""
    a = np.exp(-1.0 / tau)
    e = rng.normal(0.0, sd * np.sqrt(1 - a * a), n)
    x = np.empty(n)
    x[0] = rng.normal(0.0, sd)
    for i in range(1, n):
        x[i] = a * x[i - 1] + e[i]
    return x


def _ramp(n: int, start: int, end: int, rise: int) -> np.ndarray:
    """0 outside [start, end), rising linearly to 1 over ``rise`` steps, 1 until ``end``."""
    r = np.zeros(n)
    k = np.arange(start, end)
    r[start:end] = np.minimum(1.0, (k - start + 1) / max(rise, 1))
    return r


def place_episodes(rng: np.random.Generator, n_train: int, n_test: int, repeats: int = 2) -> list[Episode]:
    """Non-overlapping episodes in the scored part, at least 60 s of normal readings between
    them (and 60 s before the first), in random kind order."""
    kinds = list(KINDS) * repeats
    rng.shuffle(kinds)
    durations = [int(rng.integers(DURATION[k][0], DURATION[k][1] + 1)) for k in kinds]
    free = n_test - 60 - sum(durations) - 60 * len(kinds)
    if free < 0:
        raise ValueError(f"n_test={n_test} is too short for {len(kinds)} episodes: use at least {n_test - free}")
    # Random split of the free time into the gaps (Dirichlet), each gap >= 60 s.
    gaps = 60 + np.floor(rng.dirichlet(np.ones(len(kinds) + 1)) * free).astype(int)
    faults = {"stuck": ["outlet_pressure", "flow", "motor_current", "motor_temp", "speed"],
              "spike": list(FEATURES),
              "drift": ["inlet_pressure", "outlet_pressure", "flow", "motor_temp", "vibration"]}
    out, pos = [], n_train + gaps[0]
    for i, (kind, dur) in enumerate(zip(kinds, durations)):
        channel = str(rng.choice(faults[kind])) if kind in faults else ""
        out.append(Episode(kind, pos, pos + dur, channel, float(rng.uniform(0.15, 1.0))))
        pos += dur + gaps[i + 1]
    return out


def make_recording(seed: int, n_train: int = 400, n_test: int = 2600, jitter_s: float = 0.03,
                   missing: float = 0.005) -> tuple[pd.DataFrame, list[Episode]]:
    """One rig recording: (frame, episodes).

    The frame has ``sensor_id, timestamp`` (UTC), the 8 ``FEATURES``, ``is_anomaly`` (0/1) and
    ``anomaly_type`` ("" when normal), one row per kept reading in time order. Episodes index
    the full (gap-free) 1-s grid, before missing readings are removed.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    t = np.arange(n, dtype=np.float64)
    episodes = place_episodes(rng, n_train, n_test)

    # Shared operating point and slow disturbances.
    u = 1.0 + _ou(rng, n, tau=300.0, sd=0.02)             # speed set-point (fraction of nominal)
    level = _ou(rng, n, tau=600.0, sd=0.03)                # tank level effect on inlet pressure, bar
    grid = _ou(rng, n, tau=90.0, sd=1.5)                   # grid voltage wander, V
    valve = _ou(rng, n, tau=60.0, sd=0.004)                # small valve/system-curve wander

    # Process anomalies act on the true process (before the sensors).
    q_fac = np.ones(n)      # flow multiplier
    dp_fac = np.ones(n)     # head multiplier
    i_fac = np.ones(n)      # current multiplier
    p_in_add = np.zeros(n)  # inlet pressure offset, bar
    vib_add = np.zeros(n)   # vibration offset, mm/s
    vib_noise = np.zeros(n)  # extra vibration noise sd
    v_add = np.zeros(n)     # voltage offset, V
    for ep in episodes:
        s = ep.severity
        if ep.kind == "cavitation":
            r = _ramp(n, ep.start, ep.end, 8)
            p_in_add -= 0.3 * s * r
            vib_add += 1.2 * s * r
            vib_noise += 0.25 * s * r
            q_fac *= 1 - 0.04 * s * r
            dp_fac *= 1 - 0.05 * s * r
            i_fac *= 1 - 0.02 * s * r
        elif ep.kind == "blockage":
            b = 0.2 * s * _ramp(n, ep.start, ep.end, 10)
            q_fac *= 1 - b
            dp_fac *= 1 + 0.8 * b
            i_fac *= 1 - 0.35 * b
        elif ep.kind == "voltage_sag":
            v_add -= (6 + 24 * s) * _ramp(n, ep.start, ep.end, 2)

    v_true = 235.0 + grid + v_add
    q_true = 120.0 * u * (1 + valve) * q_fac
    p_in_true = 2.0 + level - 0.25 * ((q_true / 120.0) ** 2 - 1) + p_in_add
    dp_true = 4.0 * u ** 2 * (1 - 2.0 * valve) * dp_fac
    p_out_true = p_in_true + dp_true
    hyd = (q_true / 120.0) * (dp_true / 4.0)               # hydraulic power, fraction of nominal
    i_true = 12.0 * (0.35 + 0.65 * hyd) * (235.0 / v_true) ** 0.8 * i_fac
    v_true = v_true - 0.15 * (i_true - 12.0)               # supply droop under load
    speed_true = 1450.0 * u * (1 - 0.004 * (i_true - 12.0)) * (1 - 0.002 * np.maximum(235.0 - v_true, 0) / 10)
    vib_true = 2.0 * u ** 2 + vib_add
    # Motor temperature: first-order warm-up towards a load-dependent steady state.
    t_ss = 56.0 + 0.8 * (i_true - 12.0)
    temp = np.empty(n)
    temp[0] = 50.0
    a = np.exp(-1.0 / 2400.0)
    for k in range(1, n):
        temp[k] = a * temp[k - 1] + (1 - a) * t_ss[k]

    true = {"inlet_pressure": p_in_true, "outlet_pressure": p_out_true, "flow": q_true,
            "motor_current": i_true, "supply_voltage": v_true, "motor_temp": temp,
            "vibration": vib_true, "speed": speed_true}
    meas = {f: true[f] + rng.normal(0.0, NOISE[f], n) for f in FEATURES}
    meas["vibration"] = np.abs(meas["vibration"] + rng.normal(0.0, 1.0, n) * vib_noise)

    label = np.zeros(n, dtype=np.int8)
    kind = np.full(n, "", dtype=object)
    for ep in episodes:
        sl = slice(ep.start, ep.end)
        if ep.kind == "stuck":
            meas[ep.channel][sl] = meas[ep.channel][ep.start - 1]
        elif ep.kind == "spike":
            sign = rng.choice([-1.0, 1.0])
            meas[ep.channel][sl] += sign * (4 + 16 * ep.severity) * NOISE[ep.channel]
        elif ep.kind == "drift":
            dur = ep.end - ep.start
            meas[ep.channel][sl] += (rng.choice([-1.0, 1.0]) * (4 + 16 * ep.severity) * NOISE[ep.channel]
                                     * np.arange(1, dur + 1) / dur)
        label[sl] = 1
        kind[sl] = ep.kind

    times = START + pd.to_timedelta(t + rng.uniform(-jitter_s, jitter_s, n), unit="s")
    frame = pd.DataFrame({"sensor_id": SENSOR_ID, "timestamp": times})
    for f in FEATURES:
        frame[f] = np.round(meas[f] / RESOLUTION[f]) * RESOLUTION[f]
    frame["is_anomaly"], frame["anomaly_type"] = label, kind
    # Missing readings (a few short logger gaps), never inside the first 400 or an episode edge.
    drop = np.zeros(n, dtype=bool)
    starts = rng.choice(np.arange(10, n - 10), size=max(1, int(missing * n / 3)), replace=False)
    for s0 in starts:
        drop[s0:s0 + int(rng.integers(1, 4))] = True
    frame = frame[~drop].reset_index(drop=True)
    return frame, episodes


def training_frame(frame: pd.DataFrame, n_train: int = 400) -> pd.DataFrame:
    """The normal head of a recording in the shape ``sentinel.detect.training.fit_bundle`` takes:
    ``sensor_id, event_time`` + features + ``is_anomaly``."""
    head = frame[frame["timestamp"] < START + pd.Timedelta(seconds=n_train - 0.5)]
    return head.rename(columns={"timestamp": "event_time"}).drop(columns=["anomaly_type"]).reset_index(drop=True)


def test_part(frame: pd.DataFrame, n_train: int = 400) -> pd.DataFrame:
    """The scored part (everything after the training head)."""
    return frame[frame["timestamp"] >= START + pd.Timedelta(seconds=n_train - 0.5)].reset_index(drop=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-test", type=int, default=2600)
    p.add_argument("--out", default="")
    a = p.parse_args()
    frame, eps = make_recording(a.seed, a.n_train, a.n_test)
    for ep in eps:
        print(f"{ep.kind:<12} {ep.start:>5}-{ep.end:<5} {ep.channel:<16} severity {ep.severity:.2f}")
    print(frame.describe().T[["mean", "std", "min", "max"]].round(3))
    print(f"rows {len(frame)}, labelled {int(frame['is_anomaly'].sum())}")
    if a.out:
        out = frame.assign(timestamp=frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        out.to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
