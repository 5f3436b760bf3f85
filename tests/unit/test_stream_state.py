"""The streaming window state of one bucket, without Spark: chunk encoding, bucket state,
and process_bucket's hand-off (the windows and rejects tables, the state it writes back).
Spark runs the same functions in tests/integration/test_stream_windows.py."""
import numpy as np
import pyarrow as pa
import pytest

from sentinel.config import load_settings
from sentinel.stream.chunks import (REJECT_BUCKET, bucket_of, decode_bucket_state, decode_tables,
                                    encode_bucket_state, encode_table, fixed_to_numpy, parse_chunks, readings_table)
from sentinel.stream.window_state import DUPLICATE_REASON, LATE_REASON, process_bucket

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
    """(sensor, seconds, value) -> the readings table the stream hands to the state."""
    return readings_table([r[0] for r in rows], np.array([r[1] * S for r in rows], dtype=np.int64),
                          np.array([[r[2]] for r in rows]), [f"line {i}" for i in range(len(rows))])


def test_chunk_tables_round_trip():
    t = readings(("a", 1, 2.0), ("b", 3, 4.0))
    back = decode_tables([encode_table(t), None, encode_table(t.slice(1))])
    assert back.column("sensor_id").to_pylist() == ["a", "b", "b"]
    assert fixed_to_numpy(back.column("values"), 1).ravel().tolist() == [2.0, 4.0, 4.0]
    assert decode_tables([None]) is None


def test_buckets_are_stable_and_in_range():
    ids = np.array([f"PT-{i:04d}" for i in range(500)], dtype=object)
    b = bucket_of(ids, 16)
    assert b.min() >= 0 and b.max() < 16 and len(set(b.tolist())) == 16
    assert bucket_of(ids[::-1], 16).tolist() == b[::-1].tolist()  # per id, not per position
    assert bucket_of(np.array(["PT-0001"], dtype=object), 16)[0] == 1244642405 % 16  # zlib.crc32(b"PT-0001"): must never change


def test_parse_chunks_splits_by_bucket_and_sends_bad_lines_to_the_reject_bucket():
    data = load_settings(None).data
    lines = ['{"sensor_id": "PT-%04d", "timestamp": "2026-01-01T00:0%d:00Z", "pressure": 40.5}' % (i, i)
             for i in range(6)] + ["garbage"]
    chunks = parse_chunks(lines, [None] * len(lines), data, 4)
    by_bucket = {b: decode_tables([blob]) for b, blob in zip(chunks["bucket"].to_pylist(), chunks["rows"].to_pylist())}
    bad = by_bucket.pop(REJECT_BUCKET)
    assert bad.column("raw").to_pylist() == ["garbage"] and bad.column("reason")[0].as_py().startswith("not_json")
    ids = sorted(x for t in by_bucket.values() for x in t.column("sensor_id").to_pylist())
    assert ids == [f"PT-{i:04d}" for i in range(6)]
    for b, t in by_bucket.items():
        assert set(bucket_of(np.array(t.column("sensor_id").to_pylist(), dtype=object), 4)) == {b}
        assert fixed_to_numpy(t.column("values"), 1).ravel().tolist() == [40.5] * t.num_rows


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


def test_old_checkpoints_are_refused_with_one_sentence():
    old = pa.table({"sensor_id": ["a"]}).replace_schema_metadata({"buckets": "8", "features": "1"})
    with pytest.raises(ValueError, match="older version .* new stream.checkpoint"):
        decode_bucket_state(encode_table(old), 8, 1)


def test_process_bucket_carries_windows_across_batches_and_rejects_late_and_duplicates():
    state = Cell()
    w, rej, warm = process_bucket(readings(("a", 0, 1.), ("b", 0, 10.), ("a", 60, 2.)), state, 3, 600 * S, 1, 4)
    assert (w.num_rows, rej.num_rows, warm) == (0, 0, 3)
    w, rej, warm = process_bucket(readings(("a", 120, 3.), ("b", 60, 11.), ("a", 60, 9.), ("a", 30, 9.)),
                                  state, 3, 600 * S, 1, 4)
    assert warm == 1  # b's second reading
    assert w.column("sensor_id").to_pylist() == ["a"] and w.column("event_time").to_pylist() == [120 * S]
    assert fixed_to_numpy(w.column("window"), 3).tolist() == [[1., 2., 3.]]
    assert (fixed_to_numpy(w.column("window_times"), 3) // S).tolist() == [[0, 60, 120]]
    assert fixed_to_numpy(w.column("values"), 1).tolist() == [[3.]]
    assert rej.column("status").to_pylist() == ["duplicate", "late"]
    assert rej.column("reason").to_pylist() == [DUPLICATE_REASON, LATE_REASON]
    assert rej.column("raw").to_pylist() == ["line 2", "line 3"]  # only rejects carry their line on
    assert rej.column("sensor_id").to_pylist() == ["a", "a"]
    ids, last, codes, times, _ = decode_bucket_state(state.get()[0], 4, 1)
    assert dict(zip(ids, last // S)) == {"a": 120, "b": 60}
    assert (times[codes == list(ids).index("a")] // S).tolist() == [60, 120]  # W-1 = 2 readings kept
