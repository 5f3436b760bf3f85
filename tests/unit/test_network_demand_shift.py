"""The network simulator's lasting demand shift (Net1, two or three days: about a second each)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sentinel.ingest.network import NetworkSimError, simulate_network

QUIET = {"leaks_per_week": 0.0, "faults_per_week": 0.0, "operational_per_week": 0.0}
START = pd.Timestamp("2026-01-05T00:00:00Z")


def _sim(**kw):
    args = {"network": "Net1", "days": 2, "seed": 3, "cache": False, **QUIET}
    args.update(kw)
    return simulate_network(**args)


def _wide(sim) -> pd.DataFrame:
    return sim.readings.pivot(index="timestamp", columns="sensor_id", values="pressure")


@pytest.fixture(scope="module")
def unshifted():
    return _sim()


def test_more_demand_lowers_pressure_from_shift_at_on_and_nothing_before(unshifted):
    base, up = _wide(unshifted), _wide(_sim(demand_shift=0.15, shift_at=1.0))
    at = START + pd.Timedelta(days=1)
    before, after = base.index < at, base.index >= at
    pd.testing.assert_frame_equal(up[before], base[before])
    delta = up[after] - base[after]
    # more demand, more head loss: lower pressure at most sensors, and clearly so network-wide
    assert (delta.median() < 0).mean() >= 0.8
    assert float(np.median(delta.to_numpy())) < -0.3
    assert (delta.abs().max() > 0.5).all()  # every sensor sees it


def test_less_demand_raises_pressure(unshifted):
    base, down = _wide(unshifted), _wide(_sim(demand_shift=-0.15, shift_at=1.0))
    after = base.index >= START + pd.Timedelta(days=1)
    assert float(np.median((down[after] - base[after]).to_numpy())) > 0.3


def test_shift_at_as_timestamp_or_days_and_recorded_in_info(unshifted):
    a = _sim(demand_shift=0.15, shift_at=1.5)
    b = _sim(demand_shift=0.15, shift_at="2026-01-06T12:00:00")  # naive = UTC
    pd.testing.assert_frame_equal(a.readings, b.readings)
    assert a.info["demand_shift"] == 0.15 and a.info["shift_at"] == pd.Timestamp("2026-01-06T12:00:00Z")
    assert unshifted.info["shift_at"] is None and unshifted.info["demand_shift"] == 0.0


def test_events_before_the_shift_are_those_of_the_unshifted_run():
    kw = {"days": 3, "leaks_per_week": 10.0, "faults_per_week": 10.0, "operational_per_week": 3.0}
    base, up = _sim(**kw), _sim(demand_shift=0.15, shift_at=2.0, **kw)
    at = START + pd.Timedelta(days=2)
    done = base.events[base.events["end"] < at]
    assert len(done) >= 2  # the test needs events before the shift
    pd.testing.assert_frame_equal(up.events[up.events["end"] < at], done)
    # readings are identical until the first event still running at the shift (it is sized on what it sees)
    spans = up.events[(up.events["end"] >= at) & (up.events["start"] < at)]
    cut = min([at, *spans["start"]])
    ra, rb = base.readings, up.readings
    pd.testing.assert_frame_equal(rb[rb["timestamp"] < cut], ra[ra["timestamp"] < cut])
    assert base.info["mean_demand_lps"] == up.info["mean_demand_lps"]


def test_only_a_shift_enters_the_cache_key(tmp_path):
    kw = {"network": "Net1", "days": 2, "seed": 3, "cache_dir": tmp_path, **QUIET}
    simulate_network(**kw, demand_shift=0.0, shift_at=1.0)
    assert len(list(tmp_path.glob("Net1-*.pkl"))) == 1
    assert simulate_network(**kw).info["cache_hit"]  # no shift = the key of runs made before shifts existed
    shifted = simulate_network(**kw, demand_shift=0.15, shift_at=1.0)
    assert not shifted.info["cache_hit"] and len(list(tmp_path.glob("Net1-*.pkl"))) == 2
    assert not simulate_network(**kw, demand_shift=0.15, shift_at=1.5).info["cache_hit"]
    assert simulate_network(**kw, demand_shift=0.15, shift_at="2026-01-06T00:00:00Z").info["cache_hit"]


@pytest.mark.parametrize("kw, words", [
    ({"demand_shift": -1.0}, "demand_shift must be a fraction above -1"),
    ({"demand_shift": float("nan")}, "demand_shift must be a fraction above -1"),
    ({"demand_shift": "lots"}, "demand_shift must be a number"),
    ({"demand_shift": 0.1, "shift_at": 2.0}, "shift_at must lie within the simulated series"),
    ({"demand_shift": 0.1, "shift_at": "2026-01-04T00:00:00Z"}, "shift_at must lie within the simulated series"),
    ({"demand_shift": 0.1, "shift_at": "next tuesday"}, "shift_at must be a timestamp or days from start"),
])
def test_bad_shifts_are_one_sentence_errors(kw, words):
    with pytest.raises(NetworkSimError) as err:
        simulate_network("Net1", days=2, cache=False, **kw)
    msg = str(err.value)
    assert msg.startswith(words) and "\n" not in msg and msg.count(". ") == 0
