"""The stuck-channel rule (detect.rules) by hand."""
import numpy as np

from sentinel.detect.rules import newest_runs, repeat_runs, stuck, stuck_limit


def test_repeat_runs_and_stuck_limit_by_hand():
    v = np.array([[1, 5], [1, 6], [1, 6], [2, 6], [2, 7]], dtype=float)
    assert repeat_runs(v).tolist() == [[1, 1], [2, 1], [3, 2], [1, 3], [2, 1]]
    assert stuck_limit(v, floor=5, factor=2.0).tolist() == [6, 6]
    assert stuck_limit(v, floor=1, factor=1.0).tolist() == [3, 3]
    assert repeat_runs(np.array([np.nan, np.nan])).ravel().tolist() == [1, 1]   # NaN never repeats


def test_stuck_limit_per_group_does_not_join_runs_across_sensors():
    v = np.array([1.0, 1.0, 1.0, 1.0])
    assert stuck_limit(v, floor=1, factor=1.0).tolist() == [4]
    assert stuck_limit(v, floor=1, factor=1.0, groups=np.array(["a", "a", "b", "b"])).tolist() == [2]


def test_newest_runs_and_stuck_on_windows():
    w = np.array([[[1.0], [2.0], [2.0], [2.0]],      # run of 3 at the newest step
                  [[3.0], [3.0], [3.0], [3.0]],      # all equal: 4
                  [[1.0], [1.0], [1.0], [2.0]]])     # the newest differs: 1
    assert newest_runs(w).ravel().tolist() == [3, 4, 1]
    assert stuck(w, np.array([3])).ravel().tolist() == [True, True, False]
