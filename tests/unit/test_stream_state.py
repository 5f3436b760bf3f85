"""The streaming window state of one bucket, without Spark: encoding, and process_bucket's
hand-off (packed rows, statuses, the state it writes back). Spark runs the same function in
tests/integration/test_stream_windows.py."""
import numpy as np
import pandas as pd
import pytest

from sentinel.stream import (DUPLICATE_REASON, LATE_REASON, decode_bucket_state, encode_bucket_state,
                             pack_rows, process_bucket, unpack_rows)

S = 1_000_000_000


class Cell:
    """Holds one value, with ValueState's get/update (None when empty)."""

    def __init__(self):
        self.value = None

    def get(self):
        return self.value

    def update(self, value):
        self.value = value


def readings(*rows):
    """(sensor, seconds, value) -> the parsed frame the stream hands to the state."""
    return pd.DataFrame({"sensor_id": [r[0] for r in rows],
                         "event_time": pd.to_datetime([r[1] * S for r in rows], utc=True),
                         "values": list(pack_rows(np.array([[r[2]] for r in rows]), np.float64)),
                         "raw": [f"line {i}" for i in range(len(rows))]})


def test_packed_rows_round_trip():
    m = np.arange(12.0).reshape(4, 3)
    assert unpack_rows(pack_rows(m, np.float64), np.float64, 3).tolist() == m.tolist()
    t = np.array([[1, -2], [3, 2**62]])
    assert unpack_rows(pack_rows(t, np.int64), np.int64, 2).tolist() == t.tolist()


def test_bucket_state_round_trip_and_settings_check():
    blob = encode_bucket_state(np.array(["a", "b", "c"], dtype=object), np.array([5, 9, 2]),
                               np.array([0, 0, 2]), np.array([4, 5, 2]), np.array([[1., 2.], [3., 4.], [5., 6.]]), 8)
    ids, last, codes, times, values = decode_bucket_state(blob, 8, 2)
    assert ids.tolist() == ["a", "b", "c"] and last.tolist() == [5, 9, 2]
    assert codes.tolist() == [0, 0, 2] and times.tolist() == [4, 5, 2]
    assert values.tolist() == [[1., 2.], [3., 4.], [5., 6.]]
    with pytest.raises(ValueError, match="state_buckets is 16 but the checkpoint was written with 8"):
        decode_bucket_state(blob, 16, 2)
    with pytest.raises(ValueError, match="1 feature"):
        decode_bucket_state(blob, 8, 1)


def test_process_bucket_carries_windows_across_batches_and_rejects_late_and_duplicates():
    state = Cell()
    first = process_bucket(readings(("a", 0, 1.), ("b", 0, 10.), ("a", 60, 2.)), state, 3, 600 * S, 1, 4)
    assert first["status"].tolist() == ["warmup"] * 3
    assert first["raw"].isna().all()  # scored or warming up: the raw line stays behind
    second = process_bucket(readings(("a", 120, 3.), ("b", 60, 11.), ("a", 60, 9.), ("a", 30, 9.)),
                            state, 3, 600 * S, 1, 4)
    assert second["status"].tolist() == ["window", "warmup", "duplicate", "late"]
    assert second["reject_reason"].tolist()[2:] == [DUPLICATE_REASON, LATE_REASON]
    assert second["raw"].tolist()[2:] == ["line 2", "line 3"]
    assert unpack_rows([second["window"][0]], np.float64, 3).tolist() == [[1., 2., 3.]]
    assert (unpack_rows([second["window_times"][0]], np.int64, 3) // S).tolist() == [[0, 60, 120]]
    ids, last, codes, times, _ = decode_bucket_state(state.get()[0], 4, 1)
    assert dict(zip(ids, last // S)) == {"a": 120, "b": 60}
    assert (times[codes == list(ids).index("a")] // S).tolist() == [60, 120]  # W-1 = 2 readings kept
