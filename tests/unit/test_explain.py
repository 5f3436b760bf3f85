"""detect.explain and scoring.score_details on hand-checked small arrays (a stand-in model, no Keras)."""
import numpy as np
import pandas as pd
import pytest

from sentinel.config import load_settings
from sentinel.detect import scoring
from sentinel.detect.batch import score_table
from sentinel.detect.explain import (detail_columns, error_steps, feature_shares, recent_share, shape_stats,
                                     to_units, window_details)
from sentinel.detect.model import Bundle
from sentinel.detect.threshold import Threshold
from sentinel.detect.windows import Scaler


def test_feature_shares_by_hand():
    sq = np.array([[[1.0, 0.0], [3.0, 0.0]],      # all of it in feature 0
                   [[1.0, 1.0], [0.0, 2.0]],      # 1 vs 3
                   [[0.0, 0.0], [0.0, 0.0]]])     # no error: uniform
    np.testing.assert_allclose(feature_shares(sq), [[1.0, 0.0], [0.25, 0.75], [0.5, 0.5]])


def test_recent_share_and_error_steps_by_hand():
    e = np.array([[0.0, 0.0, 1.0, 3.0],
                  [1.0, 1.0, 1.0, 1.0],
                  [5.0, 0.0, 0.0, 0.0],
                  [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(recent_share(e, 2), [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(recent_share(e, 1), [0.75, 0.25, 0.0, 0.0])
    # newest steps holding 80 %: 3/4 < .8 so 2; 3.2 of 4 needs all 4; the oldest step: 4; none
    assert error_steps(e).tolist() == [2, 4, 4, 0]


def test_shape_of_a_burst_a_stuck_sensor_and_a_released_one():
    burst = [10.0, 10.1, 10.0, 10.1, 10.0, 10.1, 10.0, 0.0]   # noise 0.1, then a 10 m drop
    stuck = [1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0, 5.0]          # four unchanged steps at the end
    released = [1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 4.0, 5.0]       # flat in the middle, moving again
    s = shape_stats(np.array([burst, stuck, released]), recent=2)
    assert s["jump"][0] == pytest.approx(-10.0)
    assert s["jump_ratio"][0] == pytest.approx(100.0, rel=1e-6)          # 10 / median |0.1|
    assert s["roughness"][0] == pytest.approx(50.5, rel=1e-6)            # median(0.1, 10) / 0.1
    assert s["flat_steps"].tolist() == [0, 4, 3]
    assert s["jump_ratio"][1] == 0.0 and s["roughness"][1] == 0.0        # a flat line does not move
    assert s["jump"][2] == pytest.approx(1.0)


def test_typical_change_is_floored_by_the_sensor_scale():
    flat = np.full((1, 6), 3.0)
    flat[0, -1] = 3.5
    s = shape_stats(flat, recent=1, scale=np.array([2.0]))       # floor 0.01 * 2 = 0.02
    assert s["jump_ratio"][0] == pytest.approx(0.5 / 0.02)


def test_window_details_univariate_and_multivariate():
    w = np.array([[[40.0, 1.0], [40.0, 1.0], [40.0, 1.0], [35.0, 1.5]]])   # pressure drops 5, flow rises
    expected = np.array([[[40.0, 1.0]] * 4])
    sq = np.zeros((1, 4, 2))
    sq[0, 3] = [1.0, 3.0]                                                  # flow carries 3/4 of it
    d = window_details(w, expected, sq, recent_steps=2)
    assert d.top_feature.tolist() == [1]
    np.testing.assert_allclose(d.feature_share, [[0.25, 0.75]])
    np.testing.assert_allclose(d.expected, [[40.0, 1.0]])
    np.testing.assert_allclose(d.observed, [[35.0, 1.5]])
    assert d.deviation.tolist() == [pytest.approx(0.5)]                     # of the top feature
    assert d.error_steps.tolist() == [1] and d.recent_share.tolist() == [1.0]
    f = d.frame(["pressure", "flow"])
    assert list(f.columns) == detail_columns(["pressure", "flow"])
    assert f["top_feature"].tolist() == ["flow"]
    empty = window_details(np.empty((0, 4, 2)), np.empty((0, 4, 2)), np.empty((0, 4, 2)))
    assert len(empty) == 0 and list(empty.frame(["a", "b"]).columns) == detail_columns(["a", "b"])


def test_to_units_inverts_the_scaler():
    scaled = np.array([[[1.0], [-0.5]]])
    np.testing.assert_allclose(to_units(scaled, np.array([[10.0]]), np.array([[2.0]])), [[[12.0], [9.0]]])


def _stand_in_bundle():
    """A Bundle whose 'model' reconstructs every window as its sensor's mean (scaled 0)."""
    manifest = {"features": ["pressure"], "version": "v1", "units": "mca",
                "window": {"length": 4, "calendar": False, "max_gap_s": 1800, "interval_s": 300},
                "score": {"reduce": "mean", "recent_steps": 0, "recent_ratio": 0.0}}
    scaler = Scaler(["pressure"], [0.0], [1.0], {"a": (np.array([10.0]), np.array([2.0]))})
    return Bundle("", lambda inputs: np.zeros_like(inputs[0]), scaler, Threshold("quantile", 1.0), manifest)


@pytest.fixture
def stand_in(monkeypatch):
    # the stand-in model is a plain function of the model inputs (Orion's dummy pipeline idea)
    monkeypatch.setattr(scoring, "reconstruct", lambda model, inputs, batch=scoring.PREDICT_BATCH: model(inputs))
    return _stand_in_bundle()


def test_score_details_scores_equal_score_windows_and_explain_them(stand_in):
    w = np.array([[[10.0], [10.0], [12.0], [14.0]]])            # scaled 0, 0, 1, 2
    t = np.zeros((1, 4), dtype=np.int64)
    d = scoring.score_details(stand_in, w, t, np.array(["a"]))
    np.testing.assert_allclose(d.scores, [(0 + 0 + 1 + 4) / 4])
    np.testing.assert_array_equal(d.scores, scoring.score_windows(stand_in, w, t, np.array(["a"])))
    np.testing.assert_allclose(d.explain.expected, [[10.0]])   # the sensor's mean, in metres
    assert d.explain.deviation.tolist() == [4.0]
    assert d.explain.error_steps.tolist() == [1]               # the newest step holds 4 of 5 = 80 %
    assert list(d.frame(["pressure"]).columns) == ["score"] + detail_columns(["pressure"])


def test_score_table_details_adds_columns_and_changes_nothing_else(stand_in):
    times = pd.date_range("2026-01-20", periods=6, freq="5min", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    frame = pd.DataFrame({"sensor_id": "a", "timestamp": times, "pressure": [10, 10, 10, 10, 12, 16.0]})
    settings = load_settings(None)
    plain = score_table(stand_in, frame, settings)
    rich = score_table(stand_in, frame, settings, details=True)
    assert list(rich.columns) == list(plain.columns) + detail_columns(["pressure"])
    pd.testing.assert_frame_equal(rich[plain.columns], plain)
    assert rich["expected_pressure"].isna().tolist() == [True, True, True, False, False, False]
    assert rich["deviation"].tolist()[3:] == [0.0, 2.0, 6.0]
    assert rich["top_feature"].tolist()[3:] == ["pressure"] * 3
