"""Stores. Each sink is one module with one class implementing :class:`base.Sink`."""
from __future__ import annotations

from sentinel.config import Settings
from sentinel.store.sinks.base import BatchRecords, Sink

__all__ = ["BatchRecords", "Sink", "build_sinks"]


def build_sinks(settings: Settings) -> list[Sink]:
    """The sinks named in ``sinks.enabled``, set up (schemas created or upgraded) and ready to
    write; each writes every score when ``sinks.write_scores`` is on and keeps
    ``sinks.scores_retention_days`` of them. The alert topic comes last when configured."""
    out: list[Sink] = []
    for name in settings.sinks.enabled:
        if name == "sqlite":
            from sentinel.store.sinks.sqlite import SqliteSink
            sink = SqliteSink.from_settings(settings)
        elif name == "postgres":
            from sentinel.store.sinks.postgres import PostgresSink
            sink = PostgresSink.from_settings(settings)
        elif name == "s3":
            from sentinel.store.sinks.s3 import S3Sink
            sink = S3Sink.from_settings(settings)
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
