"""The web app's API (FastAPI TestClient) against real stores: SQLite, PostgreSQL, and S3 (read-only),
each filled with the same six-sensor, six-hour feed through the real sinks (``tests.serve_data``).

Hand-checked figures of the feed (72 steps of 5 minutes from 2026-01-19T00:00Z, 6 micro-batches):

- PT-0002 (zone centre) flagged at steps 12-17, severity 3, incident ``leak``, closed (quiet after step 23);
- PT-0003 (west) steps 60-69, severity 2, ``burst``, open; PT-0006 (centre) steps 66-71, severity 4,
  ``sensor_fault``, open; PT-0004 (centre) step 71 only, severity 1.5, no incident;
- PT-0005 (west) stops after step 50 (silent at step 71: 105 min > window.max_gap_s 30 min);
- PT-0001 (west) muted for the day on the SQL stores.
So 23 anomalies (6 + 10 + 6 + 1), 3 incidents (2 open), 411 scores (72 x 6 - 21).

Needs PostgreSQL and the S3 server (`make test` starts them); SQLite always runs.
"""
from __future__ import annotations

import os
import uuid

import pandas as pd
import pytest
from sentinel.config import PostgresSettings, S3Settings, load_settings
from sentinel.incidents import lifecycle
from sentinel.serve import create_app
from sentinel.store.client import open_store
from sentinel.store.sinks.sqlite import SqliteSink

from tests.conftest import need_service
from tests.serve_data import START, Episode, Feed, registry

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STEPS, PER_BATCH = 72, 12
T = lambda step: (START + pd.Timedelta(minutes=5 * step)).strftime("%Y-%m-%dT%H:%M:%SZ")


def feed() -> Feed:
    return Feed(6, episodes=[Episode("PT-0002", 12, 6, severity=3.0, kind="leak"),
                             Episode("PT-0003", 60, 10, severity=2.0, kind="burst"),
                             Episode("PT-0006", 66, 6, severity=4.0, kind="sensor_fault"),
                             Episode("PT-0004", 71, 1, severity=1.5, incident=False)],
                silent_after={"PT-0005": 50})


FEED = feed()
INC = {e.sensor_id: FEED.incident_id(e) for e in FEED.episodes if e.incident}


def fill(sinks) -> None:
    for sink in sinks:
        sink.setup()
        sink.load_sensors(registry(6))
    FEED.write(sinks, STEPS, PER_BATCH)


def pg_url(schema: str) -> str:
    e = os.environ
    return f"postgresql://{e['PGUSER']}@{e['PGHOST']}:{e['PGPORT']}/{e['PGDATABASE']}?schema={schema}"


def mute(url: str) -> None:
    with open_store(url, load_settings(), rules=lifecycle) as client:
        client.add_mute(sensor_id="PT-0001", starts_at=START, ends_at=START + pd.Timedelta(days=1),
                        reason="pump maintenance", actor="tests")


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory):
    db = tmp_path_factory.mktemp("serve") / "store.db"
    fill([SqliteSink(db)])
    url = f"sqlite:///{db}"
    mute(url)
    return url


@pytest.fixture(scope="module")
def postgres_url():
    need_service("PGHOST", "PostgreSQL")
    from sentinel.store.sinks.postgres import PostgresSink

    from tests.integration.test_sinks_postgres import drop_schema
    schema = f"serve_{uuid.uuid4().hex[:10]}"
    sink = PostgresSink(PostgresSettings(schema=schema, retries=1, retry_backoff_s=0.05))
    try:
        fill([sink])
        sink.close()
        url = pg_url(schema)
        mute(url)
        yield url
    finally:
        drop_schema(schema)


@pytest.fixture(scope="module")
def s3_url():
    endpoint = need_service("SENTINEL_S3_ENDPOINT", "S3 server")
    from sentinel.store.sinks.s3 import S3Sink
    from sentinel.store.storage import list_keys, s3_client
    bucket = f"sentinel-serve-{uuid.uuid4().hex[:8]}"
    sink = S3Sink(S3Settings(bucket=bucket, prefix="lake", endpoint_url=endpoint))
    try:
        fill([sink])
        yield f"s3://{bucket}/lake"
    finally:
        client = s3_client(endpoint)
        for key in list_keys(client, bucket, ""):
            client.delete_object(Bucket=bucket, Key=key)
        client.delete_bucket(Bucket=bucket)


@pytest.fixture(params=["sqlite", "postgres", "s3"])
def api(request):
    """A TestClient on each store (S3: no mute, writes refused)."""
    url = request.getfixturevalue(f"{request.param}_url")
    from fastapi.testclient import TestClient
    with TestClient(create_app(url, load_settings(), token=TOKEN)) as client:
        client.kind = request.param
        yield client


@pytest.fixture(params=["sqlite", "postgres"])
def fresh(request, tmp_path):
    """A freshly filled writable store per test (the write tests change incidents)."""
    from fastapi.testclient import TestClient
    if request.param == "sqlite":
        db = tmp_path / "w.db"
        fill([SqliteSink(db)])
        url, cleanup = f"sqlite:///{db}", lambda: None
    else:
        need_service("PGHOST", "PostgreSQL")
        from sentinel.store.sinks.postgres import PostgresSink

        from tests.integration.test_sinks_postgres import drop_schema
        schema = f"serve_w_{uuid.uuid4().hex[:10]}"
        sink = PostgresSink(PostgresSettings(schema=schema, retries=1, retry_backoff_s=0.05))
        fill([sink])
        sink.close()
        url, cleanup = pg_url(schema), lambda: drop_schema(schema)
    try:
        with TestClient(create_app(url, load_settings(), token=TOKEN)) as client:
            client.url = url
            yield client
    finally:
        cleanup()


def ok(resp):
    assert resp.status_code == 200, resp.text
    return resp.json()


# ---------------------------------------------------------------- reads, every store
def test_sensors_with_their_states(api):
    body = ok(api.get("/api/sensors"))
    states = {s["sensor_id"]: s["state"] for s in body["items"]}
    assert states == {"PT-0001": "ok" if api.kind == "s3" else "muted", "PT-0002": "ok", "PT-0003": "incident",
                      "PT-0004": "anomalous", "PT-0005": "silent", "PT-0006": "incident"}
    assert sum(body["counts"].values()) == 6
    by_id = {s["sensor_id"]: s for s in body["items"]}
    assert by_id["PT-0004"]["last_score"] == 1.5 and by_id["PT-0004"]["threshold"] == 1.0
    assert by_id["PT-0005"]["last_event_time"] == T(50)
    assert by_id["PT-0006"]["open_incident_id"] == INC["PT-0006"]
    assert by_id["PT-0003"]["latitude"] == pytest.approx(40.41) and by_id["PT-0003"]["zone"] == "west"
    assert by_id["PT-0001"]["last_values"] == {"pressure": 42.0}  # step 71 is 05:55, hour 5: 40 + 5 % 3
    assert [s["sensor_id"] for s in ok(api.get("/api/sensors?zone=centre"))["items"]] == ["PT-0002", "PT-0004", "PT-0006"]
    assert [s["sensor_id"] for s in ok(api.get("/api/sensors?state=incident"))["items"]] == ["PT-0003", "PT-0006"]


@pytest.mark.parametrize("query,expected", [
    ("", 23), ("min_severity=2.5", 12), ("sensor=PT-0003", 10), ("sensor=PT-0003&sensor=PT-0004", 11),
    ("zone=centre", 13), (f"since={T(60)}&until={T(70)}", 14), ("zone=nowhere", 0),
])
def test_anomaly_filters_count_what_the_feed_flagged(api, query, expected):
    assert len(ok(api.get(f"/api/anomalies?limit=1000&{query}"))["items"]) == expected


def test_anomalies_page_in_event_time_order(api):
    pages, offset = [], 0
    while offset is not None:
        body = ok(api.get(f"/api/anomalies?limit=10&offset={offset}"))
        pages.append(body["items"])
        offset = body["next_offset"]
    assert [len(p) for p in pages] == [10, 10, 3]
    rows = [r for p in pages for r in p]
    assert [(r["event_time"], r["sensor_id"]) for r in rows] == sorted((r["event_time"], r["sensor_id"]) for r in rows)
    first = rows[0]
    assert first["sensor_id"] == "PT-0002" and first["event_time"] == T(12) and first["severity"] == 3.0
    assert first["values"] == {"pressure": 33.0} and first["expected"] == {"pressure": 41.0}
    assert first["explanation"].startswith("pressure 33.0 where 41.0")


@pytest.mark.parametrize("query,expected", [
    ("", ["PT-0006", "PT-0003", "PT-0002"]), ("status=open", ["PT-0006", "PT-0003"]), ("status=closed", ["PT-0002"]),
    ("status=new,closed", ["PT-0006", "PT-0003", "PT-0002"]), ("kind=leak", ["PT-0002"]),
    ("kind=burst&kind=leak", ["PT-0003", "PT-0002"]), ("sensor=PT-0006", ["PT-0006"]), ("zone=west", ["PT-0003"]),
    ("min_severity=3", ["PT-0006", "PT-0002"]), (f"since={T(30)}&until={T(62)}", ["PT-0003"]),
    ("muted=true", []),
])
def test_incident_filters(api, query, expected):
    body = ok(api.get(f"/api/incidents?{query}"))
    assert [i["first_sensor"] for i in body["items"]] == expected
    assert body["next_offset"] is None


def test_incidents_paginate_and_one_has_its_explanation(api):
    first = ok(api.get("/api/incidents?limit=2"))
    assert [i["first_sensor"] for i in first["items"]] == ["PT-0006", "PT-0003"] and first["next_offset"] == 2
    second = ok(api.get("/api/incidents?limit=2&offset=2"))
    assert [i["first_sensor"] for i in second["items"]] == ["PT-0002"] and second["next_offset"] is None
    one = ok(api.get(f"/api/incidents/{INC['PT-0002']}"))
    assert (one["kind"], one["status"], one["readings"], one["zone"]) == ("leak", "closed", 6, "centre")
    assert (one["opened_at"], one["last_seen"], one["closed_at"]) == (T(12), T(17), T(23))
    assert one["explanation"] == "leak at PT-0002: pressure 8.0 below expected for 30 min"
    assert one["sensors"][0]["sensor_id"] == "PT-0002" and one["actions"] == []
    open_one = ok(api.get(f"/api/incidents/{INC['PT-0003']}"))
    assert (open_one["status"], open_one["closed_at"], open_one["readings"]) == ("new", None, 10)


def test_series_for_the_chart(api):
    body = ok(api.get("/api/sensors/PT-0003/series"))   # default: the 24 h up to its newest reading
    assert len(body["time"]) == 72 and body["features"] == ["pressure"]
    assert body["time"][0] == START.timestamp() and body["time"][-1] == START.timestamp() + 71 * 300
    assert sum(body["is_anomaly"]) == 10 and len(body["anomalies"]) == 10
    assert body["values"]["pressure"][60] == 34.0 and body["expected"]["pressure"][60] == 42.0
    assert set(body["threshold"]) == {1.0} and body["score"][60] == 2.0 and body["score"][0] == 0.25
    assert [(s["incident_id"], s["start"], s["end"]) for s in body["incidents"]] == [(INC["PT-0003"], T(60), T(69))]
    assert body["truncated"] is False
    narrow = ok(api.get(f"/api/sensors/PT-0003/series?since={T(60)}&until={T(66)}"))
    assert len(narrow["time"]) == 6 and all(narrow["is_anomaly"])
    assert len(ok(api.get("/api/sensors/PT-0005/series"))["time"]) == 51
    capped = ok(api.get("/api/sensors/PT-0003/series?limit=5"))
    assert capped["truncated"] is True and len(capped["time"]) == 5 and capped["time"][-1] == START.timestamp() + 71 * 300


def test_stats_per_sensor_and_hour(api):
    body = ok(api.get(f"/api/stats?since={T(0)}&until={T(72)}&limit=1000"))
    rows = {(r["sensor_id"], r["hour"]): r for r in body["items"]}
    assert len(rows) == 35                                    # 6 sensors x 6 hours, PT-0005 silent in hour 5
    assert [rows[("PT-0001", T(12 * h))]["mean"] for h in range(6)] == [40.0, 41.0, 42.0, 40.0, 41.0, 42.0]
    leak = rows[("PT-0002", T(12))]
    assert (leak["mean"], leak["anomalies"], leak["incidents"], leak["readings"]) == (37.0, 6, 1, 12)
    assert rows[("PT-0005", T(48))]["readings"] == 3
    # 30-day std up to hour 1: 12 readings of 40 and 12 of 41 -> sqrt(24 * 0.25 / 23)
    assert rows[("PT-0001", T(0))]["std_30d"] == 0.0
    assert rows[("PT-0001", T(12))]["std_30d"] == pytest.approx((6 / 23) ** 0.5)
    paged = ok(api.get(f"/api/stats?since={T(0)}&until={T(72)}&limit=10&sensor=PT-0001"))
    assert len(paged["items"]) == 6 and paged["next_offset"] is None
    assert ok(api.get("/api/stats?limit=1000"))["until"] == T(72)   # default: a day up to the newest hour


def test_health_and_metrics(api):
    h = ok(api.get("/api/health"))
    assert h["reachable"] is True and h["newest_batch"]["batch_id"] == 5
    assert h["newest_batch"]["max_event_time"] == T(71) and h["batch_age_s"] >= 0
    assert h["writable"] is (api.kind != "s3")
    metrics = api.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = dict(line.rsplit(" ", 1) for line in metrics.text.splitlines() if not line.startswith("#"))
    assert lines["sentinel_store_up"] == "1" and lines["sentinel_newest_batch_id"] == "5"
    if api.kind != "s3":   # S3 counts objects, not rows
        assert h["counts"]["anomalies"] == 23 and h["counts"]["incidents"] == 3 and h["counts"]["scores"] == 411
        assert (lines["sentinel_batches_total"], lines["sentinel_anomalies_total"], lines["sentinel_incidents_open"]) \
            == ("6", "23", "2")


def test_page_docs_and_assets(api):
    page = api.get("/")
    assert page.status_code == 200 and 'id="incidents"' in page.text and TOKEN not in page.text
    assert api.get("/static/app.js").status_code == 200
    vendor = api.get("/static/vendor/uPlot.iife.min.js")
    assert vendor.status_code == 200 and "uPlot" in vendor.text[:4000]
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/api/sensors", "/api/incidents", "/api/incidents/{incident_id}/ack", "/api/sensors/{sensor_id}/series",
            "/api/stats", "/api/anomalies", "/api/health", "/metrics"} <= set(paths)


# ---------------------------------------------------------------- bad input: 4xx with a sentence, never 500
HOSTILE = [
    ("/api/sensors/nobody/series", 404), ("/api/sensors/x'%20OR%20'1'='1/series", 404),
    ("/api/sensors/PT-0001%00/series", 400), ("/api/incidents/INC-0000000000000000", 404),
    ("/api/incidents/%0a%0d", 400), ("/api/anomalies?since=2026-13-45", 400), ("/api/anomalies?since=yesterday", 400),
    (f"/api/anomalies?since={T(10)}&until={T(5)}", 400), ("/api/anomalies?since=99999-01-01", 400),
    ("/api/anomalies?limit=1001", 422), ("/api/anomalies?limit=-1", 422), ("/api/anomalies?offset=-5", 422),
    ("/api/anomalies?min_severity=abc", 422), ("/api/anomalies?min_severity=nan", 422), ("/api/incidents?status=bogus", 400),
    ("/api/incidents?kind=meteor", 422), ("/api/incidents?limit=100000", 422), ("/api/incidents?muted=perhaps", 422),
    ("/api/sensors?state=asleep", 422), ("/api/sensors/PT-0001/series?since=2025-01-01&until=2025-03-01", 400),
    ("/api/stats?since=2025-01-01&until=2025-03-01", 400), ("/api/sensors?zone=" + "z" * 300, 400),
    ("/api/incidents?sensor=%00", 400), ("/api/nothing", 404),
]


@pytest.mark.parametrize("path,status", HOSTILE, ids=[p for p, _ in HOSTILE])
def test_bad_input_is_a_4xx_with_one_sentence(api, path, status):
    resp = api.get(path)
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail


# ---------------------------------------------------------------- writes
def test_writes_need_the_token(fresh):
    iid = INC["PT-0003"]
    no_header = fresh.post(f"/api/incidents/{iid}/ack", json={"actor": "mallory"})
    assert no_header.status_code == 401 and "Authorization: Bearer" in no_header.json()["detail"]
    assert no_header.headers["www-authenticate"] == "Bearer"
    wrong = fresh.post(f"/api/incidents/{iid}/ack", json={"actor": "mallory"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong" in wrong.json()["detail"] and "nope" not in wrong.text
    basic = fresh.post(f"/api/incidents/{iid}/close", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert ok(fresh.get(f"/api/incidents/{iid}"))["status"] == "new"     # nothing changed
    from fastapi.testclient import TestClient
    os.environ.pop("SENTINEL_API_TOKEN", None)
    with TestClient(create_app(fresh.url, load_settings())) as no_token:
        refused = no_token.post(f"/api/incidents/{iid}/ack", json={"actor": "x"}, headers=AUTH)
        assert refused.status_code == 403 and "SENTINEL_API_TOKEN" in refused.json()["detail"]


def test_acknowledge_close_and_label_are_stored_with_their_audit_trail(fresh):
    iid = INC["PT-0003"]
    acked = ok(fresh.post(f"/api/incidents/{iid}/ack", json={"actor": "alice", "comment": "crew sent"}, headers=AUTH))
    assert (acked["status"], acked["acknowledged_by"], acked["comment"]) == ("acknowledged", "alice", "crew sent")
    again = fresh.post(f"/api/incidents/{iid}/ack", json={"actor": "alice"}, headers=AUTH)
    assert again.status_code == 409 and "already acknowledged" in again.json()["detail"]
    labelled = ok(fresh.post(f"/api/incidents/{iid}/label", json={"actor": "bob", "label": "confirmed"}, headers=AUTH))
    assert (labelled["label"], labelled["labelled_by"]) == ("confirmed", "bob")
    closed = ok(fresh.post(f"/api/incidents/{iid}/close", json={"actor": "bob"}, headers=AUTH))
    assert (closed["status"], closed["closed_by"]) == ("closed", "bob")
    assert [a["action"] for a in closed["actions"]] == ["ack", "label", "close"]
    assert [a["actor"] for a in closed["actions"]] == ["alice", "bob", "bob"]
    with open_store(fresh.url, load_settings()) as store:   # the store itself says so
        assert store.incident(iid)["status"] == "closed"
    assert [i["first_sensor"] for i in ok(fresh.get("/api/incidents?status=open"))["items"]] == ["PT-0006"]
    states = {s["sensor_id"]: s["state"] for s in ok(fresh.get("/api/sensors"))["items"]}
    assert states["PT-0003"] == "ok"   # its newest score (step 71) is normal and the incident is closed
    assert fresh.post(f"/api/incidents/{iid}/ack", json={"actor": "c"}, headers=AUTH).status_code == 409


def test_the_stream_never_moves_an_acknowledged_incident_back(fresh):
    iid = INC["PT-0006"]
    ok(fresh.post(f"/api/incidents/{iid}/ack", json={"actor": "alice"}, headers=AUTH))
    url = fresh.url
    if url.startswith("sqlite"):
        sink = SqliteSink(url.removeprefix("sqlite:///"))
    else:
        from sentinel.store.sinks.postgres import PostgresSink
        sink = PostgresSink(PostgresSettings(schema=url.rsplit("schema=", 1)[1], retries=1, retry_backoff_s=0.05))
    sink.write(FEED.batch(6, 72, 74))    # the stream updates it (status "new" in its record)
    sink.close()
    one = ok(fresh.get(f"/api/incidents/{iid}"))
    assert (one["status"], one["acknowledged_by"], one["batch_id"]) == ("acknowledged", "alice", 6)


@pytest.mark.parametrize("body,status", [
    ({"actor": "x", "label": "meteor"}, 422), ({"actor": "", "label": "confirmed"}, 422),
    ({"actor": "x" * 101, "label": "confirmed"}, 422), ({"actor": "x"}, 422),
    ({"actor": "x", "label": "confirmed", "role": "admin"}, 422),
])
def test_bad_label_bodies(fresh, body, status):
    resp = fresh.post(f"/api/incidents/{INC['PT-0003']}/label", json=body, headers=AUTH)
    assert resp.status_code == status and isinstance(resp.json()["detail"], str)


def test_unknown_incident_and_hostile_ids_on_writes(fresh):
    assert fresh.post("/api/incidents/INC-ffffffffffffffff/ack", json={"actor": "a"}, headers=AUTH).status_code == 404
    assert fresh.post("/api/incidents/'%3B%20DROP%20TABLE%20incidents%3B--/close", headers=AUTH).status_code == 404
    assert fresh.post("/api/incidents/x%00/close", headers=AUTH).status_code == 400
    assert len(ok(fresh.get("/api/incidents"))["items"]) == 3


def test_s3_is_read_only(s3_url):
    from fastapi.testclient import TestClient
    with TestClient(create_app(s3_url, load_settings(), token=TOKEN)) as api:
        resp = api.post(f"/api/incidents/{INC['PT-0003']}/ack", json={"actor": "a"}, headers=AUTH)
        assert resp.status_code == 409 and "read-only" in resp.json()["detail"]
        assert ok(api.get(f"/api/incidents/{INC['PT-0003']}"))["status"] == "new"
