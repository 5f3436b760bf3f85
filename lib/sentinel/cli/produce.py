"""``sentinel produce``: a file of JSON events to a Kafka topic."""
from __future__ import annotations

import argparse
import json
import sys

from sentinel.config import ConfigError, Settings
from sentinel.ingest.feed import parse_target
from sentinel.ingest.kafka import (CONNECT_TIMEOUT_S, DEFAULT_PARTITIONS, check_topic_name, client_options, file_pairs,
                                   parse_bootstrap, produce_lines)


def add_produce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", required=True, metavar="EVENTS.jsonl",
                   help="one JSON event per line ('-' = stdin); malformed lines are sent as they are")
    p.add_argument("--bootstrap", metavar="HOST:PORT[,HOST:PORT]",
                   help="Kafka bootstrap servers (default: source.kafka.bootstrap_servers)")
    p.add_argument("--topic", help="topic (default: source.kafka.topic)")
    p.add_argument("--target", metavar="kafka://HOST:PORT/TOPIC",
                   help="bootstrap server and topic in one URL, as `sentinel simulate --stream` takes")
    p.add_argument("--rate", type=float, default=0.0, help="messages per second (default 0 = as fast as possible)")
    p.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                   help=f"partitions when the topic has to be created (default {DEFAULT_PARTITIONS}; "
                        "0 = leave it to the broker)")
    p.add_argument("--option", metavar="KEY=VALUE", action="append", default=[], dest="options",
                   help="extra librdkafka producer property, e.g. --option security.protocol=SASL_SSL "
                        "(repeatable; added to the translated source.kafka.options)")
    p.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT_S,
                   help=f"seconds to wait for the broker (default {CONNECT_TIMEOUT_S:.0f})")


def resolve_target(args, settings: Settings) -> tuple[str, str]:
    """(bootstrap, topic) from --target, or --bootstrap/--topic, or source.kafka settings."""
    k = settings.source.kafka
    if args.target:
        if args.bootstrap or args.topic:
            raise ConfigError("pass either --target kafka://HOST:PORT/TOPIC or --bootstrap/--topic, not both")
        scheme, host, port, topic = parse_target(args.target)
        if scheme != "kafka":
            raise ConfigError(f"--target {args.target!r} is not kafka://HOST:PORT/TOPIC")
        return parse_bootstrap(f"{host}:{port}"), check_topic_name(topic)
    return parse_bootstrap(args.bootstrap or k.bootstrap_servers), check_topic_name(args.topic or k.topic)


def parse_options(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r} is not KEY=VALUE: write it like --option linger.ms=50")
        out[key.strip()] = value.strip()
    return out


def run_produce(args, settings: Settings) -> int:
    bootstrap, topic = resolve_target(args, settings)
    if args.rate < 0:
        raise ConfigError("--rate must be 0 (as fast as possible) or positive")
    options = client_options(settings.source.kafka.options) | parse_options(args.options)
    if args.file == "-":
        stream = sys.stdin.buffer
    else:
        try:
            stream = open(args.file, "rb")
        except OSError as exc:
            raise ConfigError(f"cannot read --file {args.file} ({exc.strerror}): check the path") from None
    try:
        n = produce_lines(file_pairs(stream, settings.data.sensor_field), bootstrap, topic, args.rate,
                          options=options, partitions=args.partitions or None,
                          connect_timeout_s=args.connect_timeout)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    print(json.dumps({"produced": n, "topic": topic, "bootstrap": bootstrap}))
    return 0
