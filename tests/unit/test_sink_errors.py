"""A store that fails a micro-batch says so in one sentence naming the store and the fix, keeps
nothing of the batch, and the job's command prints that sentence instead of Spark's traceback
(what benchmarks/faults.py checks end to end with a full disk and stopped servers)."""
from __future__ import annotations

import logging
import socket
import sqlite3

import pandas as pd
import pytest

from sentinel.cli.deploy import batch_failure
from sentinel.config import S3Settings
from sentinel.store.errors import StoreError
from sentinel.store.sinks.base import BatchRecords, batch_record
from sentinel.store.sinks.sqlite import SqliteSink


def _records(batch_id: int) -> BatchRecords:
    t = pd.Timestamp("2026-01-19T00:00:00Z")
    anomalies = pd.DataFrame({"sensor_id": ["PT-0001"], "event_time": [t], "score": [2.0], "threshold": [1.0],
                              "severity": [2.0], "values": ['{"pressure": 1.0}'], "expected": [None],
                              "explanation": ["x"], "model_version": ["v1"], "batch_id": [batch_id],
                              "detected_at": [t]})
    scores = pd.DataFrame({"sensor_id": ["PT-0001"], "event_time": [t], "score": [2.0], "threshold": [1.0],
                           "severity": [2.0], "is_anomaly": [True], "values": ['{"pressure": 1.0}'], "expected": [None],
                           "model_version": ["v1"], "batch_id": [batch_id]})
    return BatchRecords(batch_id, anomalies=anomalies, scores=scores,
                        batch=batch_record(batch_id, events=1, scored=1, anomalies=1))


def test_a_failed_sqlite_batch_is_one_sentence_and_leaves_nothing(tmp_path):
    db = tmp_path / "store.db"
    sink = SqliteSink(db)
    sink.setup()
    with sqlite3.connect(db) as con:  # the scores insert fails after the anomalies went in
        con.execute("DROP TABLE scores")
    with pytest.raises(StoreError) as info:
        sink.write(_records(7))
    msg = str(info.value)
    assert msg.startswith(f"sqlite store {db}: batch 7 was not written") and "restart the job" in msg
    assert "\n" not in msg and "no such table: scores" in msg
    with sqlite3.connect(db) as con:  # the batch's transaction rolled back: not even its anomalies
        assert con.execute("SELECT count(*) FROM anomalies").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM batches").fetchone()[0] == 0


def test_an_unopenable_sqlite_store_fails_setup_in_one_sentence(tmp_path):
    (tmp_path / "dir.db").mkdir()  # a folder where the file should be
    with pytest.raises(StoreError, match=r"^sqlite store .*dir\.db: setup .* failed \(unable to open"):
        SqliteSink(tmp_path / "dir.db").setup()


def test_the_deploy_command_finds_the_sentence_in_sparks_error():
    spark_text = ("[STREAM_FAILED] Query [id = 1] terminated with exception: [FOREACH_BATCH_USER_FUNCTION_ERROR] "
                  "... Traceback (most recent call last):\n  File \"writer.py\", line 172, in __call__\n"
                  "sqlite3.OperationalError: disk I/O error\n\nThe above exception was the direct cause of the "
                  "following exception:\n\nTraceback (most recent call last):\n"
                  "sentinel.store.errors.StoreError: sqlite store /d/s.db: batch 4 was not written; free space\n"
                  " SQLSTATE: 39000\n=== Streaming Query ===\n")
    assert batch_failure(RuntimeError(spark_text)) == "sqlite store /d/s.db: batch 4 was not written; free space"
    assert batch_failure(RuntimeError("py4j.protocol.Py4JJavaError: something else")) is None


def test_s3_retries_are_logged_as_warnings(caplog, monkeypatch):
    from sentinel.store.sinks.s3 import S3Sink
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")   # requests are signed before they are sent
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with socket.socket() as s:  # nothing listens there: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = S3Sink(S3Settings(bucket="b", prefix="p", endpoint_url=f"http://127.0.0.1:{port}"), max_attempts=2)
    with caplog.at_level(logging.WARNING, logger="sentinel.sinks.s3"), pytest.raises(StoreError) as info:
        sink.setup()
    retries = [r.getMessage() for r in caplog.records if "attempt 1 of 2 failed" in r.getMessage()]
    assert len(retries) == 1 and "HeadBucket" in retries[0]
    assert str(info.value).startswith("s3 sink: setup") and "restart the job" in str(info.value)


def test_postgres_retries_then_fails_in_one_sentence(caplog):
    from sentinel.config import PostgresSettings
    from sentinel.store.sinks.postgres import PostgresSink
    with socket.socket() as s:  # nothing listens there: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dsn = f"host=127.0.0.1 port={port} user=nobody dbname=nothing connect_timeout=2"
    sink = PostgresSink(PostgresSettings(dsn=dsn, schema="s", retries=2, retry_backoff_s=0.01))
    with caplog.at_level(logging.WARNING, logger="sentinel.sinks.postgres"), pytest.raises(StoreError) as info:
        sink.setup()
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2 and "attempt 1 of 3" in retries[0]   # each failed attempt but the last warned
    msg = str(info.value)
    assert msg.startswith("postgres sink: setup (schema migrations) failed after 3 attempt(s) (schema 's')")
    assert "\n" not in msg and "OperationalError" in msg and "restart the job" in msg
