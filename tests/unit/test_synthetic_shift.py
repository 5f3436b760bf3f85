"""The synthetic network's demand shift (benchmarks/lifecycle_shift.py): same readings before it,
more head loss (lower pressure) after it, in proportion to demand, and no labels."""
import numpy as np
import pandas as pd

from sentinel.ingest.synthetic import simulate


def test_demand_shift_lowers_pressure_from_its_start_only():
    base = simulate(3, 4, seed=7, anomalies_per_sensor_week=0)
    shifted = simulate(3, 4, seed=7, anomalies_per_sensor_week=0, demand_shift=0.15, shift_at="2026-01-07T00:00:00Z")
    t = base.readings["timestamp"]
    d = (shifted.readings["pressure"] - base.readings["pressure"]).to_numpy()
    before = (t < pd.Timestamp("2026-01-07T00:00:00Z")).to_numpy()
    assert np.abs(d[before]).max() == 0.0
    assert (d[~before] < 0).all() and -1.5 < d[~before].min() < -0.5  # 15 % of a 4-9 m swing at the peaks
    assert shifted.readings["is_anomaly"].sum() == 0
