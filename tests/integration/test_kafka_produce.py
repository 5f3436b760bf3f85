"""`sentinel produce`, `sentinel simulate --stream kafka://` and ensure_topic against the real
broker (no Spark)."""
from __future__ import annotations

import json
import logging
import time
import uuid

import pytest

from tests.conftest import need_service

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def bootstrap():
    return need_service("SENTINEL_KAFKA_BOOTSTRAP", "Kafka")


@pytest.fixture(autouse=True)
def _restore_logging():
    """cli.main() points the root logger at the (captured) stderr of the moment; put the
    previous handlers back so later log lines do not hit a closed capture stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_produce_file_sends_every_line_as_is_keyed_by_sensor(bootstrap, tmp_path, capsys):
    from sentinel.cli import main
    from sentinel.ingest.kafka import consume_all
    lines = [b'{"sensor_id": "PT-0001", "timestamp": "2026-01-12T00:00:00Z", "pressure": 31.4}',
             b'{"sensor_id": "PT-0002", "timestamp": "2026-01-12T00:00:00Z", "pressure": 28.0}',
             b"not json at all",
             b"\xff\xfe\x00 binary \x9c",
             b"",
             b'{"timestamp": "2026-01-12T00:05:00Z", "pressure": 30.0}',
             b'{"sensor_id": "PT-0001", "timestamp": "2026-01-12T00:05:00Z", "pressure": "high"}']
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    topic = _topic("it-produce")
    assert main(["produce", "--file", str(f), "--bootstrap", bootstrap, "--topic", topic, "--rate", "500",
                 "--partitions", "3"]) == 0
    assert json.loads(capsys.readouterr().out) == {"produced": len(lines), "topic": topic, "bootstrap": bootstrap}
    msgs = consume_all(bootstrap, topic)
    assert sorted(m.value() or b"" for m in msgs) == sorted(lines)
    keys = {m.value(): m.key() for m in msgs}
    assert keys[lines[0]] == b"PT-0001" and keys[lines[1]] == b"PT-0002" and keys[lines[6]] == b"PT-0001"
    assert keys[lines[2]] is None and keys[lines[3]] is None and keys[lines[5]] is None
    assert len({m.partition() for m in msgs if m.key() == b"PT-0001"}) == 1  # one sensor, one partition


def test_produce_target_url_and_stdin(bootstrap, monkeypatch, capsys):
    import io
    import sys
    from sentinel.cli import main
    from sentinel.ingest.kafka import consume_all
    topic = _topic("it-produce-url")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"sensor_id": "S1"}\n{"sensor_id": "S2"}\n')))
    assert main(["produce", "--file", "-", "--target", f"kafka://{bootstrap}/{topic}"]) == 0
    assert sorted(m.key() for m in consume_all(bootstrap, topic)) == [b"S1", b"S2"]


def test_simulate_streams_to_kafka(bootstrap):
    from sentinel.cli import main
    from sentinel.ingest.kafka import consume_all
    topic = _topic("it-simulate")
    # 3 sensors, 0.25 day of 5-minute readings = 216 events
    assert main(["simulate", "--sensors", "3", "--days", "0.25", "--stream", f"kafka://{bootstrap}/{topic}",
                 "--rate", "2000"]) == 0
    msgs = consume_all(bootstrap, topic)
    assert len(msgs) == 216
    for m in msgs:
        assert json.loads(m.value())["sensor_id"] == m.key().decode()


def test_unreachable_broker_is_one_sentence_within_the_timeout(tmp_path, capsys):
    from sentinel.cli import main
    f = tmp_path / "e.jsonl"
    f.write_text('{"sensor_id": "A"}\n')
    t0 = time.monotonic()
    rc = main(["produce", "--file", str(f), "--bootstrap", "127.0.0.1:1", "--topic", "t", "--connect-timeout", "2"])
    took = time.monotonic() - t0
    err = capsys.readouterr().err.strip()
    assert rc == 2 and took < 10
    assert err.count("\n") == 0 and err.startswith("error: Kafka broker 127.0.0.1:1 did not answer")
    assert "kafka.sh start" in err


def test_ensure_topic(bootstrap):
    from confluent_kafka.admin import AdminClient
    from sentinel.ingest.kafka import ensure_topic
    topic = _topic("it-ensure")
    assert ensure_topic(bootstrap, topic, partitions=3) is True
    assert ensure_topic(bootstrap, topic, partitions=5) is False  # exists: left alone
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == 3
