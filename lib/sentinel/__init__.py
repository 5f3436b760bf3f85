"""Pressure Sentinel: streaming anomaly detection for pressure sensors.

One sub-package per stage; dependencies point down this list, never up (checked by
tests/unit/test_layout.py):

    cli/        argument parsing, the ``run_*`` glue, output for people (nothing imports it)
    stream/     everything that runs on Spark: session, the deploy query (source, chunks,
                window state, scoring UDF, batch writer), Spark history cleaning, worker daemon
    detect/     windows, scaler, models, scoring, thresholds, training, evaluation, batch scoring
    store/      one module per sink, the query and report over any store, sensor registry,
                object storage
    ingest/     event parsing and rejects, feeds, the Kafka client, simulators, file readers
    config.py   typed settings from TOML + ``--set``

Only ``stream/`` imports pyspark.
"""
