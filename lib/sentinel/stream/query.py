"""The deploy job's streaming query: source -> parse -> state -> score -> sinks.

One micro-batch::

    source (socket | kafka)                   # raw: string, key: string
    -> mapInArrow(parse)                      # chunks: bucket, rows (Arrow IPC table of readings)
         bucket = crc32(sensor_id) % stream.state_buckets, or -1 for malformed lines
    -> groupBy(bucket).transformWithStateInPandas(WindowProcessor)
                                              # per bucket: n_events, n_warmup, windows, rejects
    -> pandas UDF score(windows)              # per chunk: n_scored, anomalies (, scores)
    -> foreachBatch(BatchWriter)              # anomalies + rejects to every sink, one log line

The window state holds each sensor's newest W-1 readings in event-time order; sensors share
state buckets so that one call assembles the windows of many sensors at once
(``windows.assemble_many``, the same function as the batch path). The state is also where
duplicates and late readings are caught: a reading at the same time as, or older than, the
newest one accepted for its sensor becomes a ``duplicate`` or ``late`` reject. A Spark
watermark with ``dropDuplicatesWithinWatermark`` would drop such rows without a trace, so there
is none; state stays bounded anyway (W-1 readings per sensor).

Why it is fast (see benchmarks/throughput.py): after parsing, a row of the stream is a chunk
of many readings (an Arrow IPC table), so the JVM shuffles and converts a few large values per
micro-batch and PySpark's per-row Python (transformWithStateInPandas feeds its input through
``itertuples``) runs per chunk; one state read and write per bucket instead of per sensor;
windows assembled with numpy over all sensors of a bucket; the model runs once per Arrow batch
through a compiled TensorFlow function.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from sentinel import events
from sentinel.config import Settings
from sentinel.windows import LATE, NS_PER_S, STATUS_NAMES

log = logging.getLogger("sentinel.stream")

# Micro-batches travel as chunks: after parsing, each row of the stream is one Arrow IPC
# table of many readings (one state bucket's share of one Arrow batch), not one reading.
# PySpark hands transformWithStateInPandas its input row by row in Python
# (serializers.py, itertuples) and converts every column of every row on each JVM/Python
# crossing; with chunks those costs are paid per chunk, and the JVM shuffles a few large
# binary values instead of 100,000 small rows.
CHUNK_SCHEMA = "bucket int, rows binary"
STAGED_SCHEMA = "bucket int, n_events long, n_warmup long, windows binary, rejects binary"
SCORE_SCHEMA = "n_scored long, anomalies binary, scores binary"
# State bucket of malformed lines (sensors hash into 0..state_buckets-1).
REJECT_BUCKET = -1
# How sensor ids map to state buckets; stored in the state so a checkpoint written with
# another mapping is refused instead of silently splitting sensors' state.
BUCKET_HASH = "crc32"
LATE_REASON = "late: older than the newest reading already scored for this sensor"
DUPLICATE_REASON = "duplicate: same sensor and event time as an accepted reading"
# Per-batch summaries (rows, duration, state size, offsets consumed) of the current or last
# run() in this process, and when each batch's rows were in every store; read by the
# benchmarks. Bounded: a job runs for months.
LAST_PROGRESS: deque[dict] = deque(maxlen=20_000)
BATCHES_WRITTEN: deque[tuple[int, float]] = deque(maxlen=20_000)  # (batch_id, time.time())


def read_source(spark, settings: Settings):
    """The raw stream: ``raw`` (socket, string) or ``raw_bytes`` (Kafka, binary: garbage must
    reach the parser and the reject store), and ``key`` (string or null)."""
    from pyspark.sql import functions as F

    src = settings.source
    if src.type == "socket":
        df = spark.readStream.format("socket").option("host", src.host).option("port", src.port).load()
        return df.select(F.col("value").alias("raw"), F.lit(None).cast("string").alias("key"))
    k = src.kafka
    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", k.bootstrap_servers)
              .option("startingOffsets", k.starting_offsets)
              .option("maxOffsetsPerTrigger", k.max_offsets_per_trigger)
              .option("failOnDataLoss", str(k.fail_on_data_loss).lower()))
    reader = reader.option("subscribePattern", k.subscribe_pattern) if k.subscribe_pattern else reader.option("subscribe", k.topic)
    for key, value in k.options.items():
        reader = reader.option(key if key.startswith("kafka.") else f"kafka.{key}", value)
    df = reader.load()
    # Binary garbage must reach the parser (and the reject store), so decode leniently there.
    return df.select(F.col("value").alias("raw_bytes"), F.col("key").cast("string").alias("key"))


# ---- chunk tables (Arrow IPC) -------------------------------------------------------------

def encode_table(table) -> bytes:
    """Arrow table -> IPC stream bytes (one chunk of the stream)."""
    import pyarrow as pa
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_table(blob: bytes):
    """Inverse of :func:`encode_table`."""
    import pyarrow as pa
    return pa.ipc.open_stream(blob).read_all()


def decode_tables(blobs):
    """IPC chunks (nulls skipped) -> one Arrow table, or None if there are none."""
    import pyarrow as pa
    tables = [decode_table(b) for b in blobs if b is not None]
    return pa.concat_tables(tables) if tables else None


def _fixed(matrix: np.ndarray):
    """(n, k) float64/int64 -> Arrow fixed-size lists of k (one buffer, no per-row objects)."""
    import pyarrow as pa
    m = np.ascontiguousarray(matrix)
    k = m.shape[1] if m.ndim == 2 else 1
    return pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), k)


def fixed_to_numpy(column, width: int) -> np.ndarray:
    """Arrow fixed-size list column -> (n, width) array."""
    col = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if len(col) == 0:
        return np.empty((0, width))
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), width)


def readings_table(sensor_ids, t_ns: np.ndarray, values: np.ndarray, raw):
    import pyarrow as pa
    return pa.table({"sensor_id": _strings(sensor_ids), "event_time": pa.array(t_ns, pa.int64()),
                     "values": _fixed(values), "raw": _strings(raw)})


def rejects_table(raw, reason, sensor_ids, t_ns, status):
    """Rejected lines; ``t_ns`` may hold None (no parsable time)."""
    import pyarrow as pa
    return pa.table({"raw": _strings(raw), "reason": _strings(reason),
                     "sensor_id": _strings(sensor_ids), "event_time": pa.array(t_ns, pa.int64()),
                     "status": _strings(status)})


def _strings(values):
    import pyarrow as pa
    return values if isinstance(values, pa.Array) else pa.array(values, pa.string())


def bucket_of(sensor_ids, buckets: int) -> np.ndarray:
    """Sensor id -> state bucket: CRC-32 of the UTF-8 id modulo ``buckets`` (stable across
    processes and versions, unlike Python's hash). Hashes each distinct id once."""
    import zlib
    import pyarrow.compute as pc
    ids = _strings(sensor_ids if not isinstance(sensor_ids, np.ndarray) else sensor_ids.tolist())
    if len(ids) == 0:
        return np.empty(0, dtype=np.int64)
    encoded = pc.dictionary_encode(ids)
    per_id = np.array([zlib.crc32(u.encode("utf-8")) % buckets for u in encoded.dictionary.to_pylist()],
                      dtype=np.int64)
    return per_id[encoded.indices.to_numpy(zero_copy_only=False)]


def parse_chunks(raw, keys, data_settings, buckets: int):
    """Raw lines (Arrow array or list) -> a record batch of chunk rows (``CHUNK_SCHEMA``): one
    readings table per state bucket present, plus one rejects table (bucket ``REJECT_BUCKET``)
    if any line failed to parse."""
    import pyarrow as pa
    parsed = events.parse_batch(raw, data_settings, keys)
    bucket_col, blobs = [], []
    if parsed.reject_raw:
        m = len(parsed.reject_raw)
        bucket_col.append(REJECT_BUCKET)
        blobs.append(encode_table(rejects_table(parsed.reject_raw, parsed.reject_reason,
                                                [None] * m, [None] * m, ["reject"] * m)))
    if len(parsed.sensor_id):
        b = bucket_of(parsed.sensor_id, buckets)
        order = np.argsort(b, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(b[order]) != 0])
        for idx in np.split(order, starts[1:]):
            take = pa.array(idx)
            bucket_col.append(int(b[idx[0]]))
            blobs.append(encode_table(readings_table(parsed.sensor_id.take(take), parsed.event_time_ns[idx],
                                                     parsed.values[idx], parsed.raw.take(take))))
    return pa.record_batch({"bucket": pa.array(bucket_col, pa.int32()), "rows": pa.array(blobs, pa.binary())})


def _parse_batches(data_settings, buckets: int):
    def parse(batches):
        for batch in batches:
            names = batch.schema.names
            raw = batch.column(names.index("raw_bytes" if "raw_bytes" in names else "raw"))
            yield parse_chunks(raw, batch.column(names.index("key")), data_settings, buckets)
    return parse


def encode_bucket_state(sensor_ids, last_time: np.ndarray, tail_codes: np.ndarray, tail_times: np.ndarray,
                        tail_values: np.ndarray, buckets: int) -> bytes:
    """One state bucket (its sensors' tails) -> Arrow IPC bytes.

    One row per sensor: id, newest accepted time, tail times, tail values (flattened).
    ``buckets`` and the hash are stored so a changed ``stream.state_buckets`` is caught, not
    misread.
    """
    import pyarrow as pa
    n_features = tail_values.shape[1] if tail_values.ndim == 2 else 1
    counts = np.bincount(tail_codes, minlength=len(sensor_ids)).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    table = pa.table({
        "sensor_id": pa.array(list(sensor_ids), pa.string()),
        "last_time": pa.array(last_time, pa.int64()),
        "tail_times": pa.ListArray.from_arrays(pa.array(offsets), pa.array(tail_times, pa.int64())),
        "tail_values": pa.ListArray.from_arrays(pa.array(offsets * n_features),
                                                pa.array(tail_values.ravel(), pa.float64())),
    }).replace_schema_metadata({"buckets": str(buckets), "features": str(n_features), "hash": BUCKET_HASH})
    return encode_table(table)


def decode_bucket_state(blob: bytes, buckets: int, n_features: int):
    """Inverse of :func:`encode_bucket_state`: (sensor_ids, last_time, tail_codes, tail_times,
    tail_values). Stops with one sentence if the checkpoint was written with other settings."""
    table = decode_table(blob)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if meta.get("hash") != BUCKET_HASH:
        raise ValueError("the checkpoint's window state was written by an older version that assigned "
                         "sensors to state buckets differently: start from a new stream.checkpoint")
    if int(meta.get("buckets", buckets)) != buckets:
        raise ValueError(f"stream.state_buckets is {buckets} but the checkpoint was written with "
                         f"{meta['buckets']}: set it back, or start from a new stream.checkpoint")
    if int(meta.get("features", n_features)) != n_features:
        raise ValueError(f"the model has {n_features} feature(s) but the checkpoint's window state has "
                         f"{meta['features']}: start from a new stream.checkpoint for this model")
    times = table.column("tail_times").combine_chunks()
    offsets = times.offsets.to_numpy()
    tail_codes = np.repeat(np.arange(table.num_rows), np.diff(offsets))
    tail_times = times.values.to_numpy()
    tail_values = table.column("tail_values").combine_chunks().values.to_numpy().reshape(-1, n_features)
    return (table.column("sensor_id").to_pandas().to_numpy(dtype=object),
            table.column("last_time").to_numpy().copy(), tail_codes, tail_times, tail_values)


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
    from sentinel.windows import NO_TIME, WARMUP, assemble_many
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


_FROZEN: set[str] = set()


def _freeze_once(key: str) -> None:
    """Hide a Python worker's long-lived objects (the model, its compiled functions) from the
    garbage collector, once, after their first use: PySpark runs a full ``gc.collect()`` after
    every task, and walking them cost about 0.4 s per task (see worker_daemon.py)."""
    if key not in _FROZEN:
        import gc
        gc.collect()
        gc.freeze()
        _FROZEN.add(key)


def score_chunks(windows: pd.Series, bundle_path: str, threads: int, length: int, n_features: int,
                 keep_scores: bool = False) -> pd.DataFrame:
    """Score every window of a batch of chunks in one model call (the pandas UDF's body).

    ``windows``: the chunks' windows tables (IPC, None for chunks without windows). Returns
    one row per chunk (``SCORE_SCHEMA``): windows scored, the flagged ones (``anomalies``:
    sensor_id, event_time, values, score, threshold, is_anomaly) and, with ``keep_scores``,
    every scored window (``scores``, same columns). The bundle is loaded once per Python
    worker (``load_bundle`` caches it) and reused by every later batch that worker runs.
    """
    import pyarrow as pa
    from sentinel.model import load_bundle
    from sentinel.scoring import flag, score_windows

    tables = [decode_table(b) if b is not None else None for b in windows.tolist()]
    counts = np.array([t.num_rows if t is not None else 0 for t in tables], dtype=np.int64)
    anomalies, scores_out = [None] * len(tables), [None] * len(tables)
    if counts.sum():
        table = pa.concat_tables([t for t in tables if t is not None])
        bundle = load_bundle(bundle_path, threads)
        w = fixed_to_numpy(table.column("window"), length * n_features).reshape(-1, length, n_features)
        t = fixed_to_numpy(table.column("window_times"), length).astype(np.int64)
        sids = table.column("sensor_id").to_numpy(zero_copy_only=False)
        s = score_windows(bundle, w, t, sids)
        _freeze_once(bundle_path)
        thr, flags = flag(bundle, s, sids)
        result = table.select(["sensor_id", "event_time", "values"]).append_column(
            "score", pa.array(s, pa.float64())).append_column(
            "threshold", pa.array(thr, pa.float64())).append_column("is_anomaly", pa.array(flags))
        offset = 0
        for i, n in enumerate(counts):
            if n:
                part = result.slice(offset, n)
                flagged = part.filter(part.column("is_anomaly"))
                anomalies[i] = encode_table(flagged) if flagged.num_rows else None
                scores_out[i] = encode_table(part) if keep_scores else None
                offset += n
    return pd.DataFrame({"n_scored": counts, "anomalies": anomalies, "scores": scores_out})


def make_score_udf(bundle_path: str, threads: int, length: int, n_features: int, keep_scores: bool = False):
    """The pandas UDF over the ``windows`` column: :func:`score_chunks`."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(SCORE_SCHEMA)
    def score(windows: pd.Series) -> pd.DataFrame:
        return score_chunks(windows, bundle_path, threads, length, n_features, keep_scores)

    return score


def build_stream(spark, settings: Settings, bundle_path: str, manifest: dict, source_df=None,
                 keep_scores: bool = False):
    """Wire the streaming DataFrame (everything up to the sinks): one row per chunk with
    ``bucket, n_events, n_warmup, rejects, n_scored, anomalies, scores`` (tables as Arrow IPC;
    :func:`collect_batch` turns a micro-batch of them into frames). ``source_df`` overrides the
    configured source (tests feed a file or memory stream); ``keep_scores`` keeps every
    scored window, not only the anomalies (for the S3 scores sink and tests)."""
    raw = source_df if source_df is not None else read_source(spark, settings)
    buckets = settings.stream.state_buckets
    chunks = raw.mapInArrow(_parse_batches(settings.data, buckets), CHUNK_SCHEMA)
    # No Spark watermark or dropDuplicates here on purpose: both drop late rows silently.
    # The window state de-duplicates and orders per sensor instead, and rejects what it drops.
    # Malformed lines travel under one reserved key through the same operator (which passes
    # them on untouched), so the source is read and parsed once, with no union.
    length = int(manifest["window"]["length"])
    n_features = len(manifest["features"])
    max_gap_ns = int(manifest["window"]["max_gap_s"]) * NS_PER_S
    staged = chunks.groupBy("bucket").transformWithStateInPandas(
        WindowProcessor(length, max_gap_ns, n_features, buckets), STAGED_SCHEMA, "Append", "None")
    score = make_score_udf(bundle_path, settings.spark.python_threads, length, n_features, keep_scores)
    return staged.withColumn("s", score("windows")).select(
        "bucket", "n_events", "n_warmup", "rejects", "s.n_scored", "s.anomalies", "s.scores")


@dataclass
class BatchData:
    """One micro-batch, collected on the driver: counts and the frames the sinks write."""

    events: int
    scored: int
    warmup: int
    anomalies: pd.DataFrame   # sensor_id, event_time (UTC), values (vectors), score, threshold, is_anomaly
    rejects: pd.DataFrame     # raw, reject_reason, sensor_id, event_time (UTC), status
    scores: pd.DataFrame | None  # like anomalies, every scored window (keep_scores only)


def _frame(table, n_features: int) -> pd.DataFrame:
    cols = ["sensor_id", "event_time", "values", "score", "threshold", "is_anomaly"]
    if table is None:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame({"sensor_id": table.column("sensor_id").to_numpy(zero_copy_only=False),
                       "event_time": pd.to_datetime(table.column("event_time").to_numpy(), utc=True)})
    df["values"] = list(fixed_to_numpy(table.column("values"), n_features))
    for c in cols[3:]:
        df[c] = table.column(c).to_numpy(zero_copy_only=False)
    return df


def collect_batch(batch, n_features: int, keep_scores: bool = False) -> BatchData:
    """A micro-batch of chunks (``build_stream``'s rows) -> :class:`BatchData`, in one pass.
    ``keep_scores``: the stream was built with it (``scores`` is then a frame, else None)."""
    rows = batch.select("n_events", "n_warmup", "n_scored", "rejects", "anomalies", "scores").collect()
    rej = decode_tables(r["rejects"] for r in rows)
    if rej is None:
        rejects = pd.DataFrame(columns=["raw", "reject_reason", "sensor_id", "event_time", "status"])
    else:
        rejects = rej.to_pandas().rename(columns={"reason": "reject_reason"})
        rejects["event_time"] = pd.to_datetime(rejects["event_time"], utc=True)
    return BatchData(events=sum(r["n_events"] for r in rows), scored=sum(r["n_scored"] or 0 for r in rows),
                     warmup=sum(r["n_warmup"] for r in rows),
                     anomalies=_frame(decode_tables(r["anomalies"] for r in rows), n_features),
                     rejects=rejects,
                     scores=_frame(decode_tables(r["scores"] for r in rows), n_features) if keep_scores else None)


class BatchWriter:
    """``foreachBatch`` function: writes a micro-batch's anomalies and rejects to every sink.

    Called once per micro-batch on the driver; raising fails the query (Spark re-runs the
    batch after a restart). Must be idempotent by batch_id: every sink writes on the natural
    key, so a replayed batch adds nothing.
    """

    def __init__(self, sinks, model_version: str, features: list[str]):
        self.sinks, self.model_version, self.features = sinks, model_version, features
        self.keep_scores = any(getattr(s, "wants_scores", False) for s in sinks)
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(sinks)), thread_name_prefix="sink")
        self.totals = {"events": 0, "rejects": 0, "anomalies": 0, "windows": 0, "batches": 0}

    def __call__(self, batch, batch_id: int) -> None:
        t0 = time.time()
        # One pass: the chunks hold the counts, the anomalies, the rejects and (S3 scores
        # sink only) every score, so nothing runs twice and nothing needs persisting.
        data = collect_batch(batch, len(self.features), self.keep_scores)
        t_compute = time.time() - t0
        anomalies = anomaly_records(data.anomalies, self.model_version, batch_id, self.features)
        rejects = reject_records(data.rejects, batch_id)
        scores = None
        if data.scores is not None:  # every scored reading, for the data lake (S3 write_scores)
            from sentinel.sinks.s3 import score_records
            scores = score_records(data.scores, self.model_version, batch_id, self.features)

        def write(sink):
            sink.write(anomalies, rejects, batch_id)
            if scores is not None and getattr(sink, "wants_scores", False):
                sink.write_scores(scores, batch_id)

        t_sinks = time.time()
        # The sinks wait on their servers and disks, not on Python: write them side by side.
        # Each has its own connection; any failure fails the batch (Spark re-runs it, and the
        # natural keys make the sinks that did write ignore the repeat).
        for future in [self._pool.submit(write, sink) for sink in self.sinks]:
            future.result()
        BATCHES_WRITTEN.append((batch_id, time.time()))
        t_sinks = time.time() - t_sinks
        self.totals["events"] += data.events
        self.totals["rejects"] += len(rejects)
        self.totals["anomalies"] += len(anomalies)
        self.totals["windows"] += data.scored
        self.totals["batches"] += 1
        log.info("batch %d: events=%d scored=%d warmup=%d rejects=%d anomalies=%d duration=%.2fs "
                 "(compute %.2fs, sinks %.2fs)", batch_id, data.events, data.scored, data.warmup,
                 len(rejects), len(anomalies), time.time() - t0, t_compute, t_sinks)


def anomaly_records(df: pd.DataFrame, model_version: str, batch_id: int, features: list[str]) -> pd.DataFrame:
    """Rows flagged by the UDF -> the anomaly record contract."""
    cols = ["sensor_id", "event_time", "score", "threshold", "severity", "values", "model_version",
            "batch_id", "detected_at"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    out = pd.DataFrame({
        "sensor_id": df["sensor_id"].astype(str),
        "event_time": pd.to_datetime(df["event_time"], utc=True),
        "score": df["score"].astype(float),
        "threshold": df["threshold"].astype(float),
    })
    out["severity"] = out["score"] / out["threshold"]
    out["values"] = [json.dumps(dict(zip(features, map(float, v)))) for v in df["values"]]
    out["model_version"] = model_version
    out["batch_id"] = int(batch_id)
    out["detected_at"] = pd.Timestamp(datetime.now(timezone.utc))
    return out[cols].reset_index(drop=True)


def reject_records(df: pd.DataFrame, batch_id: int) -> pd.DataFrame:
    """Rejected lines -> raw, reason, batch_id, seq (deterministic within the batch, so a
    replayed batch maps each line to the same key)."""
    import hashlib
    cols = ["batch_id", "seq", "raw", "reason", "sensor_id", "event_time", "received_at"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df.assign(raw=df["raw"].fillna(""), reason=df["reject_reason"].fillna("unknown"))
    df["digest"] = [hashlib.sha1((r + "\x00" + s).encode("utf-8", "replace")).hexdigest()[:16]
                    for r, s in zip(df["raw"], df["reason"])]
    df = df.sort_values(["digest"], kind="stable")
    df["seq"] = df["digest"] + "-" + df.groupby("digest").cumcount().astype(str)
    df["batch_id"] = int(batch_id)
    df["received_at"] = pd.Timestamp(datetime.now(timezone.utc))
    df["event_time"] = pd.to_datetime(df["event_time"], utc=True)
    return df[cols].reset_index(drop=True)


def consumed_offsets(progress: dict) -> int | None:
    """Records read through this batch: the sum of the Kafka sources' end offsets (None for a
    source whose offsets are not per-partition record counts, like the socket)."""
    total = 0
    for src in progress.get("sources") or []:
        end = src.get("endOffset")
        if isinstance(end, str):
            try:
                end = json.loads(end)
            except ValueError:
                return None
        if not isinstance(end, dict):
            return None
        total += sum(int(o) for parts in end.values() if isinstance(parts, dict) for o in parts.values())
    return total


def run(spark, settings: Settings, bundle, sinks, source_df=None, bundle_ref: str | None = None) -> dict:
    """Start the query and block until it ends: ``max_batches`` reached, idle for
    ``idle_timeout_s``, SIGINT/SIGTERM, or an error (re-raised).

    ``bundle_ref`` is what executors load (an ``s3://`` URL or a shared absolute path); if not
    given, the driver's bundle path is used.
    """
    st = settings.stream
    writer = BatchWriter(sinks, bundle.version, bundle.features)
    df = build_stream(spark, settings, bundle_ref or bundle.path, bundle.manifest, source_df, writer.keep_scores)
    LAST_PROGRESS.clear()
    BATCHES_WRITTEN.clear()
    query = (df.writeStream.foreachBatch(writer)
             .option("checkpointLocation", st.checkpoint)
             .trigger(processingTime=f"{st.trigger_s} seconds")
             .queryName("sentinel_deploy")
             .start())
    log.info("deploy query started: source=%s model=%s sinks=%s checkpoint=%s", settings.source.type,
             bundle.version, ",".join(s.name for s in sinks), st.checkpoint)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %d received: stopping after the current micro-batch", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
    last_data = time.time()
    # One summary per finished micro-batch, kept up to date while the query runs: benchmarks
    # read it from another thread.
    progress = LAST_PROGRESS

    def record_progress():
        for p in query.recentProgress:
            if progress and p["batchId"] <= progress[-1]["batch"]:
                continue
            ops = p.get("stateOperators") or [{}]
            progress.append({"batch": p["batchId"], "rows": p.get("numInputRows", 0),
                             "ms": p.get("durationMs", {}).get("triggerExecution", 0),
                             "durations": dict(p.get("durationMs") or {}),
                             "timestamp": p.get("timestamp"),
                             "consumed": consumed_offsets(p),
                             "state_rows": sum(o.get("numRowsTotal", 0) for o in ops),
                             "state_bytes": sum(o.get("memoryUsedBytes", 0) for o in ops),
                             # RocksDB keeps state off-heap and on disk: its own sizes say more
                             "rocksdb_sst_bytes": sum((o.get("customMetrics") or {}).get("rocksdbSstFileSize", 0)
                                                      for o in ops),
                             "rocksdb_pinned_bytes": sum((o.get("customMetrics") or {}).get(
                                 "rocksdbPinnedBlocksMemoryUsage", 0) for o in ops)})

    try:
        while query.isActive and not stop.is_set():
            query.awaitTermination(0.5)
            record_progress()
            status = query.status
            # Busy while a trigger runs or the source has unread data; idle time counts from then.
            if status.get("isTriggerActive") or status.get("isDataAvailable"):
                last_data = time.time()
            if st.max_batches and writer.totals["batches"] >= st.max_batches:
                log.info("stream.max_batches=%d reached", st.max_batches)
                break
            if st.idle_timeout_s and time.time() - last_data > st.idle_timeout_s and writer.totals["batches"] > 0:
                log.info("no input for %.0f s (stream.idle_timeout_s): stopping", st.idle_timeout_s)
                break
    finally:
        if query.isActive:
            query.stop()
        record_progress()
    if query.exception() is not None:
        raise RuntimeError(f"streaming query failed: {query.exception()}")
    log.info("deploy finished: %s", writer.totals)
    return writer.totals
