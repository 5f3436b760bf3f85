"""Kafka on the Python side: producing sensor events, creating topics, reading a topic.

The deploy job *reads* Kafka with Spark's own connector (``stream.read_source``); everything
here writes to Kafka from plain Python with confluent-kafka (librdkafka): the simulator's live
feed, ``sentinel produce`` for a file of events, and the alert publisher
(``sinks.kafka_alerts``).

Producers are idempotent (``enable.idempotence=true``, hence ``acks=all``): a retried send
after a lost acknowledgement is de-duplicated by the broker, and each key's messages keep
their order. Events are keyed by sensor id, so one sensor's readings stay in one partition,
in order.

Client options: ``source.kafka.options`` holds *Java* client names (Spark passes them to its
consumer as ``kafka.*``). librdkafka shares most names (``security.protocol``,
``sasl.mechanism``, ``ssl.ca.location`` ...); :func:`client_options` translates the common
Java-only one (``sasl.jaas.config`` with a username/password) and drops the rest with a
warning naming them.
"""
from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Iterable, Iterator

from sentinel.config import ConfigError
from sentinel.ingest.feed import FeedError, Pacer

log = logging.getLogger("sentinel.kafka")

DEFAULT_PARTITIONS = 4
CONNECT_TIMEOUT_S = 10.0

# Java client settings librdkafka does not know (JKS stores, JAAS, Java class names).
_JAVA_ONLY = ("ssl.truststore.", "ssl.keystore.type", "ssl.keystore.password", "sasl.login.",
              "sasl.client.callback", "sasl.kerberos.min.time", "sasl.kerberos.ticket",
              "ssl.protocol", "ssl.provider", "ssl.trustmanager.", "ssl.keymanager.",
              "ssl.secure.random", "key.deserializer", "value.deserializer", "key.serializer",
              "value.serializer", "interceptor.classes")
_JAAS_CRED = re.compile(r"""(username|password)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)')""")


class KafkaFeedError(FeedError):
    """Broker unreachable, topic cannot be created or a message was not delivered."""


# ---------------------------------------------------------------- configuration
def client_options(options: dict[str, str] | None) -> dict[str, str]:
    """``source.kafka.options`` (Java client names, optional ``kafka.`` prefix) -> librdkafka
    properties. ``sasl.jaas.config`` with ``username="..." password="..."`` becomes
    ``sasl.username``/``sasl.password``; other Java-only keys are dropped with a warning."""
    out: dict[str, str] = {}
    dropped = []
    for key, value in (options or {}).items():
        key = key[len("kafka."):] if key.startswith("kafka.") else key
        if key == "bootstrap.servers":
            continue  # always comes from source.kafka.bootstrap_servers / --bootstrap
        if key == "sasl.jaas.config":
            creds = {k: dq.replace('\\"', '"') if dq else sq for k, dq, sq in _JAAS_CRED.findall(value)}
            if "username" in creds and "password" in creds:
                out["sasl.username"], out["sasl.password"] = creds["username"], creds["password"]
            else:
                dropped.append(key)
            continue
        if key.startswith(_JAVA_ONLY):
            dropped.append(key)
            continue
        out[key] = value
    if dropped:
        log.warning("Kafka options not understood by librdkafka, not used by the Python producer: %s "
                    "(give the librdkafka equivalent too, e.g. ssl.ca.location for a PEM truststore)",
                    ", ".join(sorted(dropped)))
    return out


def client_logger() -> logging.Logger:
    """Where librdkafka's own log lines go (instead of raw stderr). Quiet unless debugging
    (``-v``): failures reach the user as one sentence from this module, not as a stream of
    reconnect messages."""
    lg = logging.getLogger("sentinel.kafka.client")
    lg.setLevel(logging.DEBUG if logging.getLogger().isEnabledFor(logging.DEBUG) else logging.CRITICAL)
    return lg


def admin_config(bootstrap: str, options: dict[str, str] | None = None) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "logger": client_logger(), **(options or {})}


def producer_config(bootstrap: str, options: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """Idempotent, batching producer settings; ``options`` (librdkafka names) win over them."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": client_logger(),
        "enable.idempotence": True,      # no duplicates or reordering from retries
        "acks": "all",                   # required by idempotence; survives leader change
        "linger.ms": 20,                 # batch up to 20 ms of messages per partition
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 200_000,
        "message.timeout.ms": 60_000,    # a message undelivered after this fails (bounded)
        "socket.connection.setup.timeout.ms": 10_000,
        "client.id": "pressure-sentinel",
    }
    conf.update(extra)
    conf.update(options or {})
    return conf


def parse_bootstrap(text: str) -> str:
    """Validate ``HOST:PORT[,HOST:PORT...]``; returns it without blanks."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    for p in parts:
        host, sep, port = p.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"Kafka bootstrap server {p!r} is not HOST:PORT: write it like 127.0.0.1:19092")
    if not parts:
        raise ConfigError("no Kafka bootstrap server given: pass --bootstrap HOST:PORT or set "
                          "source.kafka.bootstrap_servers")
    return ",".join(parts)


def check_topic_name(topic: str) -> str:
    if not topic or len(topic) > 249 or not re.fullmatch(r"[A-Za-z0-9._-]+", topic) or topic in (".", ".."):
        raise ConfigError(f"Kafka topic name {topic!r} is invalid: use letters, digits, '.', '_' or '-' "
                          "(at most 249 characters)")
    return topic


def _unreachable(bootstrap: str, exc: Exception | str, waited: float) -> KafkaFeedError:
    return KafkaFeedError(f"Kafka broker {bootstrap} did not answer within {waited:.0f} s ({exc}): start it "
                          f"(scripts/services/kafka.sh start) or fix --bootstrap / source.kafka.bootstrap_servers")


def _metadata(client, bootstrap: str, timeout: float, topic: str | None = None):
    from confluent_kafka import KafkaException
    t0 = time.monotonic()
    try:
        md = client.list_topics(topic=topic, timeout=timeout)
    except KafkaException as exc:
        raise _unreachable(bootstrap, exc.args[0].str() if exc.args else exc, time.monotonic() - t0) from None
    if not md.brokers:
        raise _unreachable(bootstrap, "no brokers in metadata", time.monotonic() - t0)
    return md


def ensure_topic(bootstrap: str, topic: str, partitions: int = DEFAULT_PARTITIONS, replication: int = 1,
                 options: dict[str, str] | None = None, config: dict[str, str] | None = None,
                 timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Create ``topic`` if it does not exist (AdminClient). Returns True when it was created.

    An existing topic is left as it is (its partition count is not changed).
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic
    check_topic_name(topic)
    admin = AdminClient(admin_config(bootstrap, options))
    md = _metadata(admin, bootstrap, timeout)
    if topic in md.topics and not md.topics[topic].error:
        return False
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=replication,
                                        config=dict(config or {}))], operation_timeout=timeout)[topic]
    try:
        fut.result(timeout + 5)
    except KafkaException as exc:
        err = exc.args[0]
        if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise KafkaFeedError(f"cannot create Kafka topic {topic!r} on {bootstrap} ({err.str()}): create it "
                             f"yourself (scripts/services/kafka.sh topic {topic}) or grant CREATE") from None
    log.info("created Kafka topic %s (%d partitions, replication %d)", topic, partitions, replication)
    return True


# ---------------------------------------------------------------- producing
def _value_bytes(line: Any) -> bytes | None:
    if line is None:
        return None
    if isinstance(line, (bytes, bytearray, memoryview)):
        return bytes(line)
    return str(line).encode("utf-8")


def produce_lines(pairs: Iterable[tuple[Any, Any]], bootstrap: str, topic: str, rate: float = 0.0, *,
                  options: dict[str, str] | None = None, partitions: int | None = DEFAULT_PARTITIONS,
                  progress_every: int = 10000, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                  flush_timeout_s: float = 120.0) -> int:
    """Send ``(key, line)`` pairs to ``topic`` at ``rate`` messages/s (0 = as fast as possible).

    Keys and lines may be ``str`` (sent as UTF-8), ``bytes`` (sent as they are) or None (no key;
    a None line is a message with a null value). The topic is created with ``partitions``
    partitions if missing (None: leave it to the broker's auto-creation). Logs progress every
    ``progress_every`` messages, flushes at the end and returns the number delivered.

    Raises:
        KafkaFeedError: the broker did not answer within ``connect_timeout_s``, or a message
            could not be delivered (the first error is named).
    """
    from confluent_kafka import KafkaException, Producer
    bootstrap = parse_bootstrap(bootstrap)
    check_topic_name(topic)
    opts = dict(options or {})
    if partitions:
        ensure_topic(bootstrap, topic, partitions, options=opts, timeout=connect_timeout_s)
    producer = Producer(producer_config(bootstrap, opts))
    _metadata(producer, bootstrap, connect_timeout_s, topic)   # fail fast, in one sentence
    state = {"delivered": 0, "failed": 0, "error": None}

    def on_delivery(err, _msg):
        if err is None:
            state["delivered"] += 1
        else:
            state["failed"] += 1
            state["error"] = state["error"] or err.str()

    pacer = Pacer(rate)
    t0 = time.perf_counter()
    n, next_report = 0, progress_every
    log.info("producing to %s topic %s at %s messages/s", bootstrap, topic, rate or "max")
    for key, line in pairs:
        value, k = _value_bytes(line), _value_bytes(key)
        while True:
            try:
                producer.produce(topic, value=value, key=k, on_delivery=on_delivery)
                break
            except BufferError:          # local queue full: let librdkafka drain it
                producer.poll(0.05)
            except KafkaException as exc:
                raise KafkaFeedError(f"cannot produce to {topic!r} on {bootstrap}: {exc.args[0].str()}") from None
        n += 1
        producer.poll(0)
        pacer.tick()
        if state["error"]:
            break
        if progress_every and n >= next_report:
            dt = time.perf_counter() - t0
            log.info("produced %d messages (%.0f/s), %d delivered", n, n / dt if dt else 0.0, state["delivered"])
            next_report += progress_every
    left = producer.flush(flush_timeout_s)
    dt = time.perf_counter() - t0
    if state["error"] or left:
        why = state["error"] or f"{left} still queued after {flush_timeout_s:.0f} s"
        raise KafkaFeedError(f"{state['failed'] + left} of {n} messages to {topic!r} on {bootstrap} were not "
                             f"delivered ({why}): check the broker (scripts/services/kafka.sh status) and retry")
    log.info("produced %d messages to %s in %.1f s (%.0f/s), all delivered", state["delivered"], topic, dt,
             state["delivered"] / dt if dt else 0.0)
    return state["delivered"]


def read_to_end(consumer, parts: list, timeout_s: float, error_cls: type[Exception]) -> Iterator:
    """Assign ``parts`` (TopicPartitions at their start offsets) and yield every message up to
    each partition's current end; the consumer needs ``enable.partition.eof``. Raises
    ``error_cls`` on a read error or when the end is not reached within ``timeout_s``."""
    from confluent_kafka import KafkaError
    topic = parts[0].topic if parts else "?"
    pending = set()
    for tp in parts:
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        if high > low:
            pending.add(tp.partition)
    consumer.assign(parts)
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise error_cls(f"reading {topic!r} did not reach its end within {timeout_s:.0f} s: check the broker")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(msg.partition())
                continue
            raise error_cls(f"cannot read {topic!r}: {msg.error().str()}")
        yield msg


def consume_all(bootstrap: str, topic: str, timeout_s: float = 30.0, options: dict[str, str] | None = None,
                isolation: str = "read_committed") -> list:
    """Every message currently in ``topic``, from the beginning of each partition to its end
    (no consumer group offsets are committed). For checks and tests; returns
    confluent_kafka ``Message`` objects (``key()``, ``value()``, ``partition()``, ``offset()``).

    With ``read_committed`` (the default) aborted transactional messages are skipped.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    bootstrap = parse_bootstrap(bootstrap)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sentinel-consume-all",
                  "enable.auto.commit": False, "enable.partition.eof": True, "isolation.level": isolation,
                  "logger": client_logger(), **(options or {})})
    try:
        md = _metadata(c, bootstrap, min(timeout_s, CONNECT_TIMEOUT_S), topic)
        if topic not in md.topics or md.topics[topic].error:
            return []
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(md.topics[topic].partitions)]
        return list(read_to_end(c, parts, timeout_s, KafkaFeedError))
    finally:
        c.close()


def sensor_key(line: bytes | str, sensor_field: str = "sensor_id") -> str | None:
    """The sensor id of a JSON event line, or None (not JSON, not an object, no usable id)."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    sid = obj.get(sensor_field)
    if isinstance(sid, bool) or not isinstance(sid, (str, int)):
        return None
    sid = str(sid).strip()
    return sid or None


def file_pairs(stream, sensor_field: str = "sensor_id") -> Iterator[tuple[str | None, bytes]]:
    """Lines of a binary stream -> (sensor id or None, line bytes without the newline).

    Lines are sent exactly as they are (malformed ones too, so the deploy job rejects them with
    a reason); only the final newline of the file does not make an empty message.
    """
    for raw in stream:
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line.endswith(b"\r"):
            line = line[:-1]
        yield sensor_key(line, sensor_field), line


def keyed_lines(lines: Iterable[str], sensor_field: str = "sensor_id") -> Iterator[tuple[str | None, str]]:
    """JSON event lines -> (sensor id or None, line), for :func:`produce_lines`."""
    for line in lines:
        yield sensor_key(line, sensor_field), line
