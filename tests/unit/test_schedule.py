"""infer_interval / adapt_schedule on hand-computed cases."""
import numpy as np
import pandas as pd
import pytest

from sentinel.detect.schedule import TrainingDataError, adapt_schedule, infer_interval, min_readings

S = 1_000_000_000


def test_interval_is_the_median_positive_step_despite_gaps_and_duplicates():
    t = np.array([0, 1, 2, 3, 10, 11, 11], dtype=np.int64) * S   # steps 1 1 1 7 1 (0 ignored)
    assert infer_interval(t) == 1.0


def test_interval_with_jitter_and_pandas_timestamps():
    rng = np.random.default_rng(0)
    t = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(500) + rng.uniform(-0.03, 0.03, 500), unit="s")
    assert infer_interval(t.to_numpy()) == pytest.approx(1.0, abs=0.01)
    assert infer_interval(pd.Series(t).to_numpy()) == pytest.approx(1.0, abs=0.01)


def test_interval_per_sensor_ignores_steps_between_sensors():
    t = np.array([0, 300, 600, 5, 305, 605], dtype=np.int64) * S
    g = np.array(["a", "a", "a", "b", "b", "b"])
    assert infer_interval(t, g) == 300.0
    assert infer_interval(t) == 5.0  # mixed up without groups: why groups matter


def test_interval_needs_two_distinct_times():
    with pytest.raises(TrainingDataError, match="two readings"):
        infer_interval(np.array([5, 5], dtype=np.int64))


def test_schedule_for_400_readings():
    s = adapt_schedule(400, length=32, stride=4, epochs=12, validation_fraction=0.2, batch_size=256, patience=3)
    # length cap: 400 * 0.75 // 12 = 25; validation: (100 + 24) / 400 = 0.31 -> 124 readings
    assert (s.length, s.validation_fraction) == (25, 0.31)
    assert (s.train_windows, s.validation_windows) == (276 - 24, 124 - 24)
    # stride 1 (252 < 8000 windows); batch 252 // 8 = 31; ceil(252/31) = 9 steps -> ceil(600/9) = 67 epochs
    assert (s.stride, s.batch_size, s.epochs, s.patience) == (1, 31, 67, 6)
    assert len(s.notes) == 4


def test_weeks_of_history_keep_the_configured_schedule():
    s = adapt_schedule(4032, n_sensors=20)            # 14 days of 5-minute readings, 20 sensors
    assert (s.length, s.stride, s.validation_fraction, s.batch_size, s.epochs, s.patience) == (32, 4, 0.2, 256, 12, 3)
    assert s.notes == () and s.train_windows == (3226 - 31) * 20


def test_too_short_says_the_minimum_and_why():
    assert min_readings() == 120
    with pytest.raises(TrainingDataError, match=r"100 readings \(100 s\); training needs at least 120 .*windows of at least 8"):
        adapt_schedule(100, interval_s=1.0)
    assert adapt_schedule(120).length == 8
