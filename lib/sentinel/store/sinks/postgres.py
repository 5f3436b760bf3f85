"""PostgreSQL store (psycopg2).

Connection: ``sinks.postgres.dsn`` (a libpq DSN or URL *without* password) or, when empty, the
standard libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD / ~/.pgpass).

Schema: versioned migrations in ``MIGRATIONS``, applied by ``setup()`` inside one transaction
that holds a transaction-scoped advisory lock, so any number of jobs may start at once; the
applied versions are recorded in ``<schema>.schema_migrations``. Tables and keys match
``sinks/sqlite.py``: anomalies and scores PK (sensor_id, event_time, model_version), rejects PK
(batch_id, seq), sensors PK sensor_id, incidents PK incident_id, mutes PK mute_id, batches PK
batch_id; times are ``timestamptz``, JSON fields ``jsonb``.

Writes: one transaction per micro-batch. Anomalies and scores are streamed with ``COPY`` (CSV)
into temporary tables and moved with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` (about 10x
faster than row-by-row VALUES lists, which built every row in Python); rejects, rare and
needing text clean-up, use ``execute_values ... ON CONFLICT DO NOTHING``; incidents and the
batch row are upserted (:func:`base.incident_upsert`). Either way a replayed batch adds
nothing. Transient failures (OperationalError / InterfaceError: refused, reset, server
restart) are retried ``retries`` times with exponential back-off ``retry_backoff_s * 2**attempt``
on a fresh connection; then a :class:`StoreError` (a RuntimeError: one sentence naming the sink,
the last error and the fix) fails the micro-batch, and Spark re-runs it from the checkpoint.
"""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Callable, TypeVar

import pandas as pd

from sentinel.config import ConfigError, PostgresSettings
from sentinel.store import registry
from sentinel.store.errors import StoreError
from sentinel.store.sinks.base import (ANOMALY_COLUMNS, BATCH_COLUMNS, INCIDENT_STREAM_COLUMNS, SCORE_COLUMNS,
                                       BatchRecords, Retention, conform, incident_rows, incident_upsert,
                                       json_or_none, text_or_none, time_text)

log = logging.getLogger("sentinel.sinks.postgres")
# The back-off wait; tests replace this one name (patching time.sleep would hit every thread).
_sleep = time.sleep
T = TypeVar("T")

# (version, name, statements). Statements are psycopg2.sql templates: {schema} is replaced by
# the quoted schema identifier. Never edit an applied migration: append a new one.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "anomalies, rejects, sensors", [
        """CREATE TABLE IF NOT EXISTS {schema}.anomalies (
            sensor_id     text             NOT NULL,
            event_time    timestamptz      NOT NULL,
            score         double precision NOT NULL,
            threshold     double precision NOT NULL,
            severity      double precision NOT NULL,   -- score / threshold
            "values"      jsonb            NOT NULL,   -- feature -> reading
            model_version text             NOT NULL,
            batch_id      bigint           NOT NULL,
            detected_at   timestamptz      NOT NULL,
            PRIMARY KEY (sensor_id, event_time, model_version))""",
        # "by sensor and time" is the primary key's index (sensor_id, event_time, model_version):
        # a second index on (sensor_id, event_time) would only slow the writes down.
        "CREATE INDEX IF NOT EXISTS anomalies_by_time ON {schema}.anomalies (event_time)",
        """CREATE TABLE IF NOT EXISTS {schema}.rejects (
            batch_id    bigint      NOT NULL,
            seq         text        NOT NULL,
            raw         text        NOT NULL,
            reason      text        NOT NULL,
            sensor_id   text,
            event_time  timestamptz,
            received_at timestamptz NOT NULL,
            PRIMARY KEY (batch_id, seq))""",
        "CREATE INDEX IF NOT EXISTS rejects_by_reason ON {schema}.rejects (reason)",
        "CREATE INDEX IF NOT EXISTS rejects_by_time ON {schema}.rejects (received_at)",
        """CREATE TABLE IF NOT EXISTS {schema}.sensors (
            sensor_id text PRIMARY KEY,
            latitude  double precision,
            longitude double precision,
            zone      text,
            type      text)""",
        "CREATE INDEX IF NOT EXISTS sensors_by_zone ON {schema}.sensors (zone)",
    ]),
    # SQLite's datetime('now', '-1 day') and strftime('%Y-%m-%d %H:00', t), so the analysts' SQL
    # in docs/analysts.md runs unchanged on both stores (search_path must include the schema).
    (2, "sqlite-compatible datetime() and strftime()", [
        """CREATE OR REPLACE FUNCTION {schema}.datetime(t text, modifier text DEFAULT '0 seconds')
            RETURNS timestamptz LANGUAGE sql STABLE AS
            $$ SELECT (CASE WHEN lower(t) = 'now' THEN now() ELSE t::timestamptz END) + modifier::interval $$""",
        """CREATE OR REPLACE FUNCTION {schema}.strftime(fmt text, t timestamptz)
            RETURNS text LANGUAGE sql IMMUTABLE AS
            $$ SELECT to_char(t AT TIME ZONE 'UTC',
                 replace(replace(replace(replace(replace(replace(replace(fmt,
                   '%Y', 'YYYY'), '%m', 'MM'), '%d', 'DD'), '%H', 'HH24'), '%M', 'MI'), '%S', 'SS'), '%%', '%')) $$""",
    ]),
    # Issues 16/17: explained anomalies, every score, incidents with the operators' actions,
    # maintenance windows and one row per micro-batch.
    (3, "anomaly expected/explanation, scores, incidents, incident_actions, mutes, batches", [
        'ALTER TABLE {schema}.anomalies ADD COLUMN IF NOT EXISTS expected jsonb',
        'ALTER TABLE {schema}.anomalies ADD COLUMN IF NOT EXISTS explanation text',
        """CREATE TABLE IF NOT EXISTS {schema}.scores (
            sensor_id     text             NOT NULL,
            event_time    timestamptz      NOT NULL,
            score         double precision NOT NULL,
            threshold     double precision NOT NULL,
            severity      double precision NOT NULL,
            is_anomaly    boolean          NOT NULL,
            "values"      jsonb            NOT NULL,
            expected      jsonb,
            model_version text             NOT NULL,
            batch_id      bigint           NOT NULL,
            PRIMARY KEY (sensor_id, event_time, model_version))""",
        "CREATE INDEX IF NOT EXISTS scores_by_time ON {schema}.scores (event_time)",
        """CREATE TABLE IF NOT EXISTS {schema}.incidents (
            incident_id     text             PRIMARY KEY,
            kind            text             NOT NULL,
            status          text             NOT NULL,   -- new | acknowledged | closed (merged by rank)
            zone            text,
            sensors         jsonb            NOT NULL,   -- ranked by share
            first_sensor    text             NOT NULL,
            opened_at       timestamptz      NOT NULL,
            last_seen       timestamptz      NOT NULL,
            closed_at       timestamptz,
            peak_severity   double precision NOT NULL,
            readings        integer          NOT NULL,
            explanation     text,
            muted           boolean          NOT NULL,
            model_version   text             NOT NULL,
            detected_at     timestamptz      NOT NULL,
            updated_at      timestamptz      NOT NULL,
            batch_id        bigint           NOT NULL,
            acknowledged_by text,                        -- operator-owned from here on
            acknowledged_at timestamptz,
            closed_by       text,
            label           text,
            labelled_by     text,
            labelled_at     timestamptz,
            comment         text)""",
        "CREATE INDEX IF NOT EXISTS incidents_by_opened ON {schema}.incidents (opened_at)",
        "CREATE INDEX IF NOT EXISTS incidents_by_status ON {schema}.incidents (status)",
        """CREATE TABLE IF NOT EXISTS {schema}.incident_actions (
            action_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            incident_id text        NOT NULL,
            action      text        NOT NULL,   -- ack | close | label
            actor       text        NOT NULL,
            at          timestamptz NOT NULL,
            label       text,
            comment     text)""",
        "CREATE INDEX IF NOT EXISTS incident_actions_by_incident ON {schema}.incident_actions (incident_id)",
        """CREATE TABLE IF NOT EXISTS {schema}.mutes (
            mute_id    text        PRIMARY KEY,
            sensor_id  text,
            zone       text,
            starts_at  timestamptz NOT NULL,
            ends_at    timestamptz NOT NULL,
            reason     text        NOT NULL,
            created_by text        NOT NULL,
            created_at timestamptz NOT NULL,
            CHECK ((sensor_id IS NULL) <> (zone IS NULL)),
            CHECK (ends_at > starts_at))""",
        """CREATE TABLE IF NOT EXISTS {schema}.batches (
            batch_id         bigint           PRIMARY KEY,
            written_at       timestamptz      NOT NULL,
            events           bigint           NOT NULL,
            scored           bigint           NOT NULL,
            warmup           bigint           NOT NULL,
            rejects          bigint           NOT NULL,
            anomalies        bigint           NOT NULL,
            incidents_open   bigint           NOT NULL,
            incidents_opened bigint           NOT NULL,
            incidents_closed bigint           NOT NULL,
            max_event_time   timestamptz,
            model_version    text             NOT NULL,
            duration_s       double precision NOT NULL)""",
    ]),
]
LATEST = MIGRATIONS[-1][0]

A_COLUMNS = ANOMALY_COLUMNS
_A_COLS = ", ".join(f'"{c}"' for c in A_COLUMNS)
# The staging tables live as long as the connection and empty themselves at each commit.
A_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS sentinel_anomalies_in "
           "(LIKE {schema}.anomalies INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
A_COPY = f"COPY sentinel_anomalies_in ({_A_COLS}) FROM STDIN WITH (FORMAT csv)"
A_MOVE = (f"INSERT INTO {{schema}}.anomalies ({_A_COLS}) SELECT {_A_COLS} FROM sentinel_anomalies_in "
          "ON CONFLICT DO NOTHING")
_S_COLS = ", ".join(f'"{c}"' for c in SCORE_COLUMNS)
S_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS sentinel_scores_in "
           "(LIKE {schema}.scores INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
S_COPY = f"COPY sentinel_scores_in ({_S_COLS}) FROM STDIN WITH (FORMAT csv)"
S_MOVE = (f"INSERT INTO {{schema}}.scores ({_S_COLS}) SELECT {_S_COLS} FROM sentinel_scores_in "
          "ON CONFLICT DO NOTHING")
S_PRUNE = "DELETE FROM {schema}.scores WHERE event_time < (SELECT max(event_time) FROM {schema}.scores) - %s::interval"
R_INSERT = ("INSERT INTO {schema}.rejects (batch_id, seq, raw, reason, sensor_id, event_time, received_at) "
            "VALUES %s ON CONFLICT DO NOTHING")
I_UPSERT = incident_upsert("{schema}.incidents", "VALUES %s")
I_TEMPLATE = "(" + ", ".join("%s::jsonb" if c == "sensors" else "%s" for c in INCIDENT_STREAM_COLUMNS) + ")"
B_UPSERT = (f"INSERT INTO {{schema}}.batches ({', '.join(BATCH_COLUMNS)}) VALUES ({', '.join(['%s'] * len(BATCH_COLUMNS))}) "
            "ON CONFLICT (batch_id) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in BATCH_COLUMNS[1:]))
S_UPSERT = ("INSERT INTO {schema}.sensors (sensor_id, latitude, longitude, zone, type) VALUES %s "
            "ON CONFLICT (sensor_id) DO UPDATE SET latitude = EXCLUDED.latitude, "
            "longitude = EXCLUDED.longitude, zone = EXCLUDED.zone, type = EXCLUDED.type")
PAGE_SIZE = 1000


def lock_key(schema: str) -> int:
    """Signed 64-bit advisory lock id for this schema's migrations."""
    digest = hashlib.blake2b(f"sentinel.migrations:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def check_dsn(dsn: str) -> None:
    """Refuse a DSN that carries a password (libpq reads PGPASSWORD or ~/.pgpass instead)."""
    if not dsn:
        return
    from psycopg2.extensions import parse_dsn
    try:
        parts = parse_dsn(dsn)
    except Exception as exc:  # psycopg2.ProgrammingError
        raise ConfigError(f"setting 'sinks.postgres.dsn' is not a valid libpq DSN or URL ({exc}): fix it") from None
    if parts.get("password"):
        raise ConfigError("setting 'sinks.postgres.dsn' contains a password: remove it and set "
                          "PGPASSWORD (or ~/.pgpass) instead")


def _text(v) -> str | None:
    """PostgreSQL text cannot hold NUL or lone surrogates; raw reject lines may (binary garbage)."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    s = str(v)
    if "\x00" in s:
        s = s.replace("\x00", "\ufffd")
    return s.encode("utf-8", "replace").decode("utf-8")


def _times(series: pd.Series) -> list:
    s = pd.to_datetime(series, utc=True)
    return [None if pd.isna(t) else t.to_pydatetime() for t in s]


def _utc_text(col) -> list:
    """The SQLite sink's UTC text, marked as UTC for timestamptz."""
    return [None if t is None else t + "+00" for t in time_text(col)]


def _csv(columns: list[list]) -> str:
    import csv
    import io
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(zip(*columns))
    return out.getvalue()


def anomaly_csv(anomalies: pd.DataFrame) -> str:
    """Anomaly records -> CSV for COPY (columns A_COLUMNS): UTC times to the microsecond, floats
    as ``repr`` (exact; PostgreSQL reads ``nan``/``inf``), ``values``/``expected`` as JSON text,
    a missing ``expected``/``explanation`` as NULL (an unquoted empty field)."""
    a = conform(anomalies, ANOMALY_COLUMNS)
    return _csv([[_text(v) for v in a["sensor_id"]], _utc_text(a["event_time"]),
                 a["score"].astype(float).tolist(), a["threshold"].astype(float).tolist(),
                 a["severity"].astype(float).tolist(), a["values"].astype(str).tolist(),
                 [json_or_none(v) for v in a["expected"]], [_text(v) for v in a["explanation"]],
                 a["model_version"].astype(str).tolist(), a["batch_id"].astype(int).tolist(),
                 _utc_text(a["detected_at"])])


def score_csv(scores: pd.DataFrame) -> str:
    """Score records -> CSV for COPY (columns SCORE_COLUMNS), formatted as :func:`anomaly_csv`."""
    s = conform(scores, SCORE_COLUMNS)
    return _csv([[_text(v) for v in s["sensor_id"]], _utc_text(s["event_time"]),
                 s["score"].astype(float).tolist(), s["threshold"].astype(float).tolist(),
                 s["severity"].astype(float).tolist(), ["t" if v else "f" for v in s["is_anomaly"].astype(bool)],
                 s["values"].astype(str).tolist(), [json_or_none(v) for v in s["expected"]],
                 s["model_version"].astype(str).tolist(), s["batch_id"].astype(int).tolist()])


def incident_values(incidents: pd.DataFrame) -> list[tuple]:
    """The batch's incident rows for ``execute_values`` (INCIDENT_STREAM_COLUMNS order)."""
    i = incident_rows(incidents)
    if not len(i):
        return []
    return list(zip(i["incident_id"].astype(str), i["kind"].astype(str), i["status"].astype(str),
                    [_text(v) for v in i["zone"]], [json_or_none(v) for v in i["sensors"]],
                    [_text(v) for v in i["first_sensor"]], _times(i["opened_at"]), _times(i["last_seen"]),
                    _times(i["closed_at"]), i["peak_severity"].astype(float).tolist(),
                    i["readings"].astype(int).tolist(), [_text(text_or_none(v)) for v in i["explanation"]],
                    i["muted"].fillna(False).astype(bool).tolist(), i["model_version"].astype(str),
                    _times(i["detected_at"]), _times(i["updated_at"]), i["batch_id"].astype(int).tolist()))


def batch_values(batch: dict) -> tuple:
    b = {c: batch.get(c) for c in BATCH_COLUMNS}
    for c in ("written_at", "max_event_time"):
        b[c] = None if b[c] is None or pd.isna(b[c]) else pd.Timestamp(b[c]).to_pydatetime()
    return tuple(b[c] for c in BATCH_COLUMNS)


def reject_rows(rejects: pd.DataFrame) -> list[tuple]:
    if rejects is None or not len(rejects):
        return []
    r = rejects
    return list(zip(r["batch_id"].astype(int).tolist(), r["seq"].astype(str).tolist(),
                    [_text(v) or "" for v in r["raw"]], [_text(v) or "unknown" for v in r["reason"]],
                    [_text(v) for v in r["sensor_id"]], _times(r["event_time"]), _times(r["received_at"])))


class PostgresSink:
    name = "postgres"

    def __init__(self, settings: PostgresSettings | None = None, connect_timeout: int = 5,
                 write_scores: bool = True, scores_retention_days: int = 0, retention_every: int | None = None):
        self.settings = settings or PostgresSettings()
        self.wants_scores = bool(write_scores)
        self.retention = Retention(scores_retention_days, *([retention_every] if retention_every else []))
        check_dsn(self.settings.dsn)
        self.schema = self.settings.schema
        self.retries = max(0, int(self.settings.retries))
        self.backoff = float(self.settings.retry_backoff_s)
        self.connect_timeout = connect_timeout
        self._conn = None

    @classmethod
    def from_settings(cls, settings) -> "PostgresSink":
        return cls(settings.sinks.postgres, write_scores=settings.sinks.write_scores,
                   scores_retention_days=settings.sinks.scores_retention_days)

    # ------------------------------------------------------------ connection + retries
    def connect(self):
        """A new connection (DSN or libpq env). ``connect_timeout`` applies unless the DSN or
        PGCONNECT_TIMEOUT sets one."""
        import os

        import psycopg2
        from psycopg2.extensions import parse_dsn
        kwargs = {"application_name": "pressure-sentinel"}
        if "connect_timeout" not in (parse_dsn(self.settings.dsn) if self.settings.dsn else {}) \
                and not os.environ.get("PGCONNECT_TIMEOUT"):
            kwargs["connect_timeout"] = self.connect_timeout
        return psycopg2.connect(self.settings.dsn or "", **kwargs)

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already broken: nothing to release
                pass
        self._conn = None

    def _retrying(self, what: str, fn: Callable[[object], T]) -> T:
        import psycopg2
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self.connect()
                return fn(self._conn)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                last = exc
                self._drop()
                if attempt < self.retries:
                    delay = self.backoff * (2 ** attempt)
                    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    log.warning("postgres sink: %s failed (attempt %d of %d: %s); retrying in %.2f s",
                                what, attempt + 1, self.retries + 1, first_line, delay)
                    _sleep(delay)
        reason = " ".join(str(last).split()) or type(last).__name__
        raise StoreError(f"postgres sink: {what} failed after {self.retries + 1} attempt(s) "
                         f"(schema {self.schema!r}); last error: {type(last).__name__}: {reason}; check that the "
                         "server is up and reachable (PGHOST/PGPORT or sinks.postgres.dsn) and restart the job, "
                         "which resumes from its checkpoint") from last

    def _sql(self, template: str):
        from psycopg2 import sql
        return sql.SQL(template).format(schema=sql.Identifier(self.schema))

    # ------------------------------------------------------------ schema
    def setup(self) -> list[int]:
        """Apply pending migrations; returns the versions applied by this call."""
        from psycopg2 import sql

        def migrate(conn) -> list[int]:
            applied = []
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(self.schema),))
                cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
                cur.execute(self._sql("CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
                                      "version integer PRIMARY KEY, name text NOT NULL, "
                                      "applied_at timestamptz NOT NULL DEFAULT now())"))
                cur.execute(self._sql("SELECT version FROM {schema}.schema_migrations"))
                done = {row[0] for row in cur.fetchall()}
                for version, name, statements in MIGRATIONS:
                    if version in done:
                        continue
                    for stmt in statements:
                        cur.execute(self._sql(stmt))
                    cur.execute(self._sql("INSERT INTO {schema}.schema_migrations (version, name) VALUES (%s, %s)"),
                                (version, name))
                    applied.append(version)
                if done and max(done) > LATEST:
                    log.warning("postgres schema %r is at version %d, newer than this code (%d)",
                                self.schema, max(done), LATEST)
            return applied

        applied = self._retrying("setup (schema migrations)", migrate)
        if applied:
            log.info("postgres schema %r migrated: applied %s", self.schema, applied)
        return applied

    # ------------------------------------------------------------ writes
    def write(self, records: BatchRecords) -> None:
        import io

        from psycopg2.extras import execute_values
        n_anomalies, n_scores = len(records.anomalies), 0
        a_csv = anomaly_csv(records.anomalies) if n_anomalies else ""
        s_csv = ""
        if self.wants_scores and records.scores is not None and len(records.scores):
            n_scores, s_csv = len(records.scores), score_csv(records.scores)
        r_rows = reject_rows(records.rejects)
        i_rows = incident_values(records.incidents)
        b_row = batch_values(records.batch)
        prune = self.wants_scores and self.retention.due(records.batch_id)
        q = {name: self._sql(t) for name, t in (("a_stage", A_STAGE), ("a_move", A_MOVE), ("s_stage", S_STAGE),
                                                 ("s_move", S_MOVE), ("s_prune", S_PRUNE), ("r", R_INSERT),
                                                 ("i", I_UPSERT), ("b", B_UPSERT))}

        def tx(conn) -> None:
            with conn, conn.cursor() as cur:  # one transaction: the whole batch or nothing
                if n_anomalies:
                    cur.execute(q["a_stage"])
                    cur.copy_expert(A_COPY, io.StringIO(a_csv))
                    cur.execute(q["a_move"])
                if n_scores:
                    cur.execute(q["s_stage"])
                    cur.copy_expert(S_COPY, io.StringIO(s_csv))
                    cur.execute(q["s_move"])
                if r_rows:
                    execute_values(cur, q["r"], r_rows, page_size=PAGE_SIZE)
                if i_rows:
                    execute_values(cur, q["i"], i_rows, template=I_TEMPLATE, page_size=PAGE_SIZE)
                cur.execute(q["b"], b_row)
                if prune:
                    cur.execute(q["s_prune"], (f"{self.retention.days} days",))

        self._retrying(f"write of batch {records.batch_id} ({n_anomalies} anomalies, {n_scores} scores, "
                       f"{len(i_rows)} incidents, {len(r_rows)} rejects)", tx)

    def load_sensors(self, sensors: pd.DataFrame) -> int:
        """Upsert the sensor registry (sensor_id, latitude, longitude, zone, type)."""
        from psycopg2.extras import execute_values
        rows = registry.rows(sensors)
        if not rows:
            return 0
        stmt = self._sql(S_UPSERT)

        def tx(conn) -> None:
            with conn, conn.cursor() as cur:
                execute_values(cur, stmt, rows, page_size=PAGE_SIZE)

        self._retrying(f"load of {len(rows)} sensors", tx)
        return len(rows)

    def close(self) -> None:
        self._drop()
