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
    anomalies: pd.DataFrame   # sensor_id, event_time (UTC), values (vectors), score, threshold, is_anomaly,
                              #   model_version and the explanation columns (detect.explain.detail_columns)
    rejects: pd.DataFrame     # raw, reject_reason, sensor_id, event_time (UTC), status
    scores: pd.DataFrame | None  # like anomalies without the explanation, every scored window (keep_scores)
    max_time: pd.Timestamp | None = None  # newest event time scored in the batch (the incidents' clock)
    model_errors: dict | None = None      # {version: error} a scoring worker could not load


BASE_COLUMNS = ["sensor_id", "event_time", "values", "score", "threshold", "is_anomaly"]


def _frame(table, n_features: int) -> pd.DataFrame:
    if table is None:
        return pd.DataFrame(columns=BASE_COLUMNS)
    df = pd.DataFrame({"sensor_id": table.column("sensor_id").to_numpy(zero_copy_only=False),
                       "event_time": pd.to_datetime(table.column("event_time").to_numpy(), utc=True)})
    df["values"] = list(fixed_to_numpy(table.column("values"), n_features))
    for c in table.column_names:
        if c in ("sensor_id", "event_time", "values"):
            continue
        if c == "expected":
            df[c] = list(fixed_to_numpy(table.column(c), n_features))
        else:
            df[c] = table.column(c).to_numpy(zero_copy_only=False)
    return df


def collect_batch(batch, n_features: int, keep_scores: bool = False) -> BatchData:
    """A micro-batch of chunks (``build_stream``'s rows) -> :class:`BatchData`, in one pass.
    ``keep_scores``: the stream was built with it (``scores`` is then a frame, else None)."""
    rows = batch.select("n_events", "n_warmup", "n_scored", "rejects", "anomalies", "scores", "max_time",
                        "model_error").collect()
    rej = decode_tables(r["rejects"] for r in rows)
    if rej is None:
        rejects = pd.DataFrame(columns=["raw", "reject_reason", "sensor_id", "event_time", "status"])
    else:
        rejects = rej.to_pandas().rename(columns={"reason": "reject_reason"})
        rejects["event_time"] = pd.to_datetime(rejects["event_time"], utc=True)
    times = [r["max_time"] for r in rows if r["max_time"] is not None]
    errors = {}  # bundle ref -> why it failed to load (a worker scored with the fallback)
    for r in rows:
        if r["model_error"]:
            ref, _, why = r["model_error"].partition(": ")
            errors[ref] = why
    return BatchData(events=sum(r["n_events"] for r in rows), scored=sum(r["n_scored"] or 0 for r in rows),
                     warmup=sum(r["n_warmup"] for r in rows),
                     anomalies=_frame(decode_tables(r["anomalies"] for r in rows), n_features),
                     rejects=rejects,
                     scores=_frame(decode_tables(r["scores"] for r in rows), n_features) if keep_scores else None,
                     max_time=pd.Timestamp(max(times), tz="UTC") if times else None, model_errors=errors)


class BatchWriter:
    """``foreachBatch`` function: one micro-batch's records to every sink.

    Called once per micro-batch on the driver; raising fails the query (Spark re-runs the
    batch after a restart). Idempotent by batch_id: the bundle that scores the batch and the
    incident state it starts from are the ones saved for that batch id (``driver_state``), so a
    replay computes the same records, and every sink writes on natural keys.

    Per batch: pick the bundle (``model_switch``) and hand it to the scoring tasks as a local
    property, run the batch (one collect), turn flags into alarms and incidents
    (``incidents.IncidentTracker``: persistence, grouping, kind, explanation), write every sink
    side by side, save the tracker's state, log one line.
    """

    def __init__(self, sinks, manifest: dict, features: list[str], settings=None, selector=None,
                 state=None, registry: pd.DataFrame | None = None, mutes_source=None):
        from sentinel.config import Settings
        from sentinel.incidents.tracker import IncidentTracker
        self.sinks, self.features = sinks, features
        self.settings = settings or Settings()
        self.selector, self.state, self.mutes_source = selector, state, mutes_source
        self.model_version = manifest["version"]
        self.keep_scores = any(getattr(s, "wants_scores", False) for s in sinks)
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(sinks)), thread_name_prefix="sink")
        self._new_tracker = lambda: IncidentTracker.from_settings(
            self.settings, features, int(manifest["window"]["length"]), registry=registry,
            units=manifest.get("units"), model_version=self.model_version)
        self._tracker = None
        self.totals = {"events": 0, "rejects": 0, "anomalies": 0, "windows": 0, "batches": 0,
                       "incidents_opened": 0, "incidents_closed": 0}

    def _tracker_for(self, batch_id: int):
        """The tracker holding the state saved after the batch before ``batch_id``."""
        t = self._tracker
        if t is not None and t.last_batch_id is not None and t.last_batch_id == batch_id - 1:
            return t
        t = self._new_tracker()
        saved = self.state.latest("incidents", below=batch_id) if self.state is not None else None
        if saved is not None:
            t.load_json(saved[1])
        if t.last_batch_id is not None and t.last_batch_id >= batch_id:  # pragma: no cover - latest() is below
            raise RuntimeError(f"incident state {t.last_batch_id} is not before batch {batch_id}")
        self._tracker = t
        return t

    def __call__(self, batch, batch_id: int) -> None:
        from sentinel.store.sinks.base import INCIDENT_EVENT_COLUMNS, empty
        t0 = time.time()
        choice = None
        if self.selector is not None:
            choice = self.selector.for_batch(batch_id)
            sc = batch.sparkSession.sparkContext
            from sentinel.stream.model_switch import BUNDLE_PROPERTY, FALLBACK_PROPERTY
            sc.setLocalProperty(BUNDLE_PROPERTY, choice.ref)
            sc.setLocalProperty(FALLBACK_PROPERTY, choice.fallback)
        # One pass: the chunks hold the counts, the flags with their explanation, the rejects and
        # (sinks.write_scores) every score, so nothing runs twice and nothing needs persisting.
        data = collect_batch(batch, len(self.features), self.keep_scores)
        t_compute = time.time() - t0
        version = choice.version if choice is not None else self.model_version
        if choice is not None and data.model_errors and choice.ref in data.model_errors:
            # the workers scored this batch with the fallback: record that, and serve it from now on
            self.selector.refuse_loaded(batch_id, choice.version, data.model_errors[choice.ref])
            version = self.selector.current.version
        tracker = self._tracker_for(batch_id)
        mutes = self.mutes_source() if self.mutes_source is not None else None
        upd = tracker.update(data.anomalies, now=data.max_time, batch_id=batch_id, mutes=mutes)
        anomalies = anomaly_records(upd.alarms, self.model_version, batch_id, self.features)
        rejects = reject_records(data.rejects, batch_id)
        scores = None
        if data.scores is not None:  # every scored reading (sinks.write_scores)
            scores = score_records(data.scores, self.model_version, batch_id, self.features)
        incidents = upd.incidents if len(upd.incidents) else empty(list(upd.incidents.columns))
        events = upd.events[INCIDENT_EVENT_COLUMNS] if len(upd.events) else empty(INCIDENT_EVENT_COLUMNS)
        opened = int((events["event"] == "open").sum()) if len(events) else 0
        closed = int((events["event"] == "close").sum()) if len(events) else 0
        records = BatchRecords(batch_id, anomalies=anomalies, rejects=rejects, scores=scores, incidents=incidents,
                               incident_events=events, batch=batch_record(
                                   batch_id, events=data.events, scored=data.scored, warmup=data.warmup,
                                   rejects=len(rejects), anomalies=len(anomalies), incidents_open=len(tracker.open),
                                   incidents_opened=opened, incidents_closed=closed, max_event_time=data.max_time,
                                   model_version=version, duration_s=time.time() - t0))

        def write(sink):
            sink.write(records)

        t_sinks = time.time()
        # The sinks wait on their servers and disks, not on Python: write them side by side.
        # Each has its own connection; any failure fails the batch (Spark re-runs it, and the
        # natural keys make the sinks that did write ignore the repeat).
        for future in [self._pool.submit(write, sink) for sink in self.sinks]:
            future.result()
        if self.state is not None:  # after the sinks: a failed batch re-runs from the state before it
            self.state.save("incidents", batch_id, tracker.to_json())
            self.state.prune("incidents")
        BATCHES_WRITTEN.append((batch_id, time.time()))
        t_sinks = time.time() - t_sinks
        self.totals["events"] += data.events
        self.totals["rejects"] += len(rejects)
        self.totals["anomalies"] += len(anomalies)
        self.totals["windows"] += data.scored
        self.totals["batches"] += 1
        self.totals["incidents_opened"] += opened
        self.totals["incidents_closed"] += closed
        log.info("batch %d: events=%d scored=%d warmup=%d rejects=%d anomalies=%d incidents=%d open (+%d, -%d) "
                 "duration=%.2fs (compute %.2fs, sinks %.2fs)", batch_id, data.events, data.scored, data.warmup,
                 len(rejects), len(anomalies), len(tracker.open), opened, closed, time.time() - t0, t_compute,
                 t_sinks)


def anomaly_records(df: pd.DataFrame, model_version: str, batch_id: int, features: list[str]) -> pd.DataFrame:
    """Alarmed rows (the tracker's ``alarms``, or the UDF's flags) -> the anomaly record contract.
    ``model_version`` is used for rows that do not say which version scored them."""
    from sentinel.store.sinks.base import ANOMALY_COLUMNS as cols
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
    out["expected"] = df["expected"].to_numpy() if "expected" in df else None
    out["explanation"] = df["explanation"].to_numpy() if "explanation" in df else None
    out["model_version"] = (df["model_version"].fillna(model_version).astype(str).to_numpy()
                            if "model_version" in df else model_version)
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

