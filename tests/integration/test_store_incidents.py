"""Incidents, scores, mutes and batches in every store, and the store API over them.

Real SQLite files, the real PostgreSQL server (a fresh schema per test) and the S3 server (a
fresh bucket per test); the records are the hand-made timeline of ``tests/records.py``, so every
count below is checked by hand against it."""
from __future__ import annotations

import json
import math
import sqlite3
import uuid

import pandas as pd
import pytest

from sentinel.config import ConfigError, PostgresSettings, S3Settings, load_settings
from sentinel.incidents import lifecycle
from sentinel.store import IncidentFilters, NotFound, StoreError, open_store
from sentinel.store.query import Filters
from sentinel.store.sinks.base import BatchRecords, batch_record
from tests import records as R
from tests.conftest import need_service
from tests.integration.test_sinks_postgres import drop_schema, fetch

T = R.T
KINDS = ["sqlite", "postgres", "s3"]


class Env:
    """One store of a kind: its sink, its URL and settings for open_store."""

    def __init__(self, kind: str, tmp_path, retention_days: int = 0, retention_every: int | None = None):
        self.kind, self.settings, self.cleanup = kind, load_settings(), lambda: None
        if kind == "sqlite":
            from sentinel.store.sinks.sqlite import SqliteSink
            db = tmp_path / "store.db"
            self.sink = SqliteSink(db, scores_retention_days=retention_days, retention_every=retention_every)
            self.url = f"sqlite:///{db}"
        elif kind == "postgres":
            need_service("PGHOST", "PostgreSQL")
            from sentinel.store.sinks.postgres import PostgresSink
            self.schema = f"i_{uuid.uuid4().hex[:10]}"
            self.sink = PostgresSink(PostgresSettings(schema=self.schema, retries=0), scores_retention_days=retention_days,
                                     retention_every=retention_every)
            self.url = f"postgresql://?schema={self.schema}"
            self.cleanup = lambda: drop_schema(self.schema)
        else:
            endpoint = need_service("SENTINEL_S3_ENDPOINT", "S3 server")
            from sentinel.store.sinks.s3 import S3Sink
            self.bucket = f"sentinel-i-{uuid.uuid4().hex[:10]}"
            self.sink = S3Sink(S3Settings(bucket=self.bucket, prefix="lake", endpoint_url=endpoint),
                               scores_retention_days=retention_days, retention_every=retention_every)
            self.url = f"s3://{self.bucket}/lake"
            self.settings = load_settings(None, [f'sinks.s3.endpoint_url="{endpoint}"'])
            self.cleanup = self._drop_bucket
        self.sink.setup()

    def _drop_bucket(self):
        from sentinel.store.storage import list_keys
        client = self.sink.client
        for key in list_keys(client, self.bucket, ""):
            client.delete_object(Bucket=self.bucket, Key=key)
        client.delete_bucket(Bucket=self.bucket)

    def client(self):
        return open_store(self.url, self.settings, rules=lifecycle)


@pytest.fixture
def make_env(tmp_path):
    made = []

    def make(kind, **kwargs):
        folder = tmp_path / f"env-{len(made)}"
        folder.mkdir()
        env = Env(kind, folder, **kwargs)
        made.append(env)
        return env

    yield make
    for env in made:
        env.sink.close()
        env.cleanup()


def fill(env):
    """Batches 1 and 2 written, each twice (Spark re-runs), and the registry."""
    env.sink.load_sensors(R.REGISTRY)
    for b in (1, 1, 2, 2):
        env.sink.write(R.batch(b))
    return env


@pytest.fixture(scope="module", params=KINDS)
def filled(request, tmp_path_factory):
    """A filled store of every kind and its client, shared by the tests that only read."""
    env = fill(Env(request.param, tmp_path_factory.mktemp(f"filled-{request.param}")))
    try:
        with env.client() as client:
            yield env, client
    finally:
        env.sink.close()
        env.cleanup()


def ids(frame) -> list[str]:
    return frame["incident_id"].tolist()


# ---------------------------------------------------------------- writes: replays and merges
def test_replayed_batches_update_and_never_duplicate(filled):
    env, c = filled
    h = c.health()
    assert h["reachable"] and h["error"] is None
    if env.kind == "s3":
        # every incident opened on 2026-03-20: one object per batch, the re-runs overwrote theirs
        assert (h["counts"]["incidents_objects"], h["counts"]["batches_objects"]) == (2, 2)
    else:
        assert {k: h["counts"][k] for k in ("anomalies", "scores", "incidents", "incidents_open", "batches", "rejects",
                                            "sensors", "incident_actions", "mutes")} == \
            {"anomalies": 2, "scores": 8, "incidents": 3, "incidents_open": 2, "batches": 2, "rejects": 2,
             "sensors": 3, "incident_actions": 0, "mutes": 0}
    assert h["newest_batch"]["batch_id"] == 2 and h["newest_batch"]["max_event_time"] == T("11:50")
    assert h["newest_batch"]["incidents_closed"] == 1 and h["newest_batch"]["duration_s"] == pytest.approx(0.2)
    inc = c.incidents()
    assert ids(inc) == ["INC-A", "INC-B", "INC-C"]  # newest opened first, once each
    b = c.incident("INC-B")
    assert (b["status"], b["closed_at"], b["batch_id"]) == ("closed", T("11:00"), 2)  # batch 2's version
    assert b["detected_at"] == pd.Timestamp("2026-03-20T12:00:01Z")  # the first write's, kept
    assert b["updated_at"] == pd.Timestamp("2026-03-20T12:00:02Z")
    assert [s["sensor_id"] for s in c.incident("INC-A")["sensors"]] == ["PT-1", "PT-2"]
    assert c.incident("INC-C")["muted"] is True and c.incident("nope") is None
    assert len(c.anomalies()) == 2 and len(c.series("PT-1")) == 5


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_status_rank_merge_and_operator_fields_survive_the_stream(make_env, kind):
    env = make_env(kind)
    env.sink.write(R.batch(1))
    with env.client() as c:
        c.acknowledge("INC-C", "ann", "valve crew on site")
        c.label("INC-C", "sensor_fault", "ann")
        c.close("INC-B", "bob")
        # the stream goes on: INC-C still "new" to it with more readings; INC-B "new" in a re-run of batch 1
        later = R.incident(**{**R.INC_C, "readings": 5, "peak": 1.4, "last": "10:10"}, batch_id=3)
        env.sink.write(BatchRecords(3, incidents=pd.DataFrame([later])))
        env.sink.write(R.batch(1))
        got = c.incident("INC-C")
        assert (got["status"], got["readings"], got["peak_severity"], got["last_seen"]) == \
            ("acknowledged", 5, 1.4, T("10:10"))  # status kept by rank, stream fields replaced
        assert (got["acknowledged_by"], got["label"], got["labelled_by"], got["comment"]) == \
            ("ann", "sensor_fault", "ann", "valve crew on site")
        assert got["acknowledged_at"] is not None and got["labelled_at"] >= got["acknowledged_at"]
        assert [a["action"] for a in got["actions"]] == ["ack", "label"]
        assert c.incident("INC-B")["status"] == "closed" and c.incident("INC-B")["closed_by"] == "bob"
        # the stream closes INC-C after its quiet time: a higher rank wins, operator fields stay
        done = R.incident(**{**R.INC_C, "status": "closed", "readings": 5}, closed="11:00", batch_id=4)
        env.sink.write(BatchRecords(4, incidents=pd.DataFrame([done])))
        got = c.incident("INC-C")
        assert (got["status"], got["closed_at"], got["closed_by"], got["label"]) == ("closed", T("11:00"), None,
                                                                                     "sensor_fault")
        with pytest.raises(ConfigError, match="is closed and cannot become acknowledged"):
            c.acknowledge("INC-C", "ann")


def test_a_status_outside_the_vocabulary_fails_the_batch(make_env):
    env = make_env("sqlite")
    bad = R.incident(**{**R.INC_A, "status": "open"})
    with pytest.raises(ValueError, match="'open' is not one of new, acknowledged, closed"):
        env.sink.write(BatchRecords(5, incidents=pd.DataFrame([bad])))
    with env.client() as c:
        assert c.health()["counts"]["incidents"] == 0 and c.health()["counts"]["batches"] == 0


# ---------------------------------------------------------------- the read API, hand-checked
@pytest.mark.parametrize("f, expected", [
    (IncidentFilters(), ["INC-A", "INC-B", "INC-C"]),
    (IncidentFilters(status="new"), ["INC-A", "INC-C"]),
    (IncidentFilters(status=("closed",)), ["INC-B"]),
    (IncidentFilters(kind="leak"), ["INC-A"]),
    (IncidentFilters(zone="south"), ["INC-C"]),
    (IncidentFilters(sensors=("PT-2",)), ["INC-A", "INC-B"]),  # PT-2 is INC-A's second sensor
    (IncidentFilters(muted=True), ["INC-C"]),
    (IncidentFilters(muted=False), ["INC-A", "INC-B"]),
    (IncidentFilters(min_severity=2.0), ["INC-A"]),
    (IncidentFilters(since=T("10:45")), ["INC-A"]),
    (IncidentFilters(until=T("10:00")), ["INC-C"]),
    (IncidentFilters(since=T("09:30"), until=T("10:31")), ["INC-B", "INC-C"]),
    (IncidentFilters(limit=1, offset=1), ["INC-B"]),
    (IncidentFilters(zone="north", status="new", sensors=("PT-1", "PT-9")), ["INC-A"]),
    (IncidentFilters(sensors=("x'); DROP TABLE incidents;--",)), []),
], ids=lambda v: "" if isinstance(v, list) else None)
def test_incident_filters(filled, f, expected):
    _, c = filled
    got = c.incidents(f)
    assert ids(got) == expected
    assert got.dtypes["muted"] == bool and str(got["opened_at"].dt.tz) == "UTC"


def test_sensors_states_series_and_stats(filled):
    env, c = filled
    assert c.sensors()["sensor_id"].tolist() == ["PT-1", "PT-2", "PT-3"]
    st = c.sensor_states().set_index("sensor_id")  # now = newest event time, 11:50
    assert st.index.tolist() == ["PT-1", "PT-2", "PT-3", "PT-4"]
    assert st.loc["PT-1", "last_event_time"] == T("11:30") and st.loc["PT-1", "last_score"] == 2.5
    assert json.loads(st.loc["PT-1", "last_values"]) == {"pressure": 36.0}
    assert st["in_open_incident"].to_dict() == {"PT-1": True, "PT-2": True, "PT-3": True, "PT-4": False}
    assert st["open_incident_id"].to_dict() == {"PT-1": "INC-A", "PT-2": "INC-A", "PT-3": "INC-C", "PT-4": None}
    assert st["silent"].to_dict() == {"PT-1": False, "PT-2": True, "PT-3": True, "PT-4": False}  # 30-min gap
    assert st.loc["PT-4", "zone"] is None and not st["muted"].any()
    assert c.sensor_states(now=T("11:40"))["silent"].tolist() == [False, True, True, False]
    s = c.series("PT-1")
    assert s["event_time"].tolist() == [T(x) for x in ("10:00", "10:20", "10:40", "11:00", "11:30")]
    assert [json.loads(v)["pressure"] for v in s["values"]] == [30.0, 31.0, 32.0, 34.0, 36.0]
    assert [json.loads(v)["pressure"] for v in s["expected"]] == [29.0, 30.0, 31.0, 33.0, 35.0]
    assert s["is_anomaly"].tolist() == [False, False, False, False, True]
    assert c.series("PT-1", limit=2)["event_time"].tolist() == [T("11:00"), T("11:30")]  # the newest two
    assert c.series("PT-1", T("10:20"), T("11:00"))["event_time"].tolist() == [T("10:20"), T("10:40")]
    assert c.series("PT-3").empty  # registered, never scored
    with pytest.raises(NotFound, match="no sensor 'PT-9'"):
        c.series("PT-9")
    stats = c.stats(T("09:00"), T("12:00"))
    rows = {(r.sensor_id, r.hour.hour): (r.readings, r.mean, r.std_30d, r.anomalies, r.incidents)
            for r in stats.itertuples(index=False)}
    nan = math.nan
    expected = {("PT-1", 10): (3, 31.0, 1.0, 0, 0), ("PT-1", 11): (2, 35.0, math.sqrt(5.8), 1, 1),
                ("PT-2", 10): (2, 42.0, math.sqrt(8.0), 1, 1), ("PT-2", 11): (0, nan, nan, 0, 1),
                ("PT-3", 9): (0, nan, nan, 0, 1), ("PT-4", 11): (1, 20.0, nan, 0, 0)}
    assert rows.keys() == expected.keys()
    for key, want in expected.items():
        assert rows[key] == pytest.approx(want, nan_ok=True), key
    assert c.stats(T("10:00"), T("11:00"))["hour"].tolist() == [T("10:00"), T("10:00")]  # PT-1, PT-2
    assert list(c.stats().columns) == ["sensor_id", "hour", "readings", "mean", "std_30d", "anomalies", "incidents"]


# ---------------------------------------------------------------- operator writes and bad input
def _snapshot(c) -> tuple:
    return (c.incidents().to_json(), c.mutes().to_json(), [len(c.incident(i)["actions"]) for i in ("INC-A", "INC-B")])


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_actions_mutes_and_bad_input_changes_nothing(make_env, kind):
    env = make_env(kind)
    env.sink.load_sensors(R.REGISTRY)
    for b in (1, 2):
        env.sink.write(R.batch(b))
    with env.client() as c:
        got = c.acknowledge("INC-A", "ann", "crew sent")
        assert (got["status"], got["acknowledged_by"], got["comment"]) == ("acknowledged", "ann", "crew sent")
        got = c.label("INC-A", "confirmed", "bob")
        assert (got["label"], got["labelled_by"], got["status"]) == ("confirmed", "bob", "acknowledged")
        got = c.close("INC-A", "bob", "fixed")
        assert (got["status"], got["closed_by"], got["comment"]) == ("closed", "bob", "fixed")
        assert [(a["action"], a["actor"], a["label"], a["comment"]) for a in got["actions"]] == \
            [("ack", "ann", None, "crew sent"), ("label", "bob", "confirmed", None), ("close", "bob", None, "fixed")]
        m1 = c.add_mute(zone="south", starts_at=T("11:00"), ends_at=T("13:00"), reason="works", actor="ann")
        m2 = c.add_mute(sensor_id="PT-4", starts_at=T("08:00"), ends_at=T("09:00"), reason="swap", actor="ann")
        assert c.add_mute(zone="south", starts_at=T("11:00"), ends_at=T("13:00"), reason="works", actor="ann") == m1
        assert c.mutes()["mute_id"].tolist() == [m2, m1]  # by start; the repeat added nothing
        assert c.mutes(active_at=T("12:00"))["mute_id"].tolist() == [m1]
        assert c.sensor_states()["muted"].tolist() == [False, False, True, False]  # PT-3 is in zone south
        before = _snapshot(c)
        bad = [
            (NotFound, "no incident 'INC-X'", lambda: c.acknowledge("INC-X", "ann")),
            (ConfigError, "unknown incident label 'leaky'", lambda: c.label("INC-B", "leaky", "ann")),
            (ConfigError, "is closed and cannot become acknowledged", lambda: c.acknowledge("INC-B", "ann")),
            (ConfigError, "already closed", lambda: c.close("INC-A", "ann")),
            (ConfigError, "no actor", lambda: c.acknowledge("INC-C", "  ")),
            (ConfigError, "not after its start", lambda: c.add_mute(sensor_id="PT-1", starts_at=T("12:00"),
                                                                    ends_at=T("11:00"), reason="x", actor="a")),
            (ConfigError, "exactly one of a sensor or a zone", lambda: c.add_mute(
                sensor_id="PT-1", zone="north", starts_at=T("11:00"), ends_at=T("12:00"), reason="x", actor="a")),
            (NotFound, "no sensor 'PT-9'", lambda: c.add_mute(sensor_id="PT-9", starts_at=T("11:00"),
                                                              ends_at=T("12:00"), reason="x", actor="a")),
            (NotFound, "no zone 'east'", lambda: c.add_mute(zone="east", starts_at=T("11:00"), ends_at=T("12:00"),
                                                            reason="x", actor="a")),
            (ConfigError, "outside 1..1000", lambda: c.incidents(IncidentFilters(limit=5000))),
            (ConfigError, "unknown incident status 'open'", lambda: IncidentFilters(status="open")),
            (ConfigError, "is not before until", lambda: c.series("PT-1", T("12:00"), T("11:00"))),
            (ConfigError, "longer than 31 days", lambda: c.stats(T("09:00") - pd.Timedelta(days=40), T("09:00"))),
        ]
        for exc, words, call in bad:
            with pytest.raises(exc) as info:
                call()
            assert words in str(info.value) and "\n" not in str(info.value), (words, str(info.value))
        assert _snapshot(c) == before


def test_s3_is_read_only_for_operators(make_env):
    c = fill(make_env("s3")).client()
    for call in (lambda: c.acknowledge("INC-A", "ann"), lambda: c.close("INC-A", "ann"),
                 lambda: c.label("INC-A", "confirmed", "ann"),
                 lambda: c.add_mute(zone="north", starts_at=T("11:00"), ends_at=T("12:00"), reason="x", actor="a")):
        with pytest.raises(StoreError, match=r"is read-only for operator actions: .* on the SQLite or PostgreSQL"):
            call()
    assert c.incident("INC-A")["status"] == "new" and c.mutes().empty and c.incident("INC-A")["actions"] == []


# ---------------------------------------------------------------- stores written by today's schema
OLD_ROW = ("PT-1", "2026-03-19 10:00:00.000000", 2.0, 1.0, 2.0, '{"pressure": 20.0}', "v0", 0,
           "2026-03-19 10:00:01.000000")


def test_sqlite_file_from_the_previous_version_is_upgraded(make_env, tmp_path):
    from sentinel.store.sinks.sqlite import SCHEMA, SqliteSink
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as con:  # exactly what the previous version created
        con.executescript(SCHEMA)
        con.execute("INSERT INTO anomalies VALUES (?,?,?,?,?,?,?,?,?)", OLD_ROW)
    con.close()
    with open_store(f"sqlite:///{db}") as c:  # readers cope before the upgrade ...
        assert c.anomalies()[["sensor_id", "expected", "explanation"]].values.tolist() == [["PT-1", None, None]]
        with pytest.raises(StoreError, match=r"has no table incidents: it was written by an older version"):
            c.incidents()
    sink = SqliteSink(db)
    assert sink.setup() == ["anomalies.expected", "anomalies.explanation"]
    assert sink.setup() == []  # once
    sink.write(R.batch(1))
    with open_store(f"sqlite:///{db}") as c:
        a = c.anomalies()
        assert a["sensor_id"].tolist() == ["PT-1", "PT-2"] and a["expected"].tolist() == [None, '{"pressure": 43.0}']
        assert ids(c.incidents()) == ["INC-B", "INC-C"]
    with sqlite3.connect(db) as con:
        cols = [r[1] for r in con.execute("PRAGMA table_info(anomalies)")]
    con.close()
    fresh = make_env("sqlite").sink.path
    with sqlite3.connect(fresh) as con:  # a new file has the same columns in the same order
        assert [r[1] for r in con.execute("PRAGMA table_info(anomalies)")] == cols
    con.close()


def test_postgres_schema_at_version_2_is_migrated():
    need_service("PGHOST", "PostgreSQL")
    from psycopg2 import sql

    from sentinel.store.sinks.postgres import MIGRATIONS, PostgresSink
    from tests.integration.test_sinks_postgres import admin_connect
    schema = f"m_{uuid.uuid4().hex[:10]}"
    con = admin_connect()
    try:
        with con, con.cursor() as cur:  # what the previous version's setup() left: migrations 1 and 2
            ident = sql.Identifier(schema)
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
            cur.execute(sql.SQL("CREATE TABLE {}.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                                "applied_at timestamptz NOT NULL DEFAULT now())").format(ident))
            for version, name, statements in MIGRATIONS[:2]:
                for stmt in statements:
                    cur.execute(sql.SQL(stmt).format(schema=ident))
                cur.execute(sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES (%s, %s)").format(ident),
                            (version, name))
            cur.execute(sql.SQL("INSERT INTO {}.anomalies VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)").format(ident),
                        [v + "+00" if i in (1, 8) else v for i, v in enumerate(OLD_ROW)])
        url = f"postgresql://?schema={schema}"
        with open_store(url) as c:
            assert c.anomalies()["expected"].tolist() == [None]  # read before the upgrade
        sink = PostgresSink(PostgresSettings(schema=schema, retries=0))
        assert sink.setup() == [3]
        assert sink.setup() == []
        sink.write(R.batch(1))
        sink.write(R.batch(1))
        sink.close()
        assert [r[0] for r in fetch(schema, "SELECT version FROM {s}.schema_migrations ORDER BY 1")] == [1, 2, 3]
        with open_store(url) as c:
            assert c.anomalies()["sensor_id"].tolist() == ["PT-1", "PT-2"]
            assert ids(c.incidents()) == ["INC-B", "INC-C"] and c.health()["counts"]["scores"] == 5
    finally:
        con.close()
        drop_schema(schema)


# ---------------------------------------------------------------- scores retention
def _scores_batch(batch_id: int, day: str) -> BatchRecords:
    df = pd.DataFrame({"sensor_id": ["PT-1", "PT-2"], "event_time": [pd.Timestamp(f"{day}T10:00Z")] * 2,
                       "values": [[30.0], [31.0]], "score": [0.1, 0.2], "threshold": 1.0, "is_anomaly": False})
    from sentinel.store.sinks.base import score_records
    return BatchRecords(batch_id, scores=score_records(df, "v1", batch_id, ["pressure"]),
                        batch=batch_record(batch_id, scored=2))


@pytest.mark.parametrize("kind", KINDS)
def test_scores_older_than_the_retention_are_deleted(make_env, kind):
    env = make_env(kind, retention_days=2, retention_every=2)
    env.sink.write(_scores_batch(0, "2026-03-01"))   # due (first batch): nothing older yet
    env.sink.write(_scores_batch(1, "2026-03-02"))
    env.sink.write(_scores_batch(2, "2026-03-05"))   # due: 03-01 and 03-02 are > 2 days before 03-05
    with env.client() as c:
        assert c.series("PT-1")["event_time"].tolist() == [pd.Timestamp("2026-03-05T10:00Z")]
    env.sink.write(_scores_batch(3, "2026-03-04"))   # not due: kept until the next clean-up
    env.sink.write(_scores_batch(4, "2026-03-09"))   # due: only 03-09 stays
    with env.client() as c:
        assert c.series("PT-2")["event_time"].tolist() == [pd.Timestamp("2026-03-09T10:00Z")]


# ---------------------------------------------------------------- the CLI, end to end
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_incidents_cli_end_to_end(make_env, kind, capsys):
    from sentinel.cli import main
    env = make_env(kind)
    env.sink.load_sensors(R.REGISTRY)
    for b in (1, 2):
        env.sink.write(R.batch(b))
    u = env.url

    def run(*argv):
        rc = main(list(argv))
        out = capsys.readouterr()
        return rc, out.out, out.err

    rc, out, _ = run("incidents", "list", "--store", u, "--format", "json")
    assert rc == 0 and [r["incident_id"] for r in json.loads(out)] == ["INC-A", "INC-B", "INC-C"]
    assert json.loads(out)[0]["sensors"][1]["sensor_id"] == "PT-2"
    rc, out, _ = run("incidents", "list", "--store", u, "--zone", "north", "--status", "new", "--kind", "leak",
                     "--sensor", "PT-1", "--since", "2026-03-20T11:00:00Z", "--min-severity", "2", "--format", "csv")
    assert rc == 0 and out.splitlines()[0].startswith("incident_id,kind,status") and len(out.splitlines()) == 2
    rc, out, _ = run("incidents", "list", "--store", u, "--muted")
    assert rc == 0 and "INC-C" in out and "INC-A" not in out and out.rstrip().endswith("(1 rows)")
    assert run("incidents", "ack", "INC-A", "--by", "ann", "--comment", "crew sent", "--store", u)[:2] == \
        (0, "incident INC-A acknowledged by ann (status acknowledged)\n")
    assert run("incidents", "--store", u, "label", "INC-A", "confirmed", "--by", "bob")[0] == 0
    assert run("incidents", "close", "INC-A", "--by", "bob", "--store", u)[0] == 0
    rc, out, _ = run("incidents", "show", "INC-A", "--store", u, "--format", "json")
    shown = json.loads(out)
    assert rc == 0 and (shown["status"], shown["label"], shown["acknowledged_by"]) == ("closed", "confirmed", "ann")
    assert [a["action"] for a in shown["actions"]] == ["ack", "label", "close"]
    rc, out, _ = run("incidents", "show", "INC-A", "--store", u)
    assert rc == 0 and "acknowledged_by  ann" in out and "comment: crew sent" in out
    rc, out, _ = run("incidents", "mute", "--zone", "south", "--from", "2026-03-20T11:00:00Z", "--until",
                     "2026-03-20T13:00:00Z", "--reason", "valve works", "--by", "ann", "--store", u)
    assert rc == 0 and out.startswith("mute MUTE-") and "zone south muted from 2026-03-20T11:00:00" in out
    rc, out, _ = run("incidents", "mutes", "--store", u, "--active-at", "2026-03-20T12:00:00Z", "--format", "json")
    assert rc == 0 and [(m["zone"], m["reason"]) for m in json.loads(out)] == [("south", "valve works")]
    before = (run("incidents", "list", "--store", u, "--format", "json")[1],
              run("incidents", "mutes", "--store", u, "--format", "json")[1])
    for argv, words in [
        (("incidents", "ack", "INC-NONE", "--by", "ann"), "no incident 'INC-NONE'"),
        (("incidents", "label", "INC-B", "leaky", "--by", "ann"), "unknown incident label 'leaky'"),
        (("incidents", "ack", "INC-B", "--by", "ann"), "is closed and cannot become acknowledged"),
        (("incidents", "list", "--status", "open"), "unknown incident status 'open'"),
        (("incidents", "list", "--limit", "5000"), "outside 1..1000"),
        (("incidents", "list", "--since", "yesterday"), "neither ISO-8601"),
        (("incidents", "mute", "--sensor", "PT-1", "--from", "2026-03-20T12:00:00Z", "--until=2026-03-20T11:00:00Z",
          "--reason", "x", "--by", "ann"), "not after its start"),
        (("incidents", "mute", "--sensor", "PT-9", "--from", "now", "--until", "+1h", "--reason", "x", "--by", "a"),
         "no sensor 'PT-9'"),
    ]:
        rc, out, err = run(*argv, "--store", u)
        assert rc == 2 and out == "" and err.startswith("error: ") and words in err, (argv, err)
        assert err.count("\n") == 1, err  # one sentence
    assert (run("incidents", "list", "--store", u, "--format", "json")[1],
            run("incidents", "mutes", "--store", u, "--format", "json")[1]) == before


def test_report_lists_incidents_and_writes_json(make_env, tmp_path, capsys):
    from sentinel.cli import main
    env = fill(make_env("sqlite"))  # one store is enough: the report reads through the same API
    out, doc = tmp_path / "report", tmp_path / "figures" / "report.json"
    assert main(["report", "--store", env.url, "--out", str(out), "--json", str(doc)]) == 0
    assert "2 anomalies, 3 incidents" in capsys.readouterr().out
    md = (out / "summary.md").read_text()
    assert "## Incidents" in md and "- incidents: 3 (closed 1, new 2; burst 1, leak 1, sensor\\_fault 1)" in md
    assert "| INC-A | new | leak | north | PT-1 |" in md and "## Alarm load" in md
    figures = json.loads(doc.read_text())
    assert figures["anomalies"] == 2 and figures["incidents"]["by_status"] == {"new": 2, "closed": 1}
    assert [i["incident_id"] for i in figures["incidents"]["items"]] == ["INC-A", "INC-B", "INC-C"]
    # INC-C is muted: counted apart; INC-B (10:30) and INC-A (11:30) lie exactly an hour apart, and
    # an hour [t, t + 1 h) holds one of them
    load = figures["alarm_load"]
    assert (load["incidents"], load["muted_incidents"], load["most_in_an_hour"]) == (2, 1, 1)
    assert [b["sensor_id"] for b in load["bad_actors"]] == ["PT-2", "PT-1"]  # PT-2 is in both counted ones
    assert "2 incidents from" in md


def test_anomaly_filters_read_the_new_columns(filled):
    _, c = filled
    a = c.anomalies(Filters(min_severity=2.0))
    assert a["sensor_id"].tolist() == ["PT-1"] and a["explanation"].tolist() == ["pressure 36 vs expected 35"]
    assert json.loads(a["expected"].iloc[0]) == {"pressure": 35.0}
