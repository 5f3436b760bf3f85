"""Anomaly stores. Each sink is one module with one class implementing :class:`base.Sink`."""
from __future__ import annotations

from sentinel.config import Settings
from sentinel.store.sinks.base import Sink


def build_sinks(settings: Settings) -> list[Sink]:
    """The sinks named in ``sinks.enabled``, set up (schemas created) and ready to write."""
    out: list[Sink] = []
    for name in settings.sinks.enabled:
        if name == "sqlite":
            from sentinel.store.sinks.sqlite import SqliteSink
            sink = SqliteSink(settings.sinks.sqlite.path)
        elif name == "postgres":
            from sentinel.store.sinks.postgres import PostgresSink
            sink = PostgresSink(settings.sinks.postgres)
        elif name == "s3":
            from sentinel.store.sinks.s3 import S3Sink
            sink = S3Sink(settings.sinks.s3)
        else:  # pragma: no cover - config validation rejects unknown names
            raise ValueError(f"unknown sink {name!r}")
        sink.setup()
        out.append(sink)
    if settings.source.kafka.alerts_topic:
        # Last, so alerts are published only after the stores hold the batch.
        from sentinel.store.sinks.kafka_alerts import KafkaAlertsSink
        sink = KafkaAlertsSink(settings.source.kafka, settings.stream.checkpoint)
        sink.setup()
        out.append(sink)
    return out
