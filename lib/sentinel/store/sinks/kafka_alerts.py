"""Alert topic: every anomaly and every incident event published as JSON to ``source.kafka.alerts_topic``.

One message per anomaly, key = sensor id (one sensor's alerts stay in order in one
partition), value = the anomaly record as JSON with ``"type": "anomaly"``::

    {"type": "anomaly", "sensor_id": "PT-0003", "event_time": "2026-01-12T07:35:00Z", "score": 0.91,
     "threshold": 0.42, "severity": 2.17, "values": {"pressure": 21.4}, "expected": {"pressure": 30.2},
     "explanation": "...", "model_version": "20260325T160000Z-1a2b3c", "batch_id": 12,
     "detected_at": "2026-03-25T16:00:03.120000Z"}

One message per incident event (open, update, close) of the batch, key = incident id (one
incident's events stay in order), value::

    {"type": "incident", "event": "open", "batch_id": 12,
     "incident": {"incident_id": "INC-...", "kind": "leak", "status": "new", "zone": "north",
                  "sensors": [{"sensor_id": "PT-0003", "share": 0.8, ...}], ...}}

Delivery: **exactly once per micro-batch for ``read_committed`` consumers** when the
checkpoint is on a local file system (the usual case). The sink reads the streaming query's id
from ``<checkpoint>/metadata`` and publishes each batch's anomalies and incident events in one
Kafka transaction (``transactional.id = sentinel-alerts-<query id>``) together with a progress
marker ``{"batch_id": N}`` on the compacted topic :data:`PROGRESS_TOPIC` (key ``<query
id>/<alerts topic>``). After a crash the restarted job's producer fences the dead one (its open
transaction is aborted), reads the last committed batch id and skips a replayed batch that was
already published. Consumers must read with ``isolation.level=read_committed`` (librdkafka's
default; the Java client's default is ``read_uncommitted``, which can also see aborted
messages).

Otherwise (checkpoint on HDFS/S3, or a consumer reading uncommitted) it is **at least once**:
a replayed micro-batch re-publishes its messages. Consumers then de-duplicate anomalies on the
natural key ``(sensor_id, event_time, model_version)`` and incident events on ``(incident_id,
event, batch_id)``, which every message carries.

A failed delivery or commit raises, so the micro-batch fails loudly and is re-run after a
restart.
"""
from __future__ import annotations

import json
import logging
import math
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from sentinel.config import KafkaSettings
from sentinel.store.sinks.base import INCIDENT_EVENTS, BatchRecords, incident_rows

log = logging.getLogger("sentinel.sinks.kafka_alerts")

PROGRESS_TOPIC = "_sentinel-alerts-progress"
TXN_TIMEOUT_MS = 60_000
COMMIT_TIMEOUT_S = 60.0


class AlertPublishError(RuntimeError):
    """Alerts of a micro-batch were not (all) delivered; the batch fails and is re-run."""


def _iso(ts) -> str | None:
    if ts is None or pd.isna(ts):
        return None
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.isoformat().replace("+00:00", "Z")


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _json(v):
    """A JSON field (text in the frames) as the object it holds; null stays None."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    return json.loads(v) if isinstance(v, (str, bytes)) else v


def _text(v) -> str | None:
    return None if v is None or (isinstance(v, float) and v != v) else str(v)


def _dumps(msg: dict) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode("utf-8")


def alert_messages(anomalies: pd.DataFrame) -> list[tuple[bytes, bytes]]:
    """Anomaly records (``stream.anomaly_records``) -> (key, JSON value) per record."""
    out = []
    has_expected, has_explanation = "expected" in anomalies, "explanation" in anomalies
    for r in anomalies.itertuples(index=False):
        msg = {"type": "anomaly", "sensor_id": str(r.sensor_id), "event_time": _iso(r.event_time),
               "score": _num(r.score), "threshold": _num(r.threshold), "severity": _num(r.severity),
               "values": _json(r.values) or {}, "expected": _json(r.expected) if has_expected else None,
               "explanation": _text(r.explanation) if has_explanation else None,
               "model_version": str(r.model_version), "batch_id": int(r.batch_id), "detected_at": _iso(r.detected_at)}
        out.append((str(r.sensor_id).encode("utf-8"), _dumps(msg)))
    return out


def incident_record(row: dict) -> dict:
    """A stored incident row (INCIDENT_STREAM_COLUMNS) as JSON-ready values."""
    out = {}
    for k, v in row.items():
        if k in ("opened_at", "last_seen", "closed_at", "detected_at", "updated_at"):
            out[k] = _iso(v)
        elif k == "sensors":
            out[k] = _json(v) or []
        elif k == "peak_severity":
            out[k] = _num(v)
        elif k in ("readings", "batch_id"):
            out[k] = int(v)
        elif k == "muted":
            out[k] = bool(v)
        else:
            out[k] = _text(v)
    return out


def incident_messages(incidents: pd.DataFrame, events: pd.DataFrame, batch_id: int) -> list[tuple[bytes, bytes]]:
    """The batch's incident events -> (key = incident id, JSON value) each, in the events' order,
    carrying the incident record this batch wrote."""
    if events is None or not len(events):
        return []
    records = {r["incident_id"]: r for r in incident_rows(incidents).to_dict("records")}
    out = []
    for ev in events.itertuples(index=False):
        iid, event = str(ev.incident_id), str(ev.event)
        if event not in INCIDENT_EVENTS:
            raise ValueError(f"incident event {event!r} is not one of {', '.join(INCIDENT_EVENTS)}")
        if iid not in records:
            raise ValueError(f"incident event {event!r} names incident {iid!r}, which the batch's incidents lack")
        msg = {"type": "incident", "event": event, "incident": incident_record(records[iid]), "batch_id": int(batch_id)}
        out.append((iid.encode("utf-8"), _dumps(msg)))
    return out


def checkpoint_query_id(checkpoint: str) -> str | None:
    """The streaming query's id from ``<checkpoint>/metadata`` (written by Spark when the query
    starts; the same on every restart from that checkpoint, new for a fresh one). None when the
    checkpoint is not on a local file system or has no metadata yet."""
    u = urlparse(checkpoint)
    if u.scheme not in ("", "file"):
        return None
    path = Path(u.path if u.scheme == "file" else checkpoint) / "metadata"
    try:
        qid = json.loads(path.read_text(encoding="utf-8").splitlines()[0])["id"]
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return str(uuid.UUID(qid))


class KafkaAlertsSink:
    name = "kafka_alerts"

    def __init__(self, kafka: KafkaSettings, checkpoint: str, partitions: int = 4,
                 progress_topic: str = PROGRESS_TOPIC):
        from sentinel.ingest.kafka import client_options, parse_bootstrap
        self.bootstrap = parse_bootstrap(kafka.bootstrap_servers)
        self.topic = kafka.alerts_topic
        self.options = client_options(kafka.options)
        self.checkpoint = checkpoint
        self.partitions = partitions
        self.progress_topic = progress_topic
        self.producer = None
        self.transactional = False
        self.progress_key: bytes | None = None
        self.last_batch = -1
        self.published = 0
        self.wants_scores = False  # alerts never carry every score

    # ------------------------------------------------------------ contract
    def setup(self) -> None:
        """Check the broker answers (bounded) and create the topics if missing."""
        from sentinel.ingest.kafka import ensure_topic
        ensure_topic(self.bootstrap, self.topic, self.partitions, options=self.options)
        ensure_topic(self.bootstrap, self.progress_topic, 1, options=self.options,
                     config={"cleanup.policy": "compact"})

    def write(self, records: BatchRecords) -> None:
        messages = alert_messages(records.anomalies) if len(records.anomalies) else []
        messages += incident_messages(records.incidents, records.incident_events, records.batch_id)
        if not messages:
            return
        if self.producer is None:
            self._start()
        if records.batch_id <= self.last_batch:
            log.info("alerts of batch %d were already published to %s (batch replayed after a restart): skipped",
                     records.batch_id, self.topic)
            return
        self._publish(messages, records.batch_id)

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(10)
            self.producer = None

    # ------------------------------------------------------------ internals
    def _start(self) -> None:
        from confluent_kafka import KafkaException, Producer
        from sentinel.ingest.kafka import producer_config
        qid = checkpoint_query_id(self.checkpoint)
        if qid is None:
            log.warning("no query id in %s/metadata (checkpoint not on a local file system): alerts on %s are "
                        "published at least once; consumers de-duplicate on (sensor_id, event_time, "
                        "model_version)", self.checkpoint, self.topic)
            self.producer = Producer(producer_config(self.bootstrap, self.options, **{"linger.ms": 5}))
            return
        self.progress_key = f"{qid}/{self.topic}".encode("utf-8")
        self.producer = Producer(producer_config(self.bootstrap, self.options, **{
            "linger.ms": 5, "transactional.id": f"sentinel-alerts-{qid}",
            "transaction.timeout.ms": TXN_TIMEOUT_MS}))
        try:
            # Fences an earlier producer of this query (a crashed run) and aborts its open transaction.
            self.producer.init_transactions(COMMIT_TIMEOUT_S)
        except KafkaException as exc:
            raise AlertPublishError(f"cannot start a Kafka transaction on {self.bootstrap} for alerts topic "
                                    f"{self.topic!r} ({exc.args[0].str()}): check the broker and its "
                                    "transaction.state.log settings") from None
        self.transactional = True
        self.last_batch = self._read_progress()
        log.info("alerts to %s: transactional, query %s, last published batch %d", self.topic, qid, self.last_batch)

    def _read_progress(self, timeout_s: float = 30.0) -> int:
        """Newest committed batch id for this query and topic on the progress topic (-1: none)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
        from sentinel.ingest.kafka import client_logger, read_to_end
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "sentinel-alerts-progress-reader",
                      "enable.auto.commit": False, "isolation.level": "read_committed",
                      "enable.partition.eof": True, "logger": client_logger(), **self.options})
        try:
            md = c.list_topics(self.progress_topic, timeout=10)
            parts = [TopicPartition(self.progress_topic, p, OFFSET_BEGINNING)
                     for p in md.topics[self.progress_topic].partitions]
            last = -1
            for msg in read_to_end(c, parts, timeout_s, AlertPublishError):
                if msg.key() == self.progress_key and msg.value():
                    last = max(last, int(json.loads(msg.value())["batch_id"]))
            return last
        finally:
            c.close()

    def _publish(self, messages: list[tuple[bytes, bytes]], batch_id: int) -> None:
        from confluent_kafka import KafkaException
        p = self.producer
        errors: list[str] = []

        def on_delivery(err, _msg):
            if err is not None:
                errors.append(err.str())

        try:
            if self.transactional:
                p.begin_transaction()
            for key, value in messages:
                while True:
                    try:
                        p.produce(self.topic, value=value, key=key, on_delivery=on_delivery)
                        break
                    except BufferError:
                        p.poll(0.05)
                p.poll(0)
            if self.transactional:
                p.produce(self.progress_topic, key=self.progress_key,
                          value=json.dumps({"batch_id": int(batch_id), "topic": self.topic,
                                            "alerts": len(messages)}).encode("utf-8"), on_delivery=on_delivery)
                p.commit_transaction(COMMIT_TIMEOUT_S)   # flushes; fails if any message failed
                left = 0
            else:
                left = p.flush(COMMIT_TIMEOUT_S)
        except KafkaException as exc:
            err = exc.args[0]
            if self.transactional and err.txn_requires_abort():
                try:
                    p.abort_transaction(COMMIT_TIMEOUT_S)
                except KafkaException:
                    pass
            raise AlertPublishError(f"publishing {len(messages)} alerts of batch {batch_id} to {self.topic!r} "
                                    f"failed ({err.str()}): the micro-batch fails and is re-run on restart") from None
        if errors or left:
            why = errors[0] if errors else f"{left} still queued after {COMMIT_TIMEOUT_S:.0f} s"
            raise AlertPublishError(f"{len(errors) + left} of {len(messages)} alerts of batch {batch_id} were not "
                                    f"delivered to {self.topic!r} ({why}): the micro-batch fails and is re-run")
        self.last_batch = batch_id
        self.published += len(messages)
