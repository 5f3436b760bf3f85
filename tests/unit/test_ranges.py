"""Valid ranges learned per feature (detect.ranges) on hand-computed cases."""
import numpy as np
import pandas as pd
import pytest

from sentinel.detect.ranges import clean_frame, in_range, parse_configured, valid_ranges


def test_learned_range_is_min_max_widened_by_span_or_level():
    # min 1, max 3, median 2: h = max(5 * 2, 1 * 2) = 10
    assert valid_ranges(np.array([[1.0], [2.0], [3.0]]), ["a"], trim=0.0)["a"] == (-9.0, 13.0)


def test_a_few_garbage_readings_do_not_stretch_the_learned_range():
    v = np.concatenate([np.linspace(1.9, 2.1, 399), [65535.0]])[:, None]
    lo, hi = valid_ranges(v, ["inlet_pressure"])["inlet_pressure"]
    assert hi < 5 and not in_range(np.array([[65535.0]]), ["inlet_pressure"], {"inlet_pressure": (lo, hi)})[0]


def test_a_voltage_gets_its_own_range_not_a_pressure_one():
    v = np.array([[232.0, 40.0], [235.0, 41.0], [238.0, 42.0]])
    r = valid_ranges(v, ["supply_voltage", "pressure"], trim=0.0)
    assert r["supply_voltage"] == (232.0 - 235.0, 238.0 + 235.0)   # span 6 -> 30, level 235 -> h = 235
    assert r["pressure"] == (40.0 - 41.0, 42.0 + 41.0)             # span 2 -> 10, level 41 -> h = 41
    ok = in_range(np.array([[205.0, 41.0], [65535.0, 41.0]]), ["supply_voltage", "pressure"], r)
    assert ok.tolist() == [True, False]                            # a 30 V sag is scored, 65535 is garbage


def test_configured_bounds_win_one_side_at_a_time():
    assert valid_ranges(np.array([[1.0], [3.0]]), ["a"], {"a": [0.0, "auto"]}, trim=0.0)["a"] == (0.0, 13.0)
    assert parse_configured({"a": "[1, 2]", "b": [0, "auto"]}) == {"a": (1.0, 2.0), "b": (0.0, None)}


def test_constant_zero_channel_gets_plus_minus_one_and_nan_is_ignored():
    assert valid_ranges(np.array([[0.0], [0.0], [np.nan]]), ["a"])["a"] == (-1.0, 1.0)


def test_no_data_and_no_configuration_is_a_sentence_naming_the_feature():
    with pytest.raises(ValueError, match="feature b has no finite training value.*data.valid_ranges.b"):
        valid_ranges(np.array([[1.0, np.nan]]), ["a", "b"])
    assert valid_ranges(np.array([[1.0, np.nan]]), ["a", "b"], {"b": (0, 5)})["b"] == (0.0, 5.0)


def test_bad_configuration_is_rejected_with_a_sentence():
    with pytest.raises(ValueError, match="unknown feature"):
        valid_ranges(np.array([[1.0]]), ["a"], {"x": (0, 1)})
    with pytest.raises(ValueError, match="empty"):
        valid_ranges(np.array([[1.0]]), ["a"], {"a": (5, 1)})
    with pytest.raises(ValueError, match=r"data.valid_ranges.a must be \[lo, hi\]"):
        parse_configured({"a": [1, 2, 3]})


def test_in_range_rejects_non_finite_and_clean_frame_counts_the_dropped():
    r = {"a": (0.0, 1.0)}
    assert in_range(np.array([[0.5], [np.inf], [np.nan], [1.5]]), ["a"], r).tolist() == [True, False, False, False]
    frame = pd.DataFrame({"a": [0.5, 0.6, 9.0]})
    kept, ranges, dropped = clean_frame(frame, ["a"], ranges=r)
    assert kept["a"].tolist() == [0.5, 0.6] and dropped == 1 and ranges == {"a": [0.0, 1.0]}
