"""DriftAdapter: bounded, gated level/slope tracking; EWMA (detect.adapt)."""
import json

import numpy as np
import pytest

from sentinel.detect.adapt import DriftAdapter, ewma, residual_trend


def test_ewma_by_hand_and_streaming_continuation():
    assert ewma(np.array([0.0, 10.0, 10.0]), 0.5, init=0.0).tolist() == [0.0, 5.0, 7.5]
    a = ewma(np.array([0.0, 10.0]), 0.5, init=0.0)
    assert ewma(np.array([10.0]), 0.5, init=a[-1]).tolist() == [7.5]
    with pytest.raises(ValueError):
        ewma(np.array([1.0]), 0.0)


def test_one_normal_reading_moves_the_level_by_gain_times_residual_clipped():
    ad = DriftAdapter(2, gain=0.1, max_step=0.15, channel_limit=100)
    taught = ad.update("s", np.array([1.0, 5.0]), score=0.0, threshold=9.0)
    assert taught.tolist() == [True, True]
    assert ad.offset("s").tolist() == pytest.approx([0.1, 0.15])   # 0.5 clipped to max_step


def test_grey_zone_and_big_residuals_do_not_teach():
    ad = DriftAdapter(1, gain=0.1, channel_limit=2.5)
    assert not ad.update("s", np.array([1.0]), score=6.0, threshold=9.0).any()   # >= 0.5 * threshold
    assert not ad.update("s", np.array([2.6]), score=1.0, threshold=9.0).any()   # over channel_limit
    assert ad.offset("s").tolist() == [0.0]


def _run(ad, signal, rng, threshold=9.0):
    flags, levels = [], []
    for x in signal:
        r = x + rng.normal() - ad.offset("s")
        s = float(r[0] ** 2)
        ad.update("s", r, s, threshold)
        flags.append(s > threshold)
        levels.append(ad.state("s").level[0])
    return np.array(flags), np.array(levels)


@pytest.mark.parametrize("freeze", ["sensor", "implicated"])
def test_never_adapts_into_a_sustained_drop(freeze):
    """A leak: 300 normal readings, then the level drops by 6 sd for 600 readings."""
    rng = np.random.default_rng(0)
    sig = np.concatenate([np.zeros(300), np.full(600, -6.0)])[:, None]
    flags, levels = _run(DriftAdapter(1, gain=0.05, freeze=freeze), sig, rng)
    assert flags[300:].mean() > 0.99                      # alarms as long as the drop lasts
    assert abs(levels[-1] - levels[300]) < 1e-12          # the level did not move into the drop
    assert abs(levels[299]) < 0.5


def test_ramp_faster_than_the_bound_alarms_and_stays_alarmed():
    rng = np.random.default_rng(1)
    ramp = np.concatenate([np.zeros(300), -0.05 * np.arange(1, 201), np.full(500, -10.0)])[:, None]
    flags, levels = _run(DriftAdapter(1, gain=0.05), ramp, rng)
    first = 300 + int(np.argmax(flags[300:]))
    assert first < 360                                    # crosses 3 sd within ~60 readings
    assert flags[first + 60:].mean() > 0.99               # and stays alarmed
    assert abs(levels[-1]) < 1.5                          # absorbed at most a little of the ramp


def test_slow_drift_is_followed_without_alarms():
    rng = np.random.default_rng(2)
    drift = (0.001 * np.arange(4000))[:, None]            # 4 sd over 4000 readings
    flags, levels = _run(DriftAdapter(1, gain=0.05), drift, rng)
    assert flags.mean() < 0.01
    assert levels[-1] == pytest.approx(4.0, abs=0.5)


def test_frozen_level_coasts_along_its_slope_then_stops():
    ad = DriftAdapter(1, gain=0.02, max_slope=1.0, init_slope=np.array([0.01]), max_coast=100, holdoff=5)
    for _ in range(150):                                  # an alarm open for 150 readings
        ad.update("s", np.array([0.0]), score=10.0, threshold=1.0)
    assert ad.state("s").level[0] == pytest.approx(1.0)   # 100 readings of slope, then it stood still
    for _ in range(5):                                    # holdoff readings close the alarm
        ad.update("s", np.array([0.0]), score=0.0, threshold=1.0, alarm=False)
    assert not ad.state("s").alarm_open and not ad.state("s").frozen.any()


def test_implicated_mode_keeps_uninvolved_features_learning():
    ad = DriftAdapter(2, gain=0.1, freeze="implicated", channel_limit=3.0)
    ad.update("s", np.array([5.0, 1.0]), score=25.0, threshold=9.0)          # feature 0 breaks
    assert ad.update("s", np.array([0.0, 1.0]), score=25.0, threshold=9.0).tolist() == [False, True]
    sensor = DriftAdapter(2, gain=0.1, freeze="sensor")
    sensor.update("s", np.array([5.0, 1.0]), score=25.0, threshold=9.0)
    assert not sensor.update("s", np.array([0.0, 1.0]), score=25.0, threshold=9.0).any()


def test_max_offset_caps_the_level():
    ad = DriftAdapter(1, gain=1.0, max_step=10.0, max_offset=2.0, channel_limit=100)
    for _ in range(10):
        ad.update("s", np.array([5.0]) - ad.offset("s"), score=0.0, threshold=9.0)
    assert ad.offset("s")[0] == 2.0


def test_state_and_start_values_round_trip_through_json():
    ad = DriftAdapter(2, gain=np.array([0.02, 0.0]), slope_gain=1e-4, init_slope=np.array([0.01, 0.0]))
    ad.update("a", np.array([1.0, 1.0]), score=0.0, threshold=9.0)
    again = DriftAdapter.from_dict(json.loads(json.dumps(ad.to_dict())), 2)
    assert again.offset("a").tolist() == ad.offset("a").tolist()
    assert again.state("a").slope.tolist() == ad.state("a").slope.tolist()
    assert np.asarray(again.gain).tolist() == [0.02, 0.0]
    assert again.offset("new").tolist() == ad.offset("new").tolist() == pytest.approx([0.01, 0.0])  # init slope kept


def test_residual_trend_keeps_only_significant_slopes():
    t = np.arange(400.0)
    rng = np.random.default_rng(3)
    r = np.column_stack([0.01 * t + rng.normal(size=400), rng.normal(size=400)])
    level, slope = residual_trend(r)
    assert slope[0] == pytest.approx(0.01, abs=0.002) and slope[1] == 0.0
    assert level[0] == pytest.approx(0.01 * 399 + r[:, 0].mean() - 0.01 * 199.5, abs=0.3)
