"""The alert-topic sink against the real broker (no Spark): a micro-batch replayed after a
restart is published once (transactions + progress marker), a crashed run's open transaction
is aborted, and without a local checkpoint id the sink falls back to at-least-once."""
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
    empty = pd.DataFrame()

    first = _sink(bootstrap, topic, ckpt)
    first.write(_anomalies(0), empty, 0)
    first.write(_anomalies(1), empty, 1)
    assert first.transactional and first.published == 6
    # Crash in the middle of batch 2: messages sent inside a transaction that never commits.
    first.producer.begin_transaction()
    for key, value in [(b"PT-0009", b'{"batch_id": 2, "sensor_id": "PT-0009"}')]:
        first.producer.produce(topic, value=value, key=key)
    first.producer.flush(10)

    # Restart from the same checkpoint: Spark replays batch 1 (not committed in its commit log)
    # and then runs batch 2 again.
    second = _sink(bootstrap, topic, ckpt)
    second.write(_anomalies(1), empty, 1)      # fences `first`, aborts its open transaction
    assert second.last_batch == 1 and second.published == 0   # replay skipped
    second.write(_anomalies(2), empty, 2)
    second.close()
    assert _published(bootstrap, topic) == sorted([(b, f"PT-{i + 1:04d}") for b in (0, 1, 2) for i in range(3)])


def test_without_checkpoint_id_alerts_are_at_least_once(bootstrap, tmp_path):
    topic = f"it-alerts-alo-{uuid.uuid4().hex[:10]}"
    sink = _sink(bootstrap, topic, tmp_path / "no-metadata-here")
    sink.write(_anomalies(0), pd.DataFrame(), 0)
    sink.close()
    again = _sink(bootstrap, topic, tmp_path / "no-metadata-here")
    again.write(_anomalies(0), pd.DataFrame(), 0)   # a replay re-publishes ...
    again.close()
    pub = _published(bootstrap, topic)
    assert not again.transactional and len(pub) == 6 and len(set(pub)) == 3  # ... consumers dedupe on the key
