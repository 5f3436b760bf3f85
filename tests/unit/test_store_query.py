"""sentinel query / report without services: store URLs, times, SQL building, output formats,
and the whole query + report path on a SQLite store (a file, no server)."""
from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest

from sentinel.cli import query as cli_query
from sentinel.store import query as an
from sentinel.store import report
from sentinel.config import ConfigError, load_settings
from sentinel.store.sinks.base import BatchRecords
from sentinel.stream.writer import anomaly_records

HOSTILE = ["x'); DROP TABLE anomalies;--", "../../etc", "Ünïcødé-センサー", "$x^2$ {y}", "a|b`c`<b>"]


# ---------------------------------------------------------------- store URLs
def test_parse_sqlite_urls(tmp_path):
    s = load_settings()
    assert an.parse_store("sqlite:///data/x.db", s) == an.Store("sqlite", "data/x.db")
    assert an.parse_store("sqlite:////abs/x.db", s) == an.Store("sqlite", "/abs/x.db")
    assert an.parse_store("data/plain.db", s) == an.Store("sqlite", "data/plain.db")
    db = tmp_path / "real.db"
    db.touch()
    # sqlite:///ABS where only the absolute reading exists: take it
    assert an.parse_store(f"sqlite://{db}", s).target == str(db)
    with pytest.raises(ConfigError, match="names no file"):
        an.parse_store("sqlite:///", s)


def test_parse_postgres_urls():
    s = load_settings(None, ['sinks.postgres.schema="prod"'])
    st = an.parse_store("postgresql://sentinel@127.0.0.1:55432/sentinel", s)
    assert st == an.Store("postgres", "postgresql://sentinel@127.0.0.1:55432/sentinel", "prod")
    st = an.parse_store("postgres://u@h:1/db?schema=t_1&sslmode=require", s)
    assert st.namespace == "t_1" and st.target == "postgresql://u@h:1/db?sslmode=require"
    assert an.parse_store("postgresql://", s).namespace == "prod"  # everything from PG* env
    with pytest.raises(ConfigError, match="PGPASSWORD"):
        an.parse_store("postgresql://u:secret@h/db", s)


def test_parse_s3_and_unknown_urls():
    assert an.parse_store("s3://bucket/a/b/") == an.Store("s3", "bucket", "a/b")
    assert an.parse_store("s3://bucket") == an.Store("s3", "bucket", "")
    with pytest.raises(ConfigError, match="unknown store"):
        an.parse_store("mysql://h/db")
    with pytest.raises(ConfigError):
        an.parse_store("  ")


def test_default_store_follows_sinks_enabled():
    assert an.default_store(load_settings()) == an.Store("sqlite", "data/sentinel.db")
    s = load_settings(None, ['sinks.enabled=["s3", "sqlite"]', 'sinks.s3.prefix="/lake/"'])
    assert an.default_store(s) == an.Store("s3", "sentinel", "lake")


# ---------------------------------------------------------------- times and filters
NOW = pd.Timestamp("2026-03-25T12:00:00Z")


@pytest.mark.parametrize("text, expected", [
    ("24h", "2026-03-24T12:00:00Z"), ("-30m", "2026-03-25T11:30:00Z"), ("7d", "2026-03-18T12:00:00Z"),
    ("1.5 hours", "2026-03-25T10:30:00Z"), ("now", "2026-03-25T12:00:00Z"),
    ("2026-03-01", "2026-03-01T00:00:00Z"), ("2026-03-01T10:00:00", "2026-03-01T10:00:00Z"),
    ("2026-03-01T10:00:00+02:00", "2026-03-01T08:00:00Z"),
])
def test_parse_time(text, expected):
    assert an.parse_time(text, NOW) == pd.Timestamp(expected)


def test_parse_time_rejects_garbage():
    assert an.parse_time(None) is None and an.parse_time("") is None
    for bad in ("yesterday", "24x", "2026-13-45"):
        with pytest.raises(ConfigError, match="ISO-8601"):
            an.parse_time(bad, NOW)


def test_cli_arguments_parse_into_filters():
    from sentinel.cli import build_parser
    args = build_parser().parse_args(["query", "--store", "s3://b/p", "--sensor", "A", "--sensor", "B'; --",
                                      "--since", "2026-03-01", "--until", "2026-03-02T00:00:00Z",
                                      "--min-severity", "1.5", "--zone", "north", "--limit", "10", "--format", "csv"])
    f = cli_query.filters_from_args(args)
    assert f == an.Filters(sensors=("A", "B'; --"), since=pd.Timestamp("2026-03-01", tz="UTC"),
                           until=pd.Timestamp("2026-03-02", tz="UTC"), min_severity=1.5, zone="north", limit=10)
    assert args.format == "csv" and args.store == "s3://b/p"
    bad = build_parser().parse_args(["query", "--since", "2026-03-02", "--until", "2026-03-01"])
    with pytest.raises(ConfigError, match="not before"):
        cli_query.filters_from_args(bad)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["query", "--format", "xml"])
    rep = build_parser().parse_args(["report", "--out", "r", "--history", "h.csv", "--zone", "z"])
    assert rep.out == "r" and rep.history == "h.csv" and rep.max_sensors == 50


# ---------------------------------------------------------------- SQL building
def test_build_sql_binds_every_value():
    f = an.Filters(sensors=tuple(HOSTILE[:2]), since=NOW, until=NOW + pd.Timedelta(hours=1), min_severity=2.0,
                   zone=HOSTILE[0], limit=5)
    lite, lp = an.build_sql(f, "sqlite")
    pg, pp = an.build_sql(f, "postgres")
    for text in (lite, pg):
        assert "DROP" not in text and "etc" not in text  # hostile strings only travel as parameters
    assert lite.count("?") == len(lp) == 7 and "%s" not in lite
    assert pg.count("%s") == len(pp) == 7 and "?" not in pg
    assert lp == [HOSTILE[0], HOSTILE[1], "2026-03-25 12:00:00.000000", "2026-03-25 13:00:00.000000", 2.0,
                  HOSTILE[0], 5]
    assert pp[2] == NOW.to_pydatetime() and pp[2].tzinfo is not None
    assert 'ORDER BY a.event_time, a.sensor_id COLLATE "C", a.model_version COLLATE "C"' in pg
    assert lite.endswith("ORDER BY a.event_time, a.sensor_id, a.model_version LIMIT ?")
    plain, params = an.build_sql(an.Filters(), "sqlite")
    assert " WHERE " not in plain and "LIMIT" not in plain and params == []
    assert "{anomalies}" in plain and "{sensors}" in plain


def test_postgres_helpers():
    from sentinel.store.sinks.postgres import MIGRATIONS, check_dsn, lock_key
    assert lock_key("sentinel") == lock_key("sentinel") != lock_key("other")
    assert -2 ** 63 <= lock_key("x") < 2 ** 63
    assert [v for v, _, _ in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    check_dsn("host=db user=sentinel dbname=sentinel")
    check_dsn("")
    with pytest.raises(ConfigError, match="PGPASSWORD"):
        check_dsn("postgresql://u:pw@h/db")


def test_s3_keys_and_urls():
    from sentinel.store.sinks.s3 import object_key
    from sentinel.store.storage import join_key, parse_s3_url
    assert object_key("lake/anomalies", "anomalies", "2026-03-25", 42) == \
        "lake/anomalies/anomalies/dt=2026-03-25/batch-000000000042.parquet"
    assert object_key("", "rejects", "2026-03-25", 0) == "rejects/dt=2026-03-25/batch-000000000000.parquet"
    with pytest.raises(ValueError):
        object_key("p", "../x", "2026-03-25", 1)
    assert parse_s3_url("s3a://b/models/pressure/") == ("b", "models/pressure")
    assert join_key("/a/", "", "b/", "c") == "a/b/c"
    with pytest.raises(ValueError):
        parse_s3_url("/local/path")


# ---------------------------------------------------------------- a SQLite store, end to end
def _anomalies(batch_id, rows, model_version="v1"):
    df = pd.DataFrame({"sensor_id": [r[0] for r in rows],
                       "event_time": pd.to_datetime([r[1] for r in rows], utc=True, format="ISO8601"),
                       "score": [r[2] for r in rows], "threshold": [1.0] * len(rows),
                       "values": [[30.0 + i] for i in range(len(rows))]})
    return anomaly_records(df, model_version, batch_id, ["pressure"])


@pytest.fixture
def sqlite_store(tmp_path):
    from sentinel.store.registry import normalise
    from sentinel.store.sinks.sqlite import SqliteSink
    db = tmp_path / "s.db"
    sink = SqliteSink(db)
    sink.setup()
    rows = [(sid, f"2026-03-25T{10 + i}:00:00Z", 1.5 + i, ) for i, sid in enumerate(HOSTILE)]
    rows += [("PT-1", "2026-03-25T10:00:00Z", 4.0), ("PT-1", "2026-03-26T01:30:00Z", 1.2)]
    a = _anomalies(0, rows)
    sink.write(BatchRecords(0, anomalies=a))
    sink.load_sensors(normalise(pd.DataFrame({"sensor_id": ["PT-1", HOSTILE[1]], "zone": ["north", "z|one\nx"]})))
    return db, a


def test_query_sqlite_store(sqlite_store):
    db, a = sqlite_store
    all_rows = an.query(an.Store("sqlite", str(db)), an.Filters())
    assert list(all_rows.columns) == an.QUERY_COLUMNS and len(all_rows) == 7
    assert all_rows["event_time"].is_monotonic_increasing
    first = all_rows.iloc[:2]  # a tie at 10:00 sorts by sensor id in code-point order
    assert first["sensor_id"].tolist() == ["PT-1", HOSTILE[0]]
    assert str(all_rows["event_time"].dt.tz) == "UTC"
    assert json.loads(all_rows["values"].iloc[0]) == {"pressure": 35.0}
    q = an.query(an.Store("sqlite", str(db)), an.Filters(zone="z|one\nx"))
    assert q["sensor_id"].tolist() == [HOSTILE[1]]
    q = an.query(an.Store("sqlite", str(db)), an.Filters(since=pd.Timestamp("2026-03-25T12:00Z"), min_severity=3.0))
    assert q["sensor_id"].tolist() == [HOSTILE[2], HOSTILE[3], HOSTILE[4]]
    assert len(an.query(an.Store("sqlite", str(db)), an.Filters(limit=3))) == 3
    with sqlite3.connect(db) as con:  # the injection attempt is data, the table is still there
        assert con.execute("SELECT count(*) FROM anomalies").fetchone()[0] == 7
    with pytest.raises(ConfigError, match="does not exist"):
        an.query(an.Store("sqlite", str(db) + ".missing"), an.Filters())
    assert not (db.parent / "s.db.missing").exists()  # a query never creates an empty store


def test_output_formats(sqlite_store):
    db, _ = sqlite_store
    rows = an.query(an.Store("sqlite", str(db)), an.Filters())
    table = cli_query.format_rows(rows, "table")
    assert table.splitlines()[0].split() == an.QUERY_COLUMNS
    assert "z|one\\nx" in table and len(table.splitlines()) == 2 + 7 + 1  # newline escaped, one line per row
    back = pd.read_csv(__import__("io").StringIO(cli_query.format_rows(rows, "csv")), keep_default_na=False)
    assert back["sensor_id"].tolist() == rows["sensor_id"].tolist()
    assert back["event_time"].iloc[0] == "2026-03-25T10:00:00.000000Z"
    recs = json.loads(cli_query.format_rows(rows, "json"))
    assert recs[0]["values"] == {"pressure": 35.0} and recs[0]["batch_id"] == 0
    assert cli_query.format_rows(rows.iloc[:0], "table") == "(no anomalies)\n"
    assert json.loads(cli_query.format_rows(rows.iloc[:0], "json")) == []


def test_cli_query_and_report_on_sqlite(sqlite_store, tmp_path, capsys):
    from sentinel.cli import main
    db, a = sqlite_store
    assert main(["query", "--store", f"sqlite:///{db}", "--sensor", "PT-1", "--format", "json"]) == 0
    assert [r["event_time"] for r in json.loads(capsys.readouterr().out)] == \
        ["2026-03-25T10:00:00.000000Z", "2026-03-26T01:30:00.000000Z"]
    history = pd.DataFrame({"sensor_id": ["PT-1"] * 48 + [HOSTILE[1]] * 48,
                            "timestamp": list(pd.date_range("2026-03-25T00:00Z", periods=48, freq="30min")
                                              .strftime("%Y-%m-%dT%H:%M:%SZ")) * 2,
                            "pressure": [30.0 + (i % 7) for i in range(96)]})
    hist = tmp_path / "history.csv"
    history.to_csv(hist, index=False)
    out = tmp_path / "report"
    assert main(["report", "--store", f"sqlite:///{db}", "--out", str(out), "--history", str(hist),
                 "--max-sensors", "2"]) == 0
    capsys.readouterr()
    files = sorted(p.name for p in out.iterdir())
    assert "summary.md" in files and "summary.png" in files
    pngs = [f for f in files if f.startswith("sensor-")]
    # one per sensor with anomalies (the 2 with most: PT-1 with 2, then the first by max severity),
    # all inside --out whatever the id
    assert pngs == sorted([report.safe_name("PT-1"), report.safe_name(HOSTILE[4])])
    assert all((out / f).stat().st_size > 5000 for f in pngs + ["summary.png"])
    assert not any(p.exists() for p in (tmp_path / "etc", tmp_path.parent / "etc"))
    md = (out / "summary.md").read_text()
    assert "- anomalies: 7 from 6 sensors" in md
    assert "| PT-1 | north | 2 |" in md and "z\\|one\\\\nx" in md
    assert md.count("](sensor-") == 2 and "Plots for the 2 sensors with most anomalies only" in md


def test_safe_names_stay_inside_the_folder():
    names = {report.safe_name(s) for s in HOSTILE + ["x'); DROP TABLE anomalies;-_", "", "."]}
    assert len(names) == len(HOSTILE) + 3  # distinct, even when the slugs collide
    assert all("/" not in n and "\\" not in n and n.startswith("sensor-") and n.endswith(".png") for n in names)


def test_report_without_history_or_anomalies(tmp_path):
    frame = an.normalise(pd.DataFrame(columns=an.QUERY_COLUMNS))
    out = report.write_report(frame, tmp_path / "empty")
    assert out["sensors"] == {} and "No anomalies match" in out["summary_md"].read_text()
    a = _anomalies(3, [("$PT$", "2026-03-25T10:00:00Z", 2.0)]).assign(zone=None)
    out = report.write_report(an.normalise(a), tmp_path / "one")
    assert list(out["sensors"]) == ["$PT$"] and out["sensors"]["$PT$"].stat().st_size > 3000


def test_registry_file_is_normalised(tmp_path):
    from sentinel.store.registry import REGISTRY_COLUMNS, RegistryError, read_registry, rows
    p = tmp_path / "sensors.csv"
    p.write_text("sensor_id,zone,latitude,elevation_m\n0012,north,40.1,3\nPT-2,,x,4\n0012,south,40.2,5\n")
    reg = read_registry(p)
    assert list(reg.columns) == REGISTRY_COLUMNS
    assert reg["sensor_id"].tolist() == ["PT-2", "0012"]  # ids stay text ("0012"), the last row wins
    assert rows(reg) == [("PT-2", None, None, None, None), ("0012", 40.2, None, "south", None)]
    with pytest.raises(RegistryError, match="sensor_id"):
        bad = tmp_path / "bad.csv"
        bad.write_text("id,zone\n1,a\n")
        read_registry(bad)
