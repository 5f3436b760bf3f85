"""Hot swap: a deploy job streaming from Kafka follows its registry's pointer without a restart.

One in-process run of the deploy query over a fresh topic, serving a registry folder. While it
runs, a watcher promotes a second, compatible bundle after a few micro-batches, and later a
corrupt one (its model.keras is garbage). The store must show both good versions, the corrupt
one never, and every scored reading exactly once (no batch lost or doubled by the switches).
"""
from __future__ import annotations

import shutil
import sqlite3
import threading
import time
import uuid

import pandas as pd
import pytest

from tests.conftest import TINY_OVERRIDES, need_service

pytestmark = [pytest.mark.spark, pytest.mark.services]

LIVE = dict(n_sensors=4, days=1.5, interval_s=300, seed=3, start="2026-01-14T00:00:00Z",
            anomalies_per_sensor_week=10.0)
WINDOW = 16


def test_promotions_switch_the_running_job_and_a_corrupt_bundle_is_refused(spark, tmp_path, tiny_bundle,
                                                                          tiny_settings, tiny_network):
    from sentinel.config import load_settings
    from sentinel.detect.model import load_bundle, pointer_text
    from sentinel.detect.training import fit_bundle
    from sentinel.ingest.feed import event_lines
    from sentinel.ingest.kafka import keyed_lines, produce_lines
    from sentinel.ingest.synthetic import simulate
    from sentinel.store.sinks import build_sinks
    from sentinel.stream import query as stream_query
    from sentinel.stream import writer as stream_writer

    bootstrap = need_service("SENTINEL_KAFKA_BOOTSTRAP", "Kafka")
    reg = tmp_path / "models"
    v1 = load_bundle(str(tiny_bundle)).version
    shutil.copytree(tiny_bundle, reg / v1)
    frame = tiny_network.readings.rename(columns={"timestamp": "event_time"})
    path2, _ = fit_bundle(frame, tiny_settings.replace(**{"model.seed": 7}), None, label_col="is_anomaly")
    v2 = load_bundle(str(path2)).version
    shutil.copytree(path2, reg / v2)
    v3 = "29990101T000000Z"  # newest by name, and corrupt
    shutil.copytree(path2, reg / v3)
    manifest = (reg / v3 / "manifest.json").read_text().replace(v2, v3)
    (reg / v3 / "manifest.json").write_text(manifest)
    (reg / v3 / "model.keras").write_bytes(b"not a keras archive")
    (reg / "promoted").write_text(pointer_text(v1))

    tag = uuid.uuid4().hex[:10]
    topic = f"swap-events-{tag}"
    live = simulate(**LIVE)
    sent = produce_lines(keyed_lines(event_lines(live.readings, load_settings().data)), bootstrap, topic,
                         rate=0, partitions=2)
    db = tmp_path / "store.db"
    settings = load_settings(None, TINY_OVERRIDES + [
        'source.type="kafka"', f'source.kafka.bootstrap_servers="{bootstrap}"', f'source.kafka.topic="{topic}"',
        "source.kafka.max_offsets_per_trigger=150", f'stream.checkpoint="{tmp_path / "ckpt"}"',
        f'sinks.sqlite.path="{db}"', "stream.trigger_s=0.5", "stream.idle_timeout_s=4.0",
        "stream.model_check_s=0", f'stream.model="{reg}"'])

    def promoter():
        """Promote v2 once batch 3 is written, then the corrupt v3 once batch 7 is."""
        for after, version in ((3, v2), (7, v3)):
            deadline = time.time() + 240
            while time.time() < deadline and not any(b >= after for b, _ in list(stream_writer.BATCHES_WRITTEN)):
                time.sleep(0.05)
            (reg / "promoted").write_text(pointer_text(version))

    sinks = build_sinks(settings)
    # earlier tests' batches would satisfy the promoter's waits at once (run() clears this too late)
    stream_writer.BATCHES_WRITTEN.clear()
    watcher = threading.Thread(target=promoter, daemon=True)
    try:
        watcher.start()
        totals = stream_query.run(spark, settings, load_bundle(str(reg / v1)), sinks, bundle_ref=str(reg / v1),
                                  model_ref=str(reg))
    finally:
        for s in sinks:
            s.close()
    watcher.join(5)
    with sqlite3.connect(db) as con:
        scores = pd.read_sql_query("SELECT sensor_id, event_time, model_version FROM scores", con)
        batches = pd.read_sql_query("SELECT batch_id, model_version, scored FROM batches ORDER BY batch_id", con)
        anomalies = pd.read_sql_query("SELECT model_version FROM anomalies", con)
    assert totals["events"] == sent
    n_scored = len(live.readings) - LIVE["n_sensors"] * (WINDOW - 1)
    assert totals["windows"] == n_scored
    # every scored reading once, by exactly one version: no batch lost or doubled by a switch
    assert len(scores) == n_scored
    assert not scores.duplicated(["sensor_id", "event_time"]).any()
    versions = set(scores["model_version"])
    assert versions == {v1, v2}, versions            # switched without a restart; v3 never scored
    assert set(anomalies["model_version"]) <= {v1, v2}
    # the switch happened between batches: each batch is scored by one version, v1 then v2
    per_batch = batches[batches["scored"] > 0]["model_version"].tolist()
    first_v2 = per_batch.index(v2)
    assert set(per_batch[:first_v2]) == {v1} and set(per_batch[first_v2:]) == {v2}
    assert batches["batch_id"].tolist() == list(range(len(batches)))  # no batch missing
