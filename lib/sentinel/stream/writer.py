"""The batch writer (``foreachBatch``): a micro-batch's records to every sink, one log line."""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd

from sentinel.store.sinks.base import BatchRecords, batch_record, score_records
from sentinel.stream.chunks import decode_tables, fixed_to_numpy

log = logging.getLogger("sentinel.stream")
# When each batch's rows were in every store, for the benchmarks. Bounded: a job runs for months.
BATCHES_WRITTEN: deque[tuple[int, float]] = deque(maxlen=20_000)  # (batch_id, time.time())


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
        # One pass: the chunks hold the counts, the anomalies, the rejects and (sinks.write_scores)
        # every score, so nothing runs twice and nothing needs persisting.
        data = collect_batch(batch, len(self.features), self.keep_scores)
        t_compute = time.time() - t0
        anomalies = anomaly_records(data.anomalies, self.model_version, batch_id, self.features)
        rejects = reject_records(data.rejects, batch_id)
        scores = None
        if data.scores is not None:  # every scored reading (sinks.write_scores)
            scores = score_records(data.scores, self.model_version, batch_id, self.features)
        times = [f["event_time"].max() for f in (anomalies, scores) if f is not None and len(f)]
        # Incidents are not tracked yet: the sinks get empty incident frames.
        records = BatchRecords(batch_id, anomalies=anomalies, rejects=rejects, scores=scores, batch=batch_record(
            batch_id, events=data.events, scored=data.scored, warmup=data.warmup, rejects=len(rejects),
            anomalies=len(anomalies), max_event_time=max(times) if times else None,
            model_version=self.model_version, duration_s=time.time() - t0))

        def write(sink):
            sink.write(records)

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

