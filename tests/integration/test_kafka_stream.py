"""Deploy job against the real Kafka broker, through Spark's Kafka connector.

One module-scoped run: a labelled synthetic stream of the tiny network's sensors (same seed,
later start) plus malformed messages is produced to a fresh topic; the deploy query
(``sentinel.stream.run``, in-process, with the SQLite store and the alert topic) consumes it
until idle. The tests then check detection quality, equality with batch scoring, the rejects,
the key fallback and the alert topic.
"""
from __future__ import annotations

import json
import sqlite3
import time
import uuid

import numpy as np
import pandas as pd
import pytest

from tests.conftest import TINY_OVERRIDES, need_service

pytestmark = [pytest.mark.spark, pytest.mark.services]

# Same seed as the tiny_network fixture => same sensors (level, swing, noise); later start =>
# fresh noise and episodes the model never saw. 4 sensors x 2 days x 288 readings = 2304 events.
LIVE = dict(n_sensors=4, days=2, interval_s=300, seed=3, start="2026-01-12T00:00:00Z",
            anomalies_per_sensor_week=10.0)
WINDOW = 16  # tiny bundle's window length (TINY_OVERRIDES)

# (key, value, expected reject reason prefix)
BAD = [
    (None, b"this is not json", "not_json"),
    (None, b"\xff\xfe\x00\x9c\x81 binary garbage \x00\x07", "not_json"),
    (None, b"", "not_json: empty line"),
    (None, None, "not_json: empty message"),
    ("PT-0001", b'{"sensor_id": "PT-0001", "timestamp": "2026-01-12T03:00:00Z", "pressure": "high"}', "non_numeric"),
    (None, b'{"sensor_id": true, "timestamp": "2026-01-12T03:00:00Z", "pressure": 30.0}', "bad_sensor"),
    ("PT-0002", b'{"sensor_id": "PT-0002", "timestamp": 12, "pressure": 30.0}', "bad_timestamp"),
    (None, b"[1, 2, 3]", "not_object"),
    (None, b'{"timestamp": "2026-01-12T03:00:00Z", "pressure": 30.0}', "missing_sensor"),
    ("PT-0003", b'{"sensor_id": "PT-0003", "timestamp": "2026-01-12T03:00:00Z", "pressure": 9999}', "out_of_range"),
]
KEY_ONLY_EVERY = 25  # every 25th good event carries its sensor id only in the message key


def _messages(readings: pd.DataFrame):
    """Good events in time order (some without sensor_id in the JSON, keyed), bad ones after
    the first third, so later good events prove the job kept going."""
    from sentinel.config import DataSettings
    from sentinel.ingest.events import to_event_json
    data = DataSettings()
    out = []
    for i, r in enumerate(readings.itertuples(index=False)):
        line = to_event_json(r.sensor_id, r.timestamp, {"pressure": r.pressure}, data)
        if i % KEY_ONLY_EVERY == 0:
            obj = json.loads(line)
            del obj["sensor_id"]
            line = json.dumps(obj)
        out.append((r.sensor_id, line))
    cut = len(out) // 3
    return out[:cut] + [(k, v) for k, v, _ in BAD] + out[cut:]


@pytest.fixture(scope="module")
def kafka_run(spark, tmp_path_factory, tiny_bundle):
    from sentinel.stream import query as stream_query
    from sentinel.config import load_settings
    from sentinel.ingest.kafka import produce_lines
    from sentinel.detect.model import load_bundle
    from sentinel.store.sinks import build_sinks
    from sentinel.ingest.synthetic import simulate

    bootstrap = need_service("SENTINEL_KAFKA_BOOTSTRAP", "Kafka")
    tag = uuid.uuid4().hex[:10]
    topic, alerts = f"it-events-{tag}", f"it-alerts-{tag}"
    tmp = tmp_path_factory.mktemp("kafka_run")
    live = simulate(**LIVE)
    msgs = _messages(live.readings)
    sent = produce_lines(msgs, bootstrap, topic, rate=0, partitions=2)
    settings = load_settings(None, TINY_OVERRIDES + [
        'source.type="kafka"', f'source.kafka.bootstrap_servers="{bootstrap}"', f'source.kafka.topic="{topic}"',
        f'source.kafka.alerts_topic="{alerts}"', "source.kafka.max_offsets_per_trigger=800",
        f'stream.checkpoint="{tmp / "ckpt"}"', f'sinks.sqlite.path="{tmp / "store.db"}"',
        "stream.trigger_s=0.5", "stream.idle_timeout_s=4.0"])
    bundle = load_bundle(str(tiny_bundle))
    sinks = build_sinks(settings)
    t0 = time.time()
    try:
        totals = stream_query.run(spark, settings, bundle, sinks)
    finally:
        for s in sinks:
            s.close()
    elapsed = time.time() - t0
    with sqlite3.connect(tmp / "store.db") as con:
        anomalies = pd.read_sql_query("SELECT * FROM anomalies", con)
        rejects = pd.read_sql_query("SELECT * FROM rejects", con)
        incidents = pd.read_sql_query("SELECT * FROM incidents", con)
    print(f"\n[kafka stream] sent={sent} totals={totals} anomalies={len(anomalies)} rejects={len(rejects)} "
          f"query={elapsed:.1f}s")
    return {"bootstrap": bootstrap, "topic": topic, "alerts": alerts, "live": live, "sent": sent,
            "totals": totals, "anomalies": anomalies, "rejects": rejects, "incidents": incidents, "bundle": bundle}


def test_every_message_consumed_and_scored(kafka_run):
    t = kafka_run["totals"]
    n_good = len(kafka_run["live"].readings)
    assert kafka_run["sent"] == n_good + len(BAD)
    assert t["events"] == kafka_run["sent"]
    # Every good event is scored except each sensor's first W-1 readings (window warm-up); the
    # key-only events (sensor id in the Kafka key, not the JSON) are among the scored ones.
    assert t["windows"] == n_good - LIVE["n_sensors"] * (WINDOW - 1)
    assert t["rejects"] == len(BAD)
    assert t["batches"] >= 3  # maxOffsetsPerTrigger=800 split the topic into several micro-batches


def test_malformed_messages_rejected_with_reason_and_stream_continues(kafka_run):
    rej = kafka_run["rejects"]
    assert sorted(r.split(":")[0] for r in rej["reason"]) == sorted(p.split(":")[0] for _, _, p in BAD)
    for _, value, prefix in BAD:  # raw text kept (a null value and an empty one both read as "")
        text = "" if value is None else value.decode("utf-8", errors="replace")
        row = rej[(rej["raw"] == text) & rej["reason"].str.startswith(prefix)]
        assert len(row) == 1, (value, prefix, rej[rej["raw"] == text])
    # The bad messages sat after the first third of the topic; later batches were still scored.
    a = kafka_run["anomalies"]
    assert a["batch_id"].max() > rej["batch_id"].max()


def test_anomalies_match_injected_episodes(kafka_run):
    from sentinel.detect import evaluate
    live, a = kafka_run["live"], kafka_run["anomalies"]
    flags = pd.DataFrame({"sensor_id": a["sensor_id"], "timestamp": pd.to_datetime(a["event_time"], utc=True)})
    tol = pd.Timedelta(seconds=LIVE["interval_s"]) * WINDOW
    m = evaluate.episode_metrics(live.episodes, flags, tol, tol)
    print("\n" + evaluate.format_table(m))
    # Bar: the tiny 4-epoch GRU finds bursts, leaks, spikes and drifts but not "stuck" flat lines
    # (a frozen value inside the normal range looks normal to a 16-reading reconstruction), which
    # are ~1/5 of episodes: recall >= 0.7 leaves room for that and one more miss; every detected
    # episode but at most one in five must overlap an injected one.
    assert m["episodes"] >= 8
    assert m["episode_recall"] >= 0.7
    assert m["episode_precision"] >= 0.8
    # Normal readings (outside every episode and the W readings after it, where a window still
    # contains the anomaly) are not flagged: at most 1 %.
    r = live.readings
    near = np.zeros(len(r), dtype=bool)
    for ep in live.episodes.itertuples(index=False):
        near |= ((r["sensor_id"] == ep.sensor_id) & (r["timestamp"] >= ep.start)
                 & (r["timestamp"] <= ep.end + tol)).to_numpy()
    normal = r.loc[~near, ["sensor_id", "timestamp"]]
    flagged = set(zip(flags["sensor_id"], flags["timestamp"]))
    false_alarms = sum((s, t) in flagged for s, t in zip(normal["sensor_id"], normal["timestamp"]))
    print(f"normal readings: {len(normal)}, flagged: {false_alarms}")
    assert false_alarms <= 0.01 * len(normal)


def test_stream_flags_equal_batch_scoring(kafka_run, tiny_settings):
    """The streaming path (Kafka -> state -> UDF) flags what `sentinel score` flags on the same
    readings; only a reading whose score sits within 0.1 % of the threshold may differ (float
    noise between batch compositions)."""
    from sentinel.detect.batch import score_table
    batch = score_table(kafka_run["bundle"], kafka_run["live"].readings, tiny_settings)
    batch["timestamp"] = pd.to_datetime(batch["timestamp"], utc=True)
    want = set(zip(batch.loc[batch["is_anomaly"] == 1, "sensor_id"], batch.loc[batch["is_anomaly"] == 1, "timestamp"]))
    a = kafka_run["anomalies"]
    got = set(zip(a["sensor_id"], pd.to_datetime(a["event_time"], utc=True)))
    near = batch[(batch["score"] - batch["threshold"]).abs() <= 1e-3 * batch["threshold"]]
    borderline = set(zip(near["sensor_id"], near["timestamp"]))
    assert not ((got ^ want) - borderline), sorted((got ^ want) - borderline)[:10]


def test_alert_topic_holds_exactly_the_stored_anomalies_and_incident_events(kafka_run):
    from sentinel.ingest.kafka import consume_all
    msgs = consume_all(kafka_run["bootstrap"], kafka_run["alerts"])
    recs = [(m.key().decode(), json.loads(m.value())) for m in msgs]
    assert {r["type"] for _, r in recs} == {"anomaly", "incident"}
    anomalies = [(k, r) for k, r in recs if r["type"] == "anomaly"]
    assert all(k == r["sensor_id"] for k, r in anomalies)
    keys = [(r["sensor_id"], pd.Timestamp(r["event_time"]), r["model_version"]) for _, r in anomalies]
    a = kafka_run["anomalies"]
    stored = set(zip(a["sensor_id"], pd.to_datetime(a["event_time"], utc=True), a["model_version"]))
    print(f"\nalert messages: {len(keys)}, distinct: {len(set(keys))}, stored anomalies: {len(stored)}")
    assert len(keys) == len(set(keys))  # no duplicates
    assert set(keys) == stored
    r = anomalies[0][1]
    assert set(r) == {"type", "sensor_id", "event_time", "score", "threshold", "severity", "values", "expected",
                      "explanation", "model_version", "batch_id", "detected_at"}
    assert r["values"].keys() == {"pressure"} and r["severity"] == pytest.approx(r["score"] / r["threshold"])
    assert r["explanation"] and set(json.loads(a["expected"].dropna().iloc[0])) == {"pressure"}
    # Incident events: keyed by incident id, one "open" per stored incident, each event once.
    events = [(k, r) for k, r in recs if r["type"] == "incident"]
    assert all(k == r["incident"]["incident_id"] for k, r in events)
    inc = kafka_run["incidents"]
    assert len(inc) >= 1
    opens = [k for k, r in events if r["event"] == "open"]
    assert sorted(opens) == sorted(inc["incident_id"]), "one open message per stored incident"
    per_batch = [(k, r["event"], r["batch_id"]) for k, r in events]
    assert len(per_batch) == len(set(per_batch))
    closed = {k for k, r in events if r["event"] == "close"}
    assert closed == set(inc.loc[inc["closed_at"].notna(), "incident_id"])


def test_read_source_pattern_and_passthrough_options(spark, tmp_path):
    """read_source's Kafka options reach Spark's connector: subscribePattern, startingOffsets,
    and source.kafka.options as kafka.* (a bogus security.protocol must break the consumer)."""
    from sentinel.config import load_settings
    from sentinel.ingest.kafka import produce_lines
    from sentinel.stream.source import read_source
    bootstrap = need_service("SENTINEL_KAFKA_BOOTSTRAP", "Kafka")
    tag = uuid.uuid4().hex[:10]
    for i in range(2):
        produce_lines([(f"S{i}", f'{{"n": {k}}}') for k in range(5)], bootstrap, f"it-pat-{tag}-{i}", partitions=1)

    def run(extra, name):
        s = load_settings(None, ['source.type="kafka"', f'source.kafka.bootstrap_servers="{bootstrap}"',
                                 f'source.kafka.subscribe_pattern="it-pat-{tag}-.*"'] + extra)
        q = (read_source(spark, s).writeStream.format("memory").queryName(name)
             .option("checkpointLocation", str(tmp_path / name)).trigger(availableNow=True).start())
        try:
            q.awaitTermination(90)
        except Exception:  # the failure is inspected below through q.exception()
            pass
        finally:
            if q.isActive:
                q.stop()
        return q

    q = run(['source.kafka.options={ "kafka.client.id" = "sentinel-test", "request.timeout.ms" = "20000" }'],
            f"pat_{tag}")
    assert q.exception() is None
    rows = spark.table(f"pat_{tag}").collect()
    assert sorted(r["key"] for r in rows) == ["S0"] * 5 + ["S1"] * 5
    assert all(isinstance(r["raw_bytes"], (bytes, bytearray)) for r in rows)
    q = run(['source.kafka.options={ "security.protocol" = "BOGUS" }'], f"bogus_{tag}")
    assert q.exception() is not None and "BOGUS" in str(q.exception())
