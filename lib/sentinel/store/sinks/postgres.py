"""PostgreSQL anomaly store (psycopg2).

Connection: ``sinks.postgres.dsn`` (a libpq DSN or URL *without* password) or, when empty, the
standard libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD / ~/.pgpass).

Schema: versioned migrations in ``MIGRATIONS``, applied by ``setup()`` inside one transaction
that holds a transaction-scoped advisory lock, so any number of jobs may start at once; the
applied versions are recorded in ``<schema>.schema_migrations``. Tables and natural keys match
``sinks/sqlite.py``: anomalies PK (sensor_id, event_time, model_version), rejects PK
(batch_id, seq), sensors PK sensor_id; times are ``timestamptz``, ``values`` is ``jsonb``.

Writes: one transaction per micro-batch. Anomalies are streamed with ``COPY`` (CSV) into a
temporary table and moved with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` (about 10x
faster than row-by-row VALUES lists, which built every row in Python); rejects, rare and
needing text clean-up, use ``execute_values ... ON CONFLICT DO NOTHING``. Either way a
replayed batch is a no-op. Transient failures (OperationalError / InterfaceError: refused,
reset, server restart) are retried ``retries`` times with exponential back-off
``retry_backoff_s * 2**attempt`` on a fresh connection; then a RuntimeError naming the sink and
the last error fails the micro-batch, and Spark re-runs it from the checkpoint.
"""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Callable, TypeVar

import pandas as pd

from sentinel.store import registry
from sentinel.config import ConfigError, PostgresSettings
from sentinel.store.sinks.base import time_text

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
]
LATEST = MIGRATIONS[-1][0]

A_COLUMNS = ["sensor_id", "event_time", "score", "threshold", "severity", "values", "model_version",
             "batch_id", "detected_at"]
_A_COLS = ", ".join(f'"{c}"' for c in A_COLUMNS)
# The staging table lives as long as the connection and empties itself at each commit.
A_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS sentinel_anomalies_in "
           "(LIKE {schema}.anomalies INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
A_COPY = f"COPY sentinel_anomalies_in ({_A_COLS}) FROM STDIN WITH (FORMAT csv)"
A_MOVE = (f"INSERT INTO {{schema}}.anomalies ({_A_COLS}) SELECT {_A_COLS} FROM sentinel_anomalies_in "
          "ON CONFLICT DO NOTHING")
R_INSERT = ("INSERT INTO {schema}.rejects (batch_id, seq, raw, reason, sensor_id, event_time, received_at) "
            "VALUES %s ON CONFLICT DO NOTHING")
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


def anomaly_csv(anomalies: pd.DataFrame) -> str:
    """Anomaly records -> CSV for COPY: UTC times to the microsecond, floats as ``repr`` (exact;
    PostgreSQL reads ``nan``/``inf``), ``values`` as its JSON text."""
    import csv
    import io

    def utc_text(col):  # the SQLite sink's UTC text, marked as UTC for timestamptz
        return [None if t is None else t + "+00" for t in time_text(col)]

    a = anomalies
    columns = [[_text(v) for v in a["sensor_id"]], utc_text(a["event_time"]),
               a["score"].astype(float).tolist(), a["threshold"].astype(float).tolist(),
               a["severity"].astype(float).tolist(), a["values"].astype(str).tolist(),
               a["model_version"].astype(str).tolist(), a["batch_id"].astype(int).tolist(),
               utc_text(a["detected_at"])]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(zip(*columns))
    return out.getvalue()


def reject_rows(rejects: pd.DataFrame) -> list[tuple]:
    if rejects is None or not len(rejects):
        return []
    r = rejects
    return list(zip(r["batch_id"].astype(int).tolist(), r["seq"].astype(str).tolist(),
                    [_text(v) or "" for v in r["raw"]], [_text(v) or "unknown" for v in r["reason"]],
                    [_text(v) for v in r["sensor_id"]], _times(r["event_time"]), _times(r["received_at"])))


class PostgresSink:
    name = "postgres"

    def __init__(self, settings: PostgresSettings | None = None, connect_timeout: int = 5):
        self.settings = settings or PostgresSettings()
        check_dsn(self.settings.dsn)
        self.schema = self.settings.schema
        self.retries = max(0, int(self.settings.retries))
        self.backoff = float(self.settings.retry_backoff_s)
        self.connect_timeout = connect_timeout
        self._conn = None

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
        raise RuntimeError(f"postgres sink: {what} failed after {self.retries + 1} attempt(s) "
                           f"(schema {self.schema!r}); last error: {type(last).__name__}: {reason}") from last

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
    def write(self, anomalies: pd.DataFrame, rejects: pd.DataFrame, batch_id: int) -> None:
        import io

        from psycopg2.extras import execute_values
        n_anomalies = 0 if anomalies is None else len(anomalies)
        a_csv = anomaly_csv(anomalies) if n_anomalies else ""
        r_rows = reject_rows(rejects)
        if not n_anomalies and not r_rows:
            return
        stage, move, r_sql = self._sql(A_STAGE), self._sql(A_MOVE), self._sql(R_INSERT)

        def tx(conn) -> None:
            with conn, conn.cursor() as cur:  # one transaction: the whole batch or nothing
                if n_anomalies:
                    cur.execute(stage)
                    cur.copy_expert(A_COPY, io.StringIO(a_csv))
                    cur.execute(move)
                if r_rows:
                    execute_values(cur, r_sql, r_rows, page_size=PAGE_SIZE)

        self._retrying(f"write of batch {batch_id} ({n_anomalies} anomalies, {len(r_rows)} rejects)", tx)

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
