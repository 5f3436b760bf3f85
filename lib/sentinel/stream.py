"""The deploy job's streaming query: source -> parse -> state -> score -> sinks.

One micro-batch::

    source (socket | kafka)                   # raw: string, key: string
    -> mapInPandas(parse)                     # raw, sensor_id, event_time, values, reject_reason
    -> groupBy(state bucket = hash(sensor_id) % stream.state_buckets, or -1 for malformed lines)
       .transformWithStateInPandas(WindowProcessor)
                                              # one row per line: status window|warmup|late|duplicate|reject
    -> pandas UDF score(sensor_id, window, window_times)   # score, threshold, is_anomaly
    -> foreachBatch(BatchWriter)              # anomalies + rejects to every sink, one log line

The window state holds each sensor's newest W-1 readings in event-time order; sensors share
state buckets so that one call assembles the windows of many sensors at once
(``windows.assemble_many``, the same function as the batch path). The state is also where
duplicates and late readings are caught: a reading at the same time as, or older than, the
newest one accepted for its sensor becomes a ``duplicate`` or ``late`` reject. A Spark
watermark with ``dropDuplicatesWithinWatermark`` would drop such rows without a trace, so there
is none; state stays bounded anyway (W-1 readings per sensor).

Why it is fast (see benchmarks/throughput.py): vectors cross the JVM/Python boundary as packed
binary, not arrays (PySpark converts array columns row by row in Python); one state read and
write per bucket instead of per sensor; windows assembled with numpy over all sensors of a
bucket; the model runs once per Arrow batch through a traced TensorFlow function.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import datetime, timezone
from typing import Iterator

import numpy as np
import pandas as pd

from sentinel import events
from sentinel.config import Settings
from sentinel.windows import DUPLICATE, LATE, NS_PER_S, STATUS_NAMES

log = logging.getLogger("sentinel.stream")

# Vectors travel between the JVM and Python as binary (packed float64/int64): PySpark converts
# array columns from pandas row by row in Python, binary columns in one Arrow call.
PARSED_SCHEMA = "raw string, sensor_id string, event_time timestamp, `values` binary, reject_reason string"
STAGED_SCHEMA = ("sensor_id string, event_time timestamp, `values` binary, raw string, "
                 "status string, reject_reason string, window binary, window_times binary")
SCORE_SCHEMA = "score double, threshold double, is_anomaly boolean"
# State bucket of malformed lines (sensors hash into 0..state_buckets-1).
REJECT_BUCKET = -1
LATE_REASON = "late: older than the newest reading already scored for this sensor"
DUPLICATE_REASON = "duplicate: same sensor and event time as an accepted reading"
# Per-batch summaries (rows, duration, state size) of the last run() in this process; read by
# the benchmarks.
LAST_PROGRESS: list[dict] = []


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


def pack_rows(matrix: np.ndarray, dtype) -> np.ndarray:
    """(n, k) array -> (n,) object array of bytes, one packed row each."""
    m = np.ascontiguousarray(matrix, dtype=dtype).reshape(len(matrix), -1)
    width = m.shape[1] * m.itemsize
    return np.frombuffer(m.tobytes(), dtype=f"V{width}").astype(object) if width else \
        np.full(len(m), b"", dtype=object)


def unpack_rows(packed, dtype, width: int) -> np.ndarray:
    """Packed rows (bytes, no nulls) -> (n, width) array."""
    if len(packed) == 0:
        return np.empty((0, width), dtype=dtype)
    return np.frombuffer(b"".join(packed), dtype=dtype).reshape(len(packed), width)


def _parse_batches(data_settings):
    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            raw = pdf["raw_bytes"] if "raw_bytes" in pdf else pdf["raw"]
            out = events.parse_lines(raw.tolist(), data_settings, pdf["key"].tolist())
            ok = out["reject_reason"].isna().to_numpy()
            packed = np.full(len(out), None, dtype=object)
            if ok.any():
                packed[ok] = pack_rows(np.array(out["values"][ok].tolist(), dtype=np.float64), np.float64)
            out["values"] = packed
            yield out
    return parse


def encode_bucket_state(sensor_ids, last_time: np.ndarray, tail_codes: np.ndarray, tail_times: np.ndarray,
                        tail_values: np.ndarray, buckets: int) -> bytes:
    """One state bucket (its sensors' tails) -> Arrow IPC bytes.

    One row per sensor: id, newest accepted time, tail times, tail values (flattened).
    ``buckets`` is stored so a changed ``stream.state_buckets`` is caught, not misread.
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
    }).replace_schema_metadata({"buckets": str(buckets), "features": str(n_features)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_bucket_state(blob: bytes, buckets: int, n_features: int):
    """Inverse of :func:`encode_bucket_state`: (sensor_ids, last_time, tail_codes, tail_times,
    tail_values). Stops with one sentence if the checkpoint was written with other settings."""
    import pyarrow as pa
    table = pa.ipc.open_stream(blob).read_all()
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
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
            pdf = pd.concat(list(rows), ignore_index=True)
            if key[0] == REJECT_BUCKET:  # malformed lines: no state, straight to the reject store
                yield pdf.assign(status="reject", window=None, window_times=None)[STAGED_COLUMNS]
                return
            yield process_bucket(pdf, self.state, self.length, self.max_gap_ns, self.n_features, self.buckets)

        def close(self):
            pass

        return {"_setup": _setup, "init": init, "handleInputRows": handleInputRows, "close": close}


STAGED_COLUMNS = ["sensor_id", "event_time", "values", "raw", "status", "reject_reason", "window", "window_times"]


def process_bucket(pdf: pd.DataFrame, state, length: int, max_gap_ns: int, n_features: int,
                   buckets: int) -> pd.DataFrame:
    """One bucket's new readings + its state -> one staged row per reading; updates ``state``
    (anything with ``get()``/``update()`` like Spark's ValueState)."""
    from sentinel.windows import NO_TIME, assemble_many
    stored = state.get()
    if stored is not None:
        ids, last, tail_c, tail_t, tail_v = decode_bucket_state(stored[0], buckets, n_features)
    else:
        ids, last = np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
        tail_c, tail_t, tail_v = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64),
                                  np.empty((0, n_features)))
    known = pd.Index(ids)
    batch_ids = pdf["sensor_id"].to_numpy(dtype=object)
    codes = known.get_indexer(batch_ids)
    if (codes < 0).any():  # sensors new to this bucket
        new_ids = pd.unique(batch_ids[codes < 0])
        known = known.append(pd.Index(new_ids))
        last = np.concatenate([last, np.full(len(new_ids), NO_TIME, dtype=np.int64)])
        codes = known.get_indexer(batch_ids)
    t_ns = pdf["event_time"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    vals = unpack_rows(pdf["values"].to_numpy(), np.float64, n_features)
    res = assemble_many(codes, t_ns, vals, tail_c, tail_t, tail_v, last, length, max_gap_ns)
    state.update((encode_bucket_state(known.to_numpy(dtype=object), res.last_time, res.tail_codes,
                                      res.tail_times, res.tail_values, buckets),))
    n = len(pdf)
    has = res.window_row >= 0
    win = np.full(n, None, dtype=object)
    wt = np.full(n, None, dtype=object)
    if has.any():
        win[has] = pack_rows(res.windows.reshape(len(res.windows), length * n_features), np.float64)[res.window_row[has]]
        wt[has] = pack_rows(res.window_times, np.int64)[res.window_row[has]]
    status = np.array([STATUS_NAMES[c] for c in range(len(STATUS_NAMES))], dtype=object)[res.status]
    reason = np.full(n, None, dtype=object)
    reason[res.status == LATE] = LATE_REASON
    reason[res.status == DUPLICATE] = DUPLICATE_REASON
    # the raw line goes on only for rejects (late, duplicate): scored readings leave it here
    raw = np.where(res.status >= LATE, pdf["raw"].to_numpy(dtype=object), None)
    return pd.DataFrame({"sensor_id": batch_ids, "event_time": pdf["event_time"], "values": pdf["values"],
                         "raw": raw, "status": status, "reject_reason": reason,
                         "window": win, "window_times": wt})


def make_score_udf(bundle_path: str, threads: int, length: int, n_features: int):
    """The pandas UDF: scores every window of an Arrow batch in one model call.

    The bundle is loaded once per Python worker (``load_bundle`` caches it) and reused by
    every later batch that worker runs.
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(SCORE_SCHEMA)
    def score(sensor_id: pd.Series, window: pd.Series, window_times: pd.Series) -> pd.DataFrame:
        from sentinel.model import load_bundle
        from sentinel.scoring import flag, score_windows

        n = len(sensor_id)
        scores, thresholds, flags = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=bool)
        has = window.notna().to_numpy()
        if has.any():
            bundle = load_bundle(bundle_path, threads)
            w = unpack_rows(window.to_numpy()[has], np.float64, length * n_features).reshape(-1, length, n_features)
            t = unpack_rows(window_times.to_numpy()[has], np.int64, length)
            sids = sensor_id.to_numpy()[has]
            scores[has] = score_windows(bundle, w, t, sids)
            thresholds[has], flags[has] = flag(bundle, scores[has], sids)
        return pd.DataFrame({"score": scores, "threshold": thresholds, "is_anomaly": flags})

    return score


def build_stream(spark, settings: Settings, bundle_path: str, manifest: dict, source_df=None):
    """Wire the streaming DataFrame (everything up to the sinks). ``source_df`` overrides the
    configured source (tests feed a file or memory stream)."""
    from pyspark.sql import functions as F

    raw = source_df if source_df is not None else read_source(spark, settings)
    parsed = raw.mapInPandas(_parse_batches(settings.data), PARSED_SCHEMA)
    # raw, sensor_id, event_time, values, reject_reason
    # No Spark watermark or dropDuplicates here on purpose: both drop late rows silently.
    # The window state de-duplicates and orders per sensor instead, and rejects what it drops.
    # Malformed lines travel under one reserved key through the same operator (which passes
    # them on untouched), so the source is read and parsed once, with no union.
    buckets = settings.stream.state_buckets
    keyed = parsed.withColumn("bucket", F.when(F.col("reject_reason").isNull(),
                                               F.pmod(F.xxhash64("sensor_id"), F.lit(buckets)))
                              .otherwise(F.lit(REJECT_BUCKET)))
    length = int(manifest["window"]["length"])
    n_features = len(manifest["features"])
    max_gap_ns = int(manifest["window"]["max_gap_s"]) * NS_PER_S
    staged = keyed.groupBy("bucket").transformWithStateInPandas(
        WindowProcessor(length, max_gap_ns, n_features, buckets), STAGED_SCHEMA, "Append", "None")
    # sensor_id, event_time, values, raw, status, reject_reason, window, window_times
    score = make_score_udf(bundle_path, settings.spark.python_threads, length, n_features)
    return staged.withColumn("s", score("sensor_id", "window", "window_times")).select(
        "sensor_id", "event_time", "values", "raw", "status", "reject_reason",
        "s.score", "s.threshold", "s.is_anomaly")
    # sensor_id, event_time, values, raw, status, reject_reason, score, threshold, is_anomaly


class BatchWriter:
    """``foreachBatch`` function: writes a micro-batch's anomalies and rejects to every sink.

    Called once per micro-batch on the driver; raising fails the query (Spark re-runs the
    batch after a restart). Must be idempotent by batch_id: every sink writes on the natural
    key, so a replayed batch adds nothing.
    """

    def __init__(self, sinks, model_version: str, features: list[str]):
        self.sinks, self.model_version, self.features = sinks, model_version, features
        self.totals = {"events": 0, "rejects": 0, "anomalies": 0, "windows": 0, "batches": 0}

    def __call__(self, batch, batch_id: int) -> None:
        from pyspark.sql import functions as F
        t0 = time.time()
        score_sinks = [s for s in self.sinks if getattr(s, "wants_scores", False)]
        if score_sinks:
            batch.persist()  # a second pass reads every score: TensorFlow must not run twice
        try:
            # One pass over the batch: the counts, plus the rows the sinks need (anomalies and
            # rejects, normally few) gathered with collect_list, which skips the nulls.
            keep = F.col("is_anomaly") | F.col("status").isin("reject", "late", "duplicate")
            cols = ["sensor_id", "event_time", "values", "raw", "status", "reject_reason", "score", "threshold",
                    "is_anomaly"]
            summary = batch.agg(
                *[F.count_if(F.col("status") == st).alias(st) for st in ("window", "warmup")],
                F.count("*").alias("events"),
                # event time as epoch microseconds: Row collection would turn timestamps into
                # naive datetimes in the Python process's local zone.
                F.collect_list(F.when(keep, F.struct(*[F.unix_micros(c).alias(c) if c == "event_time" else c
                                                       for c in cols]))).alias("rows")).collect()[0]
            t_compute = time.time() - t0
            kept = pd.DataFrame([r.asDict() for r in summary["rows"]], columns=cols)
            kept["values"] = unpack_values(kept["values"], len(self.features))
            kept["event_time"] = pd.to_datetime(kept["event_time"], unit="us", utc=True)
            counts = {"window": (summary["window"], 0), "warmup": (summary["warmup"], 0),
                      "other": (summary["events"] - summary["window"] - summary["warmup"], 0)}
            flagged = kept[kept["is_anomaly"].fillna(False).astype(bool)]
            anomalies = anomaly_records(flagged, self.model_version, batch_id, self.features)
            rejects = reject_records(kept[kept["status"] != "window"], batch_id)
            t_sinks = time.time()
            for sink in self.sinks:
                sink.write(anomalies, rejects, batch_id)
            t_sinks = time.time() - t_sinks
            if score_sinks:  # every scored reading, for the data lake (S3 write_scores)
                from sentinel.sinks.s3 import score_records
                scored = batch.filter(F.col("status") == "window").select(
                    "sensor_id", "event_time", "values", "score", "threshold", "is_anomaly").toPandas()
                scored["values"] = unpack_values(scored["values"], len(self.features))
                scores = score_records(scored, self.model_version, batch_id, self.features)
                for sink in score_sinks:
                    sink.write_scores(scores, batch_id)
        finally:
            if score_sinks:
                batch.unpersist()
        n_events = sum(n for n, _ in counts.values())
        n_windows = counts.get("window", (0, 0))[0]
        self.totals["events"] += n_events
        self.totals["rejects"] += len(rejects)
        self.totals["anomalies"] += len(anomalies)
        self.totals["windows"] += n_windows
        self.totals["batches"] += 1
        log.info("batch %d: events=%d scored=%d warmup=%d rejects=%d anomalies=%d duration=%.2fs "
                 "(compute %.2fs, sinks %.2fs)", batch_id, n_events, n_windows,
                 counts.get("warmup", (0, 0))[0], len(rejects), len(anomalies), time.time() - t0,
                 t_compute, t_sinks)


def unpack_values(packed: pd.Series, n_features: int) -> list:
    """Packed ``values`` (binary, null for lines that did not parse) -> one vector (or None) each."""
    return [np.frombuffer(bytes(v), dtype=np.float64, count=n_features)
            if isinstance(v, (bytes, bytearray, memoryview)) else None for v in packed]


def anomaly_records(df: pd.DataFrame, model_version: str, batch_id: int, features: list[str]) -> pd.DataFrame:
    """Rows flagged by the UDF -> the anomaly record contract."""
    import json
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


def run(spark, settings: Settings, bundle, sinks, source_df=None, bundle_ref: str | None = None) -> dict:
    """Start the query and block until it ends: ``max_batches`` reached, idle for
    ``idle_timeout_s``, SIGINT/SIGTERM, or an error (re-raised).

    ``bundle_ref`` is what executors load (an ``s3://`` URL or a shared absolute path); if not
    given, the driver's bundle path is used.
    """
    st = settings.stream
    writer = BatchWriter(sinks, bundle.version, bundle.features)
    df = build_stream(spark, settings, bundle_ref or bundle.path, bundle.manifest, source_df)
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
    progress: list[dict] = []  # one summary per finished micro-batch (for benchmarks)

    def record_progress():
        for p in query.recentProgress:
            if progress and p["batchId"] <= progress[-1]["batch"]:
                continue
            ops = p.get("stateOperators") or [{}]
            progress.append({"batch": p["batchId"], "rows": p.get("numInputRows", 0),
                             "ms": p.get("durationMs", {}).get("triggerExecution", 0),
                             "durations": dict(p.get("durationMs") or {}),
                             "timestamp": p.get("timestamp"),
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
    LAST_PROGRESS[:] = progress
    return writer.totals
