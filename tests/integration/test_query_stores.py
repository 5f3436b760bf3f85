"""`sentinel query` returns the same rows from SQLite, PostgreSQL and S3 for the same batches,
and the analysts' SQL in docs/analysts.md runs unchanged on SQLite and PostgreSQL.

Needs the real PostgreSQL and S3 servers (`make test` starts them)."""
from __future__ import annotations

import json
import os
import re
import sqlite3
import uuid

import pandas as pd
import pytest

from sentinel.store.query import NATURAL_KEY, Filters, parse_store, query
from sentinel.config import PostgresSettings, S3Settings, load_settings
from sentinel.store.registry import normalise
from sentinel.store.sinks.sqlite import SqliteSink
from tests.conftest import ROOT
from tests.integration.test_sinks_postgres import HOSTILE, drop_schema, make_anomalies, make_rejects, rec
from tests.conftest import need_service

EVIL_ZONE = "x'); DROP TABLE sensors;--\nzone ✓"


def _batches():
    """Four micro-batches over two days, two model versions, ties in event time, hostile ids."""
    sensors = ["PT-0001", "PT-0002", "pt-0001", "PT-0003", HOSTILE[0], HOSTILE[2]]
    out = []
    for b in range(4):
        rows = []
        for i in range(9):
            sid = sensors[(i + b) % len(sensors)]
            t = pd.Timestamp("2026-03-24T22:00:00Z") + pd.Timedelta(minutes=20 * ((i + 3 * b) % 12))
            rows.append((sid, t.isoformat(), 0.9 + 0.31 * i + 0.17 * b, 0.75, 28.0 + i + b / 10))
        mv = "v2" if b == 2 else "v1"
        rej = [(f"bad line {b}", "not_json: Expecting value", None, None)]
        out.append((b, rows, mv, rej))
    return out


def _frames(b, rows, mv, rej):
    return make_anomalies(b, rows, mv), make_rejects(b, rej)


REGISTRY = pd.DataFrame({"sensor_id": ["PT-0001", "PT-0002", "pt-0001", HOSTILE[0]],
                         "zone": ["north", "south", "north", EVIL_ZONE],
                         "latitude": [40.1, 40.2, 40.3, 40.4], "longitude": [-3.1, -3.2, -3.3, -3.4],
                         "type": ["pressure"] * 4})  # PT-0003 and HOSTILE[2] are not registered


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    need_service("PGHOST", "PostgreSQL")
    endpoint = need_service("SENTINEL_S3_ENDPOINT", "S3 server")
    from sentinel.store.sinks.postgres import PostgresSink
    from sentinel.store.sinks.s3 import S3Sink
    from sentinel.store.storage import list_keys, s3_client
    db = tmp_path_factory.mktemp("stores") / "sentinel.db"
    schema = f"q_{uuid.uuid4().hex[:10]}"
    bucket, prefix = f"sentinel-q-{uuid.uuid4().hex[:8]}", "lake/anomalies"
    sinks = [SqliteSink(db), PostgresSink(PostgresSettings(schema=schema, retries=1, retry_backoff_s=0.05)),
             S3Sink(S3Settings(bucket=bucket, prefix=prefix, endpoint_url=endpoint))]
    written = []
    try:
        for sink in sinks:
            sink.setup()
            sink.load_sensors(REGISTRY)
        for spec in _batches():
            a, r = _frames(*spec)
            written.append(a)
            for sink in sinks:
                sink.write(rec(a, r, spec[0]))
        for spec in _batches():  # Spark re-runs every batch: rebuilt frames, later detected_at
            a, r = _frames(*spec)
            for sink in sinks:
                sink.write(rec(a, r, spec[0]))
        urls = {"sqlite": f"sqlite:///{db}",
                "postgres": f"postgresql://{os.environ['PGUSER']}@{os.environ['PGHOST']}:{os.environ['PGPORT']}/"
                            f"{os.environ['PGDATABASE']}?schema={schema}",
                "s3": f"s3://{bucket}/{prefix}"}
        yield urls, pd.concat(written, ignore_index=True)
    finally:
        for sink in sinks:
            sink.close()
        drop_schema(schema)
        client = s3_client(endpoint)
        for key in list_keys(client, bucket, ""):
            client.delete_object(Bucket=bucket, Key=key)
        client.delete_bucket(Bucket=bucket)


def reference(written: pd.DataFrame, f: Filters) -> list[tuple]:
    """The expected natural keys, in order, computed straight from the frames written."""
    zones = dict(zip(REGISTRY["sensor_id"], REGISTRY["zone"]))
    d = written.drop_duplicates(NATURAL_KEY, keep="first")
    keep = pd.Series(True, index=d.index)
    if f.sensors:
        keep &= d["sensor_id"].isin(f.sensors)
    if f.since is not None:
        keep &= d["event_time"] >= f.since
    if f.until is not None:
        keep &= d["event_time"] < f.until
    if f.min_severity is not None:
        keep &= d["severity"] >= f.min_severity
    if f.zone is not None:
        keep &= d["sensor_id"].map(zones.get) == f.zone
    keys = sorted((t, s, m) for t, s, m in zip(d[keep]["event_time"], d[keep]["sensor_id"], d[keep]["model_version"]))
    return keys[: f.limit] if f.limit else keys


T = pd.Timestamp
FILTERS = [
    Filters(),
    Filters(sensors=("PT-0002", HOSTILE[0])),
    Filters(since=T("2026-03-24T23:00:00Z"), until=T("2026-03-25T01:40:00Z")),
    Filters(min_severity=3.0),
    Filters(zone="north"),
    Filters(zone=EVIL_ZONE),
    Filters(limit=7),
    Filters(zone="north", since=T("2026-03-24T22:20:00Z"), min_severity=1.6, limit=4),
    Filters(sensors=("nobody",)),
]


@pytest.mark.parametrize("f", FILTERS, ids=[f"filter{i}" for i in range(len(FILTERS))])
def test_every_store_returns_the_same_rows(stores, f):
    urls, written = stores
    settings = load_settings()
    results = {name: query(parse_store(url, settings), f, settings) for name, url in urls.items()}
    expected = reference(written, f)
    for name, got in results.items():
        keys = list(zip(got["event_time"], got["sensor_id"], got["model_version"]))
        assert keys == expected, name
    # every column equal; detected_at too between the SQL stores (first write kept), while on S3
    # the re-run overwrote the batch's objects, so detected_at is the re-run's there
    cols = [c for c in results["sqlite"].columns if c != "detected_at"]
    pd.testing.assert_frame_equal(results["sqlite"], results["postgres"])
    pd.testing.assert_frame_equal(results["sqlite"][cols], results["s3"][cols])
    assert (results["s3"]["detected_at"] >= results["sqlite"]["detected_at"]).all()


def test_zone_column_and_no_duplicates_after_replays(stores):
    urls, written = stores
    got = query(parse_store(urls["postgres"]), Filters())
    # 36 rows written, 6 of them re-flagged by a later batch under the same natural key
    assert len(written) == 36 and len(got) == len(written.drop_duplicates(NATURAL_KEY)) == 30
    zones = dict(zip(got["sensor_id"], got["zone"]))
    assert zones["PT-0003"] is None and zones[HOSTILE[0]] == EVIL_ZONE and zones["pt-0001"] == "north"


def test_cli_query_output_is_identical_across_stores(stores, capsys):
    from sentinel.cli import main
    urls, _ = stores
    outputs = {}
    for name, url in urls.items():
        assert main(["query", "--store", url, "--since", "2026-03-24T22:40:00", "--min-severity", "1.5",
                     "--format", "json"]) == 0
        outputs[name] = [{k: v for k, v in rec.items() if k != "detected_at"}
                         for rec in json.loads(capsys.readouterr().out)]
    assert len(outputs["sqlite"]) > 5
    assert outputs["sqlite"] == outputs["postgres"] == outputs["s3"]
    for name, url in urls.items():
        assert main(["query", "--store", url, "--zone", "north", "--format", "csv", "--limit", "3"]) == 0
        outputs[name] = capsys.readouterr().out
    assert outputs["sqlite"] == outputs["postgres"]
    assert len(outputs["sqlite"].splitlines()) == 4  # header + 3


# ---------------------------------------------------------------- the SQL in docs/analysts.md
DOC = ROOT / "docs" / "analysts.md"


def doc_sql() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 6, "docs/analysts.md should hold the six portable queries"
    return blocks


@pytest.fixture(scope="module")
def recent_stores(tmp_path_factory):
    """SQLite + PostgreSQL holding anomalies of the last hours and some older than a day."""
    need_service("PGHOST", "PostgreSQL")
    from sentinel.store.sinks.postgres import PostgresSink
    now = pd.Timestamp.now(tz="UTC").floor("s")
    recent = [("PT-A", now - pd.Timedelta(minutes=50), 3.0), ("PT-A", now - pd.Timedelta(hours=2), 1.2),
              ("PT-B", now - pd.Timedelta(hours=5), 2.4), ("PT-C", now - pd.Timedelta(hours=23), 1.1),
              (HOSTILE[0], now - pd.Timedelta(hours=3), 1.9)]
    old = [("PT-A", now - pd.Timedelta(hours=30), 9.0), ("PT-B", now - pd.Timedelta(days=3), 1.5)]
    rows = [(s, t.isoformat(), sev, 1.0, 40.0) for s, t, sev in recent + old]
    a = make_anomalies(1, rows)
    r = make_rejects(1, [("x", "not_json: a", None, None), ("y", "not_json: a", None, None),
                         ("z", "bad_timestamp: b", None, None), ("old", "too_large: c", None, None)])
    r.loc[r["raw"] == "old", "received_at"] = now - pd.Timedelta(days=2)
    # all five registry columns: SqliteSink.load_sensors needs them (registry.normalise fills them in)
    reg = normalise(pd.DataFrame({"sensor_id": ["PT-A", "PT-B", HOSTILE[0]], "zone": ["north", "south", EVIL_ZONE]}))
    # incidents: (id, zone, kind, stream status, opened hours ago, peak, muted, operator action)
    incs = [("I1", "north", "leak", "new", 2, 3.0, False, None),
            ("I2", "north", "leak", "new", 5, 2.0, False, ("label", "confirmed")),
            ("I3", "south", "burst", "closed", 72, 4.0, False, ("label", "false_alarm")),
            ("I4", None, "sensor_fault", "new", 1, 1.5, True, None),
            ("I5", "south", "burst", "closed", 40 * 24, 5.0, False, ("label", "confirmed"))]
    from sentinel.store.sinks.base import BatchRecords
    from tests.records import sensors_json
    rows_i = []
    for iid, zone, kind, status, hours, peak, muted, _ in incs:
        t = now - pd.Timedelta(hours=hours)
        rows_i.append({"incident_id": iid, "kind": kind, "status": status, "zone": zone,
                       "sensors": sensors_json((f"S-{iid}", 1.0, peak, 2, t.isoformat(), t.isoformat())),
                       "first_sensor": f"S-{iid}", "opened_at": t, "last_seen": t + pd.Timedelta(minutes=10),
                       "closed_at": t + pd.Timedelta(hours=1) if status == "closed" else None, "peak_severity": peak,
                       "readings": 2, "explanation": None, "muted": muted, "model_version": "v1",
                       "detected_at": now, "updated_at": now, "batch_id": 1})
    records = BatchRecords(1, anomalies=a, rejects=r, incidents=pd.DataFrame(rows_i))
    db = tmp_path_factory.mktemp("doc") / "doc.db"
    schema = f"d_{uuid.uuid4().hex[:10]}"
    sinks = [SqliteSink(db), PostgresSink(PostgresSettings(schema=schema))]
    urls = [f"sqlite:///{db}", f"postgresql://?schema={schema}"]
    try:
        from sentinel.incidents import lifecycle
        from sentinel.store import open_store
        for sink, url in zip(sinks, urls):
            sink.setup()
            sink.write(records)
            sink.load_sensors(reg)
            with open_store(url, load_settings(), rules=lifecycle) as client:
                client.acknowledge("I2", "ops")  # I2: acknowledged, still open
                for iid, *_, action in incs:
                    if action:
                        client.label(iid, action[1], "ops")
        yield db, schema, {"recent": recent, "old": old}
    finally:
        for sink in sinks:
            sink.close()
        drop_schema(schema)


def run_sqlite(db, text):
    con = sqlite3.connect(db)
    try:
        return [tuple(r) for r in con.execute(text).fetchall()]
    finally:
        con.close()


def run_postgres(schema, text):
    import psycopg2
    con = psycopg2.connect("", options=f"-c search_path={schema}")
    try:
        with con, con.cursor() as cur:
            cur.execute(text)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        con.close()


def _same(a: list[tuple], b: list[tuple]) -> bool:
    def norm(v):
        if isinstance(v, float):
            return round(v, 9)
        if hasattr(v, "is_integer") and not isinstance(v, int):  # Decimal
            return round(float(v), 9)
        return v
    return [tuple(map(norm, r)) for r in a] == [tuple(map(norm, r)) for r in b]


def test_analyst_sql_runs_unchanged_on_sqlite_and_postgres(recent_stores):
    db, schema, data = recent_stores
    per_sensor, per_zone_hour, top, open_incidents, labels, rejects = doc_sql()
    results = []
    for text in (per_sensor, per_zone_hour, top, rejects, open_incidents, labels):
        lite, pg = run_sqlite(db, text), run_postgres(schema, text)
        assert lite, text
        assert _same(lite, pg), (text, lite, pg)
        results.append(lite)
    # last 24 h per sensor: the recent anomalies only
    got = {r[0]: r[1] for r in results[0]}
    assert got == {"PT-A": 2, "PT-B": 1, "PT-C": 1, HOSTILE[0]: 1}
    assert results[0][0][:3] == ("PT-A", 2, 3.0)
    # zone x hour: every recent anomaly counted once, hours as 'YYYY-MM-DD HH:00' UTC
    assert sum(r[2] for r in results[1]) == len(data["recent"])
    assert {r[0] for r in results[1]} == {"north", "south", "(no zone)", EVIL_ZONE}
    expected_hours = {t.strftime("%Y-%m-%d %H:00") for _, t, _ in data["recent"]}
    assert {r[1] for r in results[1]} == expected_hours
    # top sensors by severity, all time: the old 9.0 of PT-A leads
    assert results[2][0][:3] == ("PT-A", "north", 9.0)
    assert [r[0] for r in results[2]] == ["PT-A", "PT-B", HOSTILE[0], "PT-C"]
    # rejects by reason in the last 24 h: the two-day-old line is left out
    assert [(r[0], r[1]) for r in results[3]] == [("not_json: a", 2), ("bad_timestamp: b", 1)]
    # open incidents by zone and kind: I1 and I2 (acknowledged: still open, not "unacknowledged"), I4
    oldest = (pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=5))
    assert [r[:5] for r in results[4]] == [("north", "leak", 2, 1, 3.0), ("(no zone)", "sensor_fault", 1, 1, 1.5)]
    assert abs(pd.Timestamp(results[4][0][5], tz="UTC") - oldest) < pd.Timedelta(minutes=5)
    # labels of the last 30 days (I5 is 40 days old): label, incidents, closed, muted, first sensors
    assert results[5] == [("(unlabelled)", 2, 0, 1, 2), ("confirmed", 1, 0, 0, 1), ("false_alarm", 1, 1, 0, 1)]
