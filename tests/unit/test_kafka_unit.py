"""`sentinel produce` arguments, targets, keys and option translation; alert message format.
No broker, no Spark."""
from __future__ import annotations

import io
import json
import uuid

import pandas as pd
import pytest

from sentinel.config import ConfigError, load_settings
from sentinel.ingest.feed import FeedError


def _args(*argv):
    from sentinel.cli import build_parser
    return build_parser().parse_args(["produce", *argv])


def test_produce_is_a_cli_command_with_defaults():
    a = _args("--file", "events.jsonl")
    assert (a.command, a.file, a.rate, a.partitions, a.bootstrap, a.topic, a.target, a.options) == \
        ("produce", "events.jsonl", 0.0, 4, None, None, None, [])
    a = _args("--file", "-", "--bootstrap", "k1:9092", "--topic", "t", "--rate", "250", "--option", "linger.ms=50",
              "--option", "compression.type=zstd", "--partitions", "0")
    assert (a.bootstrap, a.topic, a.rate, a.partitions, a.options) == \
        ("k1:9092", "t", 250.0, 0, ["linger.ms=50", "compression.type=zstd"])


def test_produce_needs_a_file():
    with pytest.raises(SystemExit):
        _args("--topic", "t")


def test_target_defaults_come_from_settings():
    from sentinel.cli.produce import resolve_target
    s = load_settings(None, ['source.kafka.bootstrap_servers="broker-a:9092, broker-b:9092"',
                             'source.kafka.topic="plant-7"'])
    assert resolve_target(_args("--file", "f"), s) == ("broker-a:9092,broker-b:9092", "plant-7")
    assert resolve_target(_args("--file", "f", "--topic", "other"), s) == ("broker-a:9092,broker-b:9092", "other")
    assert resolve_target(_args("--file", "f", "--bootstrap", "h:1"), s) == ("h:1", "plant-7")


def test_target_url():
    from sentinel.cli.produce import resolve_target
    s = load_settings()
    assert resolve_target(_args("--file", "f", "--target", "kafka://10.0.0.5:19092/sensor-events"), s) == \
        ("10.0.0.5:19092", "sensor-events")
    with pytest.raises(ConfigError, match="not both"):
        resolve_target(_args("--file", "f", "--target", "kafka://h:1/t", "--topic", "x"), s)
    with pytest.raises(ConfigError, match="kafka://"):
        resolve_target(_args("--file", "f", "--target", "tcp://h:1"), s)
    with pytest.raises(FeedError, match="names no topic"):
        resolve_target(_args("--file", "f", "--target", "kafka://h:1"), s)
    with pytest.raises(FeedError):
        resolve_target(_args("--file", "f", "--target", "kafka://h/t"), s)


@pytest.mark.parametrize("text,ok", [("127.0.0.1:19092", "127.0.0.1:19092"), (" a:1 , b:2 ", "a:1,b:2"),
                                     ("[::1]:9092", "[::1]:9092"), ("localhost", None), ("h:", None),
                                     ("h:99999", None), (":9092", None), ("", None), ("h:port", None)])
def test_parse_bootstrap(text, ok):
    from sentinel.ingest.kafka import parse_bootstrap
    if ok is None:
        with pytest.raises(ConfigError, match="HOST:PORT"):
            parse_bootstrap(text)
    else:
        assert parse_bootstrap(text) == ok


@pytest.mark.parametrize("topic,ok", [("sensor-events", True), ("a.b_c-1", True), ("bad topic", False),
                                      ("", False), ("x" * 250, False), ("..", False), ("ñ", False)])
def test_topic_names(topic, ok):
    from sentinel.ingest.kafka import check_topic_name
    if ok:
        assert check_topic_name(topic) == topic
    else:
        with pytest.raises(ConfigError, match="topic name"):
            check_topic_name(topic)


def test_parse_options():
    from sentinel.cli.produce import parse_options
    assert parse_options(["linger.ms=50", "sasl.password=a=b", " acks = all "]) == \
        {"linger.ms": "50", "sasl.password": "a=b", "acks": "all"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_options(["linger.ms"])


def test_negative_rate_is_refused():
    from sentinel.cli.produce import run_produce
    with pytest.raises(ConfigError, match="--rate"):
        run_produce(_args("--file", "f", "--rate", "-1"), load_settings())


@pytest.mark.parametrize("line,key", [
    ('{"sensor_id": "PT-0001", "timestamp": "2026-01-01T00:00:00Z", "pressure": 3}', "PT-0001"),
    (b'{"sensor_id": 12, "pressure": 3}', "12"),
    ('{"sensor_id": " PT-7 "}', "PT-7"),
    ('{"sensor_id": true}', None), ('{"sensor_id": null}', None), ('{"sensor_id": ""}', None),
    ('{"pressure": 3}', None), ("[1, 2]", None), ("not json", None), (b"\xff\xfe\x00", None), ("", None),
])
def test_sensor_key(line, key):
    from sentinel.ingest.kafka import sensor_key
    assert sensor_key(line) == key


def test_sensor_key_follows_the_configured_field():
    from sentinel.ingest.kafka import sensor_key
    assert sensor_key('{"id_sensor": "AQ-3", "sensor_id": "x"}', "id_sensor") == "AQ-3"


def test_file_pairs_keeps_lines_as_they_are():
    from sentinel.ingest.kafka import file_pairs
    data = (b'{"sensor_id": "A", "pressure": 1}\r\n'
            b"not json\n"
            b"\n"
            b"\xff\xfe garbage\n"
            b'{"sensor_id": "B", "pressure": 2}')          # no final newline
    assert list(file_pairs(io.BytesIO(data))) == [
        ("A", b'{"sensor_id": "A", "pressure": 1}'), (None, b"not json"), (None, b""),
        (None, b"\xff\xfe garbage"), ("B", b'{"sensor_id": "B", "pressure": 2}')]
    assert list(file_pairs(io.BytesIO(b"x\n"))) == [(None, b"x")]  # final newline: no empty message


def test_client_options_translate_java_names():
    from sentinel.ingest.kafka import client_options
    jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
            'username="svc-sentinel" password="p\\"w0rd";')
    out = client_options({"kafka.security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                          "kafka.sasl.jaas.config": jaas, "ssl.truststore.location": "/etc/kafka/trust.jks",
                          "ssl.truststore.password": "x", "ssl.ca.location": "/etc/kafka/ca.pem",
                          "kafka.bootstrap.servers": "ignored:1"})
    assert out == {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "svc-sentinel",
                   "sasl.password": 'p"w0rd', "ssl.ca.location": "/etc/kafka/ca.pem"}
    assert client_options({}) == {} and client_options(None) == {}
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required username='a' password='b c';"
    assert client_options({"sasl.jaas.config": scram}) == {"sasl.username": "a", "sasl.password": "b c"}
    assert client_options({"sasl.jaas.config": "com.sun.security.auth.module.Krb5LoginModule required;"}) == {}


def test_producer_config_is_idempotent_and_options_win():
    from sentinel.ingest.kafka import producer_config
    c = producer_config("h:1", {"linger.ms": 100, "security.protocol": "SSL"})
    assert c["enable.idempotence"] is True and c["acks"] == "all"
    assert c["linger.ms"] == 100 and c["security.protocol"] == "SSL" and c["bootstrap.servers"] == "h:1"


def _anomalies():
    from sentinel.stream.writer import anomaly_records
    df = pd.DataFrame({"sensor_id": ["PT-0002", "PT-0001"],
                       "event_time": pd.to_datetime(["2026-01-12T07:35:00Z", "2026-01-12T07:40:00.250Z"], format="ISO8601"),
                       "score": [0.9, 2.0], "threshold": [0.45, 0.5], "values": [[21.4], [19.0]]})
    return anomaly_records(df, "v7", 12, ["pressure"])


def test_alert_messages_carry_the_natural_key():
    from sentinel.store.sinks.kafka_alerts import alert_messages
    msgs = alert_messages(_anomalies())
    assert [k for k, _ in msgs] == [b"PT-0002", b"PT-0001"]
    first, second = (json.loads(v) for _, v in msgs)
    assert first == {"type": "anomaly", "sensor_id": "PT-0002", "event_time": "2026-01-12T07:35:00Z", "score": 0.9,
                     "threshold": 0.45, "severity": pytest.approx(2.0), "values": {"pressure": 21.4},
                     "expected": None, "explanation": None, "model_version": "v7", "batch_id": 12,
                     "detected_at": first["detected_at"]}
    assert second["event_time"] == "2026-01-12T07:40:00.250000Z"
    assert first["detected_at"].endswith("Z")
    explained = _anomalies().assign(expected=['{"pressure": 30.5}', None], explanation=["low pressure", None])
    third, fourth = (json.loads(v) for _, v in alert_messages(explained))
    assert third["expected"] == {"pressure": 30.5} and third["explanation"] == "low pressure"
    assert fourth["expected"] is None and fourth["explanation"] is None


def test_incident_messages_are_keyed_by_incident_and_carry_the_record():
    from sentinel.store.sinks.kafka_alerts import incident_messages
    from tests.records import INC_A, INC_C, incident
    incidents = pd.DataFrame([incident(**INC_A, batch_id=4), incident(**INC_C, batch_id=4)])
    events = pd.DataFrame({"incident_id": ["INC-C", "INC-A"], "event": ["update", "open"]})
    msgs = incident_messages(incidents, events, 4)
    assert [k for k, _ in msgs] == [b"INC-C", b"INC-A"]  # the events' order
    c, a = (json.loads(v) for _, v in msgs)
    assert (c["type"], c["event"], c["batch_id"]) == ("incident", "update", 4)
    assert a["incident"]["incident_id"] == "INC-A" and a["incident"]["opened_at"] == "2026-03-20T11:30:00Z"
    assert [s["sensor_id"] for s in a["incident"]["sensors"]] == ["PT-1", "PT-2"]
    assert c["incident"]["muted"] is True and c["incident"]["closed_at"] is None
    assert incident_messages(incidents, events.iloc[:0], 4) == []
    with pytest.raises(ValueError, match="'reopen' is not one of open, update, close"):
        incident_messages(incidents, events.assign(event="reopen"), 4)
    with pytest.raises(ValueError, match="INC-X"):
        incident_messages(incidents, pd.DataFrame({"incident_id": ["INC-X"], "event": ["open"]}), 4)


def test_checkpoint_query_id(tmp_path):
    from sentinel.store.sinks.kafka_alerts import checkpoint_query_id
    qid = str(uuid.uuid4())
    (tmp_path / "metadata").write_text(json.dumps({"id": qid}) + "\n")
    assert checkpoint_query_id(str(tmp_path)) == qid
    assert checkpoint_query_id(f"file://{tmp_path}") == qid
    assert checkpoint_query_id(str(tmp_path / "fresh")) is None
    assert checkpoint_query_id("s3a://bucket/checkpoints/deploy") is None
    (tmp_path / "metadata").write_text("garbage")
    assert checkpoint_query_id(str(tmp_path)) is None


def test_alerts_sink_without_anomalies_does_not_touch_kafka():
    from sentinel.store.sinks.kafka_alerts import KafkaAlertsSink
    s = load_settings(None, ['source.kafka.bootstrap_servers="127.0.0.1:1"', 'source.kafka.alerts_topic="a"'])
    from sentinel.store.sinks.base import BatchRecords
    sink = KafkaAlertsSink(s.source.kafka, "/nonexistent")
    sink.write(BatchRecords(0, anomalies=_anomalies().iloc[0:0]))
    assert sink.producer is None and sink.name == "kafka_alerts"
