"""Anomaly stores. Each sink is one module with one class implementing :class:`base.Sink`."""
from __future__ import annotations

from sentinel.config import Settings
from sentinel.sinks.base import Sink


def build_sinks(settings: Settings) -> list[Sink]:
    """The sinks named in ``sinks.enabled``, set up (schemas created) and ready to write."""
    out: list[Sink] = []
    for name in settings.sinks.enabled:
        if name == "sqlite":
            from sentinel.sinks.sqlite import SqliteSink
            sink = SqliteSink(settings.sinks.sqlite.path)
        elif name == "postgres":
            from sentinel.sinks.postgres import PostgresSink
            sink = PostgresSink(settings.sinks.postgres)
        elif name == "s3":
            from sentinel.sinks.s3 import S3Sink
            sink = S3Sink(settings.sinks.s3)
        else:  # pragma: no cover - config validation rejects unknown names
            raise ValueError(f"unknown sink {name!r}")
        sink.setup()
        out.append(sink)
    if settings.source.kafka.alerts_topic:
        # Last, so alerts are published only after the stores hold the batch.
        from sentinel.sinks.kafka_alerts import KafkaAlertsSink
        sink = KafkaAlertsSink(settings.source.kafka, settings.stream.checkpoint)
        sink.setup()
        out.append(sink)
    return out
