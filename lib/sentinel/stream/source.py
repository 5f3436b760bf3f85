"""The deploy job's input: a socket (``nc -lk 9999``, the simulator) or a Kafka topic."""
from __future__ import annotations

from sentinel.config import Settings


def read_source(spark, settings: Settings):
    """The raw stream: ``raw`` (socket, string) or ``raw_bytes`` (Kafka, binary: garbage must
    reach the parser and the reject store), and ``key`` (string or null)."""
    from pyspark.sql import functions as F

    src = settings.source
    if src.type == "socket":
        df = spark.readStream.format("socket").option("host", src.host).option("port", src.port).load()
        return df.select(F.col("value").alias("raw"), F.lit(None).cast("string").alias("key"))
    k = src.kafka
    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", k.bootstrap_servers)
              .option("startingOffsets", k.starting_offsets)
              .option("maxOffsetsPerTrigger", k.max_offsets_per_trigger)
              .option("failOnDataLoss", str(k.fail_on_data_loss).lower()))
    reader = reader.option("subscribePattern", k.subscribe_pattern) if k.subscribe_pattern else reader.option("subscribe", k.topic)
    for key, value in k.options.items():
        reader = reader.option(key if key.startswith("kafka.") else f"kafka.{key}", value)
    df = reader.load()
    # Binary garbage must reach the parser (and the reject store), so decode leniently there.
    return df.select(F.col("value").alias("raw_bytes"), F.col("key").cast("string").alias("key"))

