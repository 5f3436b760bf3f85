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

Zone (network) bundles (``model.mode = "zone"``, :func:`check_bundle`) take the same stages
with the zone as the unit: the parse step buckets every member of a zone by the zone's name, the
state (``window_state.ZoneWindowProcessor``) continues each zone's ``align.AlignState`` per
micro-batch and emits zone windows, and the UDF (``scoring_udf.score_zone_chunks``) scores them
and returns one row per member that reported at the time step, keyed by the member's sensor id.

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
from sentinel.stream.window_state import STAGED_SCHEMA, WindowProcessor, ZoneConfig, ZoneWindowProcessor, zone_config
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
    zones = check_bundle(settings, manifest)
    if zones is not None:
        return _zone_stream(raw, settings, bundle_path, zones, keep_scores)
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
        "bucket", "n_events", "n_warmup", "rejects", "s.n_scored", "s.anomalies", "s.scores", "s.max_time",
        "s.model_error")


def check_bundle(settings: Settings, manifest: dict) -> ZoneConfig | None:
    """What the stream needs from a bundle's manifest, checked before Spark starts: None for a
    per-sensor bundle, the zone window state's settings (``window_state.ZoneConfig``) for a zone
    (network) bundle.

    Raises:
        ConfigError: the bundle cannot be streamed with these settings (one sentence: what, and the fix).
    """
    from sentinel.config import ConfigError
    zones = zone_config(manifest, settings.stream.state_buckets)
    if zones is not None and list(settings.data.features) != list(manifest["features"]):
        raise ConfigError(f"zone model {manifest.get('version', '?')} was trained on features "
                          f"{list(manifest['features'])} but data.features is {list(settings.data.features)}: "
                          f"set data.features to match or deploy another model")
    return zones


def _zone_stream(raw, settings: Settings, bundle_path: str, zones: ZoneConfig, keep_scores: bool):
    """:func:`build_stream` for a zone bundle: members bucketed by zone, zone windows aligned per
    time step in the state (``align.align`` per micro-batch), scored per real member."""
    buckets = settings.stream.state_buckets
    chunks = raw.mapInArrow(_parse_batches(settings.data, buckets, zones.zone_of), CHUNK_SCHEMA)
    staged = chunks.groupBy("bucket").transformWithStateInPandas(
        ZoneWindowProcessor(zones), STAGED_SCHEMA, "Append", "None")
    score = make_score_udf(bundle_path, settings.spark.python_threads, zones.length, 1, keep_scores, zones=True)
    return staged.withColumn("s", score("windows")).select(
        "bucket", "n_events", "n_warmup", "rejects", "s.n_scored", "s.anomalies", "s.scores", "s.max_time",
        "s.model_error")


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


def run(spark, settings: Settings, bundle, sinks, source_df=None, bundle_ref: str | None = None,
        model_ref: str | None = None, registry=None, stop_event: threading.Event | None = None) -> dict:
    """Start the query and block until it ends: ``max_batches`` reached, idle for
    ``idle_timeout_s``, SIGINT/SIGTERM, or an error (re-raised).

    Args:
        bundle: the bundle the job starts with (loaded on the driver for its manifest).
        bundle_ref: what executors load for it (an ``s3://`` URL or a shared absolute path); if
            not given, the driver's bundle path.
        model_ref: what the job serves: a registry folder whose ``promoted`` pointer it follows
            between micro-batches (hot swap, ``model_switch``), or a fixed bundle. If not given,
            the starting bundle, fixed.
        registry: the sensor registry (sensor_id, zone, latitude, longitude) the incidents
            group by; if not given, read from ``sinks.sensors_file`` when set.
        stop_event: set it to stop after the current micro-batch (as SIGINT does), e.g. from
            another thread.
    """
    from sentinel.stream.driver_state import DriverState
    from sentinel.stream.model_switch import ModelSelector
    st = settings.stream
    start_ref = bundle_ref or bundle.path
    state = DriverState.for_checkpoint(st.checkpoint, st.driver_state_dir)
    selector = ModelSelector(model_ref or start_ref, start_ref, bundle.manifest, state, st.model_check_s)
    if registry is None and settings.sinks.sensors_file:
        from sentinel.store.registry import read_registry
        registry = read_registry(settings.sinks.sensors_file)
    writer = BatchWriter(sinks, bundle.manifest, bundle.features, settings, selector, state, registry,
                         mutes_source(settings))
    df = build_stream(spark, settings, start_ref, bundle.manifest, source_df, writer.keep_scores)
    LAST_PROGRESS.clear()
    BATCHES_WRITTEN.clear()
    query = (df.writeStream.foreachBatch(writer)
             .option("checkpointLocation", st.checkpoint)
             .trigger(processingTime=f"{st.trigger_s} seconds")
             .queryName("sentinel_deploy")
             .start())
    log.info("deploy query started: source=%s model=%s (%s) sinks=%s checkpoint=%s", settings.source.type,
             selector.current.version, "following " + str(model_ref) if selector.follows else "fixed",
             ",".join(s.name for s in sinks), st.checkpoint)
    stop = stop_event or threading.Event()

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


def mutes_source(settings: Settings, every_s: float = 10.0):
    """A callable giving the maintenance windows (``mutes``) of the job's first store, read at
    most every ``every_s`` seconds (operators add them while the job runs), or None when the
    store cannot hold them. A read failure keeps the last answer (logged once)."""
    from sentinel.store.client import open_store
    try:
        client = open_store(None, settings)
    except Exception as exc:  # no store yet (its first batch creates it): try again later
        log.debug("mutes: store not readable yet (%s)", exc)
        client = None
    cache = {"at": 0.0, "value": None, "warned": False}

    def read():
        nonlocal client
        if time.monotonic() - cache["at"] < every_s:
            return cache["value"]
        cache["at"] = time.monotonic()
        try:
            if client is None:
                client = open_store(None, settings)
            cache["value"] = client.mutes()
        except Exception as exc:
            if not cache["warned"]:
                log.warning("cannot read maintenance windows from the store (%s): using the last ones read", exc)
                cache["warned"] = True
        return cache["value"]

    return read
