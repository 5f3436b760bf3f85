"""Metrics on small hand-checked cases."""
import pandas as pd
import pytest

from sentinel.detect.evaluate import detected_episodes, episode_metrics, episodes_from_labels, point_metrics

T = pd.Timestamp("2026-01-01T00:00:00Z")
M = pd.Timedelta(minutes=1)


def test_point_metrics_by_hand():
    y = [0, 0, 1, 1, 1, 0, 0, 0]
    p = [0, 1, 1, 1, 0, 0, 0, 0]
    m = point_metrics(y, p)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 4)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["false_alarm_rate"] == pytest.approx(1 / 5)
    assert m["missed_alarm_rate"] == pytest.approx(1 / 3)


def test_episodes_from_labels_finds_runs_per_sensor():
    f = pd.DataFrame({"sensor_id": ["a"] * 6 + ["b"] * 3,
                      "timestamp": [T + i * M for i in range(6)] + [T + i * M for i in range(3)],
                      "is_anomaly": [0, 1, 1, 0, 1, 0, 1, 1, 1],
                      "anomaly_type": ["", "leak", "leak", "", "spike", "", "stuck", "stuck", "stuck"]})
    ep = episodes_from_labels(f)
    assert ep[["sensor_id", "anomaly_type"]].values.tolist() == [["a", "leak"], ["a", "spike"], ["b", "stuck"]]
    assert ep["start"].tolist() == [T + M, T + 4 * M, T]
    assert ep["end"].tolist() == [T + 2 * M, T + 4 * M, T + 2 * M]


def test_episode_recall_precision_delay_by_hand():
    truth = pd.DataFrame({"sensor_id": ["a", "a", "b"], "anomaly_type": ["leak", "spike", "burst"],
                          "start": [T + 10 * M, T + 100 * M, T + 50 * M],
                          "end": [T + 20 * M, T + 100 * M, T + 60 * M]})
    flags = pd.DataFrame({"sensor_id": ["a", "a", "a", "b", "b"],
                          "timestamp": [T + 13 * M, T + 14 * M, T + 23 * M,   # leak found (delay 3 min), run continues after end
                                        T + 200 * M, T + 201 * M]})         # b: false alarm, burst missed
    m = episode_metrics(truth, flags, tolerance=5 * M, merge_gap=2 * M, sensor_days=2.0)
    assert (m["episodes"], m["episodes_found"]) == (3, 1)
    assert m["episode_recall"] == pytest.approx(1 / 3)
    # detected: a[13-14], a[23] (within tolerance after leak end -> true), b[200-201] false
    assert (m["detected_episodes"], m["false_episodes"]) == (3, 1)
    assert m["episode_precision"] == pytest.approx(2 / 3)
    assert m["per_type"]["leak"]["mean_delay_s"] == 180
    assert m["per_type"]["burst"]["recall"] == 0
    assert m["false_alarms_per_sensor_day"] == pytest.approx(0.5)


def test_detected_episodes_merge_close_flags():
    flags = pd.DataFrame({"sensor_id": ["a"] * 4, "timestamp": [T, T + M, T + 10 * M, T + 11 * M]})
    det = detected_episodes(flags, merge_gap=2 * M)
    assert det["n_flags"].tolist() == [2, 2]
    assert len(detected_episodes(flags, merge_gap=20 * M)) == 1
