"""The alert-topic sink against the real broker (no Spark): a micro-batch replayed after a
restart is published once (transactions + progress marker), anomalies and incident events
alike, a crashed run's open transaction is aborted, and without a local checkpoint id the sink
falls back to at-least-once."""
from __future__ import annotations

import json
import uuid

import pandas as pd
import pytest

from tests.conftest import need_service

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def bootstrap():
    return need_service("SENTINEL_KAFKA_BOOTSTRAP", "Kafka")


def _records(batch_id: int, n: int = 3):
    from sentinel.store.sinks.base import BatchRecords
    return BatchRecords(batch_id, anomalies=_anomalies(batch_id, n))


def _anomalies(batch_id: int, n: int = 3) -> pd.DataFrame:
    from sentinel.stream.writer import anomaly_records
    t0 = pd.Timestamp("2026-01-12T00:00:00Z") + pd.Timedelta(hours=batch_id)
    df = pd.DataFrame({"sensor_id": [f"PT-{i + 1:04d}" for i in range(n)],
                       "event_time": [t0 + pd.Timedelta(minutes=5 * i) for i in range(n)],
                       "score": 1.0, "threshold": 0.5, "values": [[20.0 + i] for i in range(n)]})
    return anomaly_records(df, "v1", batch_id, ["pressure"])


def _sink(bootstrap, topic, checkpoint):
    from sentinel.config import load_settings
    from sentinel.store.sinks.kafka_alerts import KafkaAlertsSink
    s = load_settings(None, [f'source.kafka.bootstrap_servers="{bootstrap}"', f'source.kafka.alerts_topic="{topic}"'])
    sink = KafkaAlertsSink(s.source.kafka, str(checkpoint), partitions=2)
    sink.setup()
    return sink


def _published(bootstrap, topic):
    from sentinel.ingest.kafka import consume_all
    return sorted((json.loads(m.value())["batch_id"], json.loads(m.value())["sensor_id"])
                  for m in consume_all(bootstrap, topic))


def test_replayed_batch_is_published_once_and_crashed_transaction_is_aborted(bootstrap, tmp_path):
    topic = f"it-alerts-{uuid.uuid4().hex[:10]}"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "metadata").write_text(json.dumps({"id": str(uuid.uuid4())}) + "\n")  # as Spark writes it
    first = _sink(bootstrap, topic, ckpt)
    first.write(_records(0))
    first.write(_records(1))
    assert first.transactional and first.published == 6
    # Crash in the middle of batch 2: messages sent inside a transaction that never commits.
    first.producer.begin_transaction()
    for key, value in [(b"PT-0009", b'{"batch_id": 2, "sensor_id": "PT-0009"}')]:
        first.producer.produce(topic, value=value, key=key)
    first.producer.flush(10)

    # Restart from the same checkpoint: Spark replays batch 1 (not committed in its commit log)
    # and then runs batch 2 again.
    second = _sink(bootstrap, topic, ckpt)
    second.write(_records(1))      # fences `first`, aborts its open transaction
    assert second.last_batch == 1 and second.published == 0   # replay skipped
    second.write(_records(2))
    second.close()
    assert _published(bootstrap, topic) == sorted([(b, f"PT-{i + 1:04d}") for b in (0, 1, 2) for i in range(3)])


def test_without_checkpoint_id_alerts_are_at_least_once(bootstrap, tmp_path):
    topic = f"it-alerts-alo-{uuid.uuid4().hex[:10]}"
    sink = _sink(bootstrap, topic, tmp_path / "no-metadata-here")
    sink.write(_records(0))
    sink.close()
    again = _sink(bootstrap, topic, tmp_path / "no-metadata-here")
    again.write(_records(0))   # a replay re-publishes ...
    again.close()
    pub = _published(bootstrap, topic)
    assert not again.transactional and len(pub) == 6 and len(set(pub)) == 3  # ... consumers dedupe on the key


def test_incident_events_share_the_batch_transaction_and_are_published_once(bootstrap, tmp_path):
    """Anomalies and incident events of a batch go out in one transaction: after a crash and a
    replay, a read_committed consumer sees each event once, keyed by incident id."""
    from sentinel.ingest.kafka import consume_all
    from sentinel.store.sinks.base import BatchRecords
    from tests import records as R
    topic = f"it-alerts-inc-{uuid.uuid4().hex[:10]}"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "metadata").write_text(json.dumps({"id": str(uuid.uuid4())}) + "\n")
    first = _sink(bootstrap, topic, ckpt)
    first.write(R.batch(1))   # 1 anomaly (PT-2), INC-B and INC-C open
    first.write(R.batch(2))   # 1 anomaly (PT-1), INC-A open, INC-B close
    assert first.published == 6
    first.producer.begin_transaction()  # crash inside batch 3
    first.producer.produce(topic, key=b"INC-A", value=b'{"type": "incident", "event": "bogus", "batch_id": 3}')
    first.producer.flush(10)
    second = _sink(bootstrap, topic, ckpt)
    second.write(R.batch(2))  # the replay: skipped
    update = R.incident(**{**R.INC_A, "readings": 4, "last": "11:45"}, batch_id=3)
    second.write(BatchRecords(3, incidents=pd.DataFrame([update]),
                              incident_events=pd.DataFrame({"incident_id": ["INC-A"], "event": ["update"]})))
    second.close()
    msgs = [(m.key().decode(), json.loads(m.value())) for m in consume_all(bootstrap, topic)]
    anomalies = sorted((v["batch_id"], v["sensor_id"]) for _, v in msgs if v["type"] == "anomaly")
    events = sorted((v["batch_id"], k, v["event"]) for k, v in msgs if v["type"] == "incident")
    assert anomalies == [(1, "PT-2"), (2, "PT-1")]
    assert events == [(1, "INC-B", "open"), (1, "INC-C", "open"), (2, "INC-A", "open"), (2, "INC-B", "close"),
                      (3, "INC-A", "update")]
    assert all(v["incident"]["incident_id"] == k for k, v in msgs if v["type"] == "incident")
    close = next(v["incident"] for k, v in msgs if v.get("event") == "close")
    assert (close["status"], close["closed_at"]) == ("closed", "2026-03-20T11:00:00Z")
    upd = next(v["incident"] for k, v in msgs if v.get("event") == "update")
    assert (upd["readings"], upd["last_seen"], upd["sensors"][1]["sensor_id"]) == (4, "2026-03-20T11:45:00Z", "PT-2")
    explained = next(v for _, v in msgs if v["type"] == "anomaly" and v["sensor_id"] == "PT-1")
    assert explained["expected"] == {"pressure": 35.0} and explained["explanation"] == "pressure 36 vs expected 35"
