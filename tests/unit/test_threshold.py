"""Threshold calibration on hand-computed arrays."""
import numpy as np
import pytest

from sentinel.detect.threshold import MIN_SENSOR_WINDOWS, Threshold, calibrate


def test_mean_plus_k_std():
    th = calibrate(np.array([1.0, 2.0, 3.0, 4.0]), method="mean_std", k=3.0)
    assert th.value == pytest.approx(2.5 + 3 * np.sqrt(1.25))


def test_quantile_with_margin():
    th = calibrate(np.arange(101.0), method="quantile", quantile=0.9, margin=2.0)
    assert th.value == pytest.approx(180.0)


def test_per_sensor_falls_back_to_global_for_sparse_or_unknown_sensors():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, MIN_SENSOR_WINDOWS)
    b = rng.uniform(0, 10, MIN_SENSOR_WINDOWS)
    c = np.array([100.0])
    scores = np.concatenate([a, b, c])
    ids = np.array(["a"] * a.size + ["b"] * b.size + ["c"])
    th = calibrate(scores, ids, method="per_sensor", quantile=0.5)
    assert set(th.per_sensor) == {"a", "b"}
    got = th.for_sensors(np.array(["a", "b", "c", "zz"]))
    assert got[0] == pytest.approx(np.quantile(a, 0.5))
    assert got[1] == pytest.approx(np.quantile(b, 0.5))
    assert got[2] == got[3] == pytest.approx(np.quantile(scores, 0.5))


def test_json_round_trip_and_non_finite_scores_ignored():
    th = calibrate(np.array([1.0, np.nan, 3.0, np.inf]), method="quantile", quantile=1.0)
    assert th.value == 3.0
    again = Threshold.from_json(th.to_json())
    assert (again.method, again.value) == ("quantile", 3.0)


def test_no_scores_is_a_clear_error():
    with pytest.raises(ValueError, match="more normal history"):
        calibrate(np.array([]))
