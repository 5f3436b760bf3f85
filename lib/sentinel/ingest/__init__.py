"""Ingest: what comes in. Event parsing (every malformed line becomes a reject with a reason),
live feeds to a socket or Kafka, the Kafka client side, the simulators and file readers.

Imports only ``sentinel.config`` from the package; never pyspark.
"""
