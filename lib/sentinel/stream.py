"""The deploy job's streaming query: source -> parse -> state -> score -> sinks.

One micro-batch::

    source (socket | kafka)                   # raw: string, key: string
    -> mapInPandas(parse)                     # raw, sensor_id, event_time, values, reject_reason
    -> groupBy(sensor_id, or a reserved key for malformed lines)
       .transformWithStateInPandas(WindowProcessor)
                                              # one row per line: status window|warmup|late|duplicate|reject
    -> pandas UDF score(sensor_id, window, window_times)   # score, threshold, is_anomaly
    -> foreachBatch(BatchWriter)              # anomalies + rejects to every sink, one log line

The per-sensor state holds the newest W-1 readings in event-time order (``windows.assemble``
does the work, the same function as the batch path). It is also where duplicates and late
readings are caught: a reading at the same time as, or older than, the newest one accepted
for its sensor becomes a ``duplicate`` or ``late`` reject. A Spark watermark with
``dropDuplicatesWithinWatermark`` would drop such rows without a trace, so there is none;
state stays bounded anyway (W-1 readings per sensor).
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
from sentinel.windows import NS_PER_S, STATUS_NAMES, WINDOW, WindowState, assemble

log = logging.getLogger("sentinel.stream")

PARSED_SCHEMA = ("raw string, sensor_id string, event_time timestamp, `values` array<double>, "
                 "reject_reason string")
STAGED_SCHEMA = ("sensor_id string, event_time timestamp, `values` array<double>, raw string, "
                 "status string, reject_reason string, window array<double>, window_times array<bigint>")
SCORE_SCHEMA = "score double, threshold double, is_anomaly boolean"
# Grouping key of malformed lines (a sensor id cannot contain NUL: events.parse_line rejects it).
REJECT_KEY = "\x00reject"
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


def _parse_batches(data_settings):
    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            raw = pdf["raw_bytes"] if "raw_bytes" in pdf else pdf["raw"]
            out = events.parse_lines(raw.tolist(), data_settings, pdf["key"].tolist())
            yield out
    return parse


class WindowProcessor:
    """Per-sensor window state for ``transformWithStateInPandas``.

    State: the sensor's newest W-1 readings (times, flattened values) and its newest accepted
    event time. Called once per sensor per micro-batch; a failure fails the micro-batch, which
    Spark re-runs from the checkpoint (state is only committed with the batch).
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
        def _setup(self, length: int, max_gap_ns: int, n_features: int):
            self.length, self.max_gap_ns, self.n_features = length, max_gap_ns, n_features

        def init(self, handle):
            from pyspark.sql.types import ArrayType, DoubleType, LongType, StructField, StructType
            schema = StructType([StructField("times", ArrayType(LongType())),
                                 StructField("vals", ArrayType(DoubleType())),
                                 StructField("last_time", LongType())])
            self.state = handle.getValueState("window", schema)

        def handleInputRows(self, key, rows, timerValues):
            pdf = pd.concat(list(rows), ignore_index=True)
            if key[0] == REJECT_KEY:  # malformed lines: no state, straight to the reject store
                yield pd.DataFrame({"sensor_id": pdf["sensor_id"], "event_time": pdf["event_time"],
                                    "values": pdf["values"], "raw": pdf["raw"], "status": "reject",
                                    "reject_reason": pdf["reject_reason"], "window": None, "window_times": None})
                return
            if self.state.exists():
                times, vals, last = self.state.get()
                st = WindowState(np.asarray(times, dtype=np.int64),
                                 np.asarray(vals, dtype=np.float64).reshape(-1, self.n_features), int(last))
            else:
                st = WindowState()
            t_ns = pdf["event_time"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
            vals = np.stack(pdf["values"].to_numpy()).astype(np.float64).reshape(len(pdf), self.n_features)
            res = assemble(t_ns, vals, st, self.length, self.max_gap_ns)
            self.state.update((res.state.times.tolist(), res.state.values.ravel().tolist(), int(res.state.last_time)))
            status = np.array([STATUS_NAMES[s] for s in res.status], dtype=object)
            flat = res.windows.reshape(res.windows.shape[0], self.length * self.n_features)
            win = [flat[r] if r >= 0 else None for r in res.window_row]
            wt = [res.window_times[r] if r >= 0 else None for r in res.window_row]
            reason = np.where(status == "late", "late: older than the newest reading already scored for this sensor",
                              np.where(status == "duplicate", "duplicate: same sensor and event time as an accepted reading", None))
            yield pd.DataFrame({"sensor_id": key[0], "event_time": pdf["event_time"], "values": pdf["values"],
                                "raw": pdf["raw"], "status": status, "reject_reason": reason,
                                "window": win, "window_times": wt})

        def close(self):
            pass

        return {"_setup": _setup, "init": init, "handleInputRows": handleInputRows, "close": close}


def make_score_udf(bundle_path: str, threads: int):
    """The pandas UDF: scores every window of an Arrow batch in one model call.

    The bundle is loaded once per Python worker (``load_bundle`` caches it) and reused by
    every later batch that worker runs.
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(SCORE_SCHEMA)
    def score(sensor_id: pd.Series, window: pd.Series, window_times: pd.Series) -> pd.DataFrame:
        from sentinel.model import load_bundle
        from sentinel.scoring import score_frame

        out = pd.DataFrame({"score": np.nan, "threshold": np.nan, "is_anomaly": False}, index=sensor_id.index)
        has = window.notna().to_numpy()
        if has.any():
            bundle = load_bundle(bundle_path, threads)
            scored = score_frame(bundle, pd.DataFrame({"sensor_id": sensor_id[has], "window": window[has],
                                                       "window_times": window_times[has]}))
            out.loc[has, "score"] = scored["score"].to_numpy()
            out.loc[has, "threshold"] = scored["threshold"].to_numpy()
            out.loc[has, "is_anomaly"] = scored["is_anomaly"].to_numpy()
        return out

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
    keyed = parsed.withColumn("state_key", F.when(F.col("reject_reason").isNull(), F.col("sensor_id"))
                              .otherwise(F.lit(REJECT_KEY)))
    length = int(manifest["window"]["length"])
    max_gap_ns = int(manifest["window"]["max_gap_s"]) * NS_PER_S
    staged = keyed.groupBy("state_key").transformWithStateInPandas(
        WindowProcessor(length, max_gap_ns, len(manifest["features"])), STAGED_SCHEMA, "Append", "None")
    # sensor_id, event_time, values, raw, status, reject_reason, window, window_times
    score = make_score_udf(bundle_path, settings.spark.python_threads)
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
