"""Window state: each sensor's newest W-1 readings, kept by ``transformWithStateInPandas``.

Sensors share state buckets so that one call assembles the windows of many sensors at once
(``windows.assemble_many``, the same function as the batch path). The state is also where
duplicates and late readings are caught: a reading at the same time as, or older than, the
newest one accepted for its sensor becomes a ``duplicate`` or ``late`` reject. A Spark
watermark with ``dropDuplicatesWithinWatermark`` would drop such rows without a trace, so there
is none; state stays bounded anyway (W-1 readings per sensor).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sentinel.detect.windows import LATE, STATUS_NAMES
from sentinel.stream.chunks import (REJECT_BUCKET, _fixed, decode_bucket_state, decode_tables, encode_bucket_state,
                                    encode_table, fixed_to_numpy, rejects_table)

STAGED_SCHEMA = "bucket int, n_events long, n_warmup long, windows binary, rejects binary"
LATE_REASON = "late: older than the newest reading already scored for this sensor"
DUPLICATE_REASON = "duplicate: same sensor and event time as an accepted reading"


class WindowProcessor:
    """Window state for ``transformWithStateInPandas``, keyed by state bucket.

    Sensors are hashed into ``stream.state_buckets`` buckets; a bucket's state holds the
    newest W-1 readings and newest accepted event time of each of its sensors. One call per
    bucket per micro-batch assembles every window of the bucket's sensors at once
    (``windows.assemble_many``, the batch path's code), so the cost per micro-batch is a few
    state reads and writes and numpy passes, not a Python call and state round trip per
    sensor. A failure fails the micro-batch, which Spark re-runs from the checkpoint (state is
    only committed with the batch).
    """

    def __new__(cls, *args, **kwargs):
        # Subclass StatefulProcessor lazily so this module imports without pyspark.
        from pyspark.sql.streaming import StatefulProcessor

        impl = type("WindowProcessorImpl", (StatefulProcessor,), dict(cls._methods()))
        obj = impl()
        obj._setup(*args, **kwargs)
        return obj

    @staticmethod
    def _methods():
        def _setup(self, length: int, max_gap_ns: int, n_features: int, buckets: int):
            self.length, self.max_gap_ns, self.n_features, self.buckets = length, max_gap_ns, n_features, buckets

        def init(self, handle):
            from pyspark.sql.types import BinaryType, StructField, StructType
            self.state = handle.getValueState("windows", StructType([StructField("tails", BinaryType())]))

        def handleInputRows(self, key, rows, timerValues):
            table = decode_tables(b for pdf in rows for b in pdf["rows"])
            bucket = int(key[0])
            if bucket == REJECT_BUCKET:  # malformed lines: no state, straight to the reject store
                yield pd.DataFrame({"bucket": [bucket], "n_events": [table.num_rows], "n_warmup": [0],
                                    "windows": [None], "rejects": [encode_table(table)]})
                return
            windows, rejects, n_warmup = process_bucket(table, self.state, self.length, self.max_gap_ns,
                                                        self.n_features, self.buckets)
            yield pd.DataFrame({"bucket": [bucket], "n_events": [table.num_rows], "n_warmup": [n_warmup],
                                "windows": [encode_table(windows) if windows.num_rows else None],
                                "rejects": [encode_table(rejects) if rejects.num_rows else None]})

        def close(self):
            pass

        return {"_setup": _setup, "init": init, "handleInputRows": handleInputRows, "close": close}


def process_bucket(readings, state, length: int, max_gap_ns: int, n_features: int, buckets: int):
    """One bucket's new readings (a readings table) + its state -> (windows table, rejects
    table, number of warm-up readings); updates ``state`` (anything with ``get()``/``update()``
    like Spark's ValueState).

    The windows table has one row per reading that completed a window: ``sensor_id``,
    ``event_time`` (ns), ``values``, ``window`` (W*F values), ``window_times`` (W ns).
    Late and duplicate readings become rejects; the rest warm up.
    """
    import pyarrow as pa
    from sentinel.detect.windows import NO_TIME, WARMUP, assemble_many
    stored = state.get()
    if stored is not None:
        ids, last, tail_c, tail_t, tail_v = decode_bucket_state(stored[0], buckets, n_features)
    else:
        ids, last = np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
        tail_c, tail_t, tail_v = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64),
                                  np.empty((0, n_features)))
    known = pd.Index(ids)
    batch_ids = readings.column("sensor_id").to_numpy(zero_copy_only=False).astype(object)
    codes = known.get_indexer(batch_ids)
    if (codes < 0).any():  # sensors new to this bucket
        new_ids = pd.unique(batch_ids[codes < 0])
        known = known.append(pd.Index(new_ids))
        last = np.concatenate([last, np.full(len(new_ids), NO_TIME, dtype=np.int64)])
        codes = known.get_indexer(batch_ids)
    t_ns = readings.column("event_time").to_numpy()
    vals = fixed_to_numpy(readings.column("values"), n_features)
    res = assemble_many(codes, t_ns, vals, tail_c, tail_t, tail_v, last, length, max_gap_ns)
    state.update((encode_bucket_state(known.to_numpy(dtype=object), res.last_time, res.tail_codes,
                                      res.tail_times, res.tail_values, buckets),))
    has = np.flatnonzero(res.window_row >= 0)
    rows = res.window_row[has]
    windows = pa.table({"sensor_id": pa.array(batch_ids[has], pa.string()),
                        "event_time": pa.array(t_ns[has], pa.int64()),
                        "values": _fixed(vals[has]),
                        "window": _fixed(res.windows[rows].reshape(len(rows), length * n_features)),
                        "window_times": _fixed(res.window_times[rows])})
    bad = np.flatnonzero(res.status >= LATE)  # late, duplicate
    status = np.array([STATUS_NAMES[c] for c in range(len(STATUS_NAMES))], dtype=object)[res.status[bad]]
    reasons = np.where(res.status[bad] == LATE, LATE_REASON, DUPLICATE_REASON)
    rejects = rejects_table(readings.column("raw").take(pa.array(bad)), reasons.tolist(), batch_ids[bad],
                            t_ns[bad], status.tolist())
    return windows, rejects, int((res.status == WARMUP).sum())

