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

from sentinel.config import Settings
from sentinel.detect.windows import NS_PER_S
from sentinel.stream.chunks import CHUNK_SCHEMA, _parse_batches
from sentinel.stream.scoring_udf import make_score_udf
from sentinel.stream.source import read_source
from sentinel.stream.window_state import STAGED_SCHEMA, WindowProcessor
from sentinel.stream.writer import BATCHES_WRITTEN, BatchWriter

log = logging.getLogger("sentinel.stream")

# Per-batch summaries (rows, duration, state size, offsets consumed) of the current or last
# run() in this process; read by the benchmarks. Bounded: a job runs for months.
LAST_PROGRESS: deque[dict] = deque(maxlen=20_000)


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
