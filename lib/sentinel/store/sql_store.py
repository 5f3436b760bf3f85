"""The store API on SQLite and PostgreSQL: one implementation, the SQL shared.

Statements are written once with ``?`` placeholders and ``{table}`` names; :meth:`SqlStore._q`
qualifies the tables (PostgreSQL: ``"schema".table``) and turns the placeholders into
psycopg2's ``%s``. The few places the dialects differ (reading a JSON field, the hour of a
timestamp, a row lock) are small methods of the two subclasses. Every value is a bound
parameter.

SQLite opens the file per call (read-only for reads; ``BEGIN IMMEDIATE`` for writes, which
takes the write lock before reading the incident, so the check and the change see the same
row). PostgreSQL keeps a small pool of connections; writes lock the incident row with
``SELECT ... FOR UPDATE``.
"""
from __future__ import annotations

import contextlib
import re
import sqlite3
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from sentinel.config import ConfigError
from sentinel.store.client import (INCIDENT_LIST_CAP, OPERATOR_WRITABLE, SERIES_CAP, IncidentFilters, StoreClient,
                                   action_records, batch_dict, check_range, incident_dict, incident_frame,
                                   mute_frame, score_frame, sort_incidents, states_frame, stats_frame, stats_range,
                                   utc)
from sentinel.store.errors import NotFound, StoreError
from sentinel.store.query import ADDED_COLUMNS, QUERY_COLUMNS, Filters, build_sql, normalise
from sentinel.store.registry import REGISTRY_COLUMNS
from sentinel.store.sinks.base import (BATCH_COLUMNS, INCIDENT_ACTION_COLUMNS, INCIDENT_COLUMNS, MUTE_COLUMNS,
                                       SCORE_COLUMNS, one_time_text)

TABLES = ("anomalies", "scores", "rejects", "sensors", "incidents", "incident_actions", "mutes", "batches")
_cols = lambda cols, a="": ", ".join(f'{a}"{c}"' for c in cols)  # noqa: E731

INCIDENT_SELECT = f"SELECT {_cols(INCIDENT_COLUMNS, 'i.')} FROM {{incidents}} i"
ACTIONS_SELECT = (f"SELECT {_cols(INCIDENT_ACTION_COLUMNS)} FROM {{incident_actions}} WHERE incident_id = ? "
                  "ORDER BY at, action_id")
LAST_READING = ('SELECT r.sensor_id, r.event_time, r."values", r.score, r.threshold, r.severity, r.model_version, '
                'r.batch_id FROM {src} r JOIN (SELECT sensor_id, MAX(event_time) AS t FROM {src} GROUP BY sensor_id) m '
                'ON m.sensor_id = r.sensor_id AND m.t = r.event_time')


class SqlStore(StoreClient):
    """Shared by :class:`SqliteStore` and :class:`PostgresStore`."""

    ph = "?"

    # ------------------------------------------------------------ dialect hooks
    def _table(self, name: str) -> str:
        return name

    def _p_time(self, t):
        """A UTC time as a bound parameter."""
        raise NotImplementedError

    def _json_number(self, column: str) -> str:
        """SQL reading one numeric field (the bound parameter from :meth:`_json_path`) of a JSON column."""
        raise NotImplementedError

    def _json_path(self, feature: str) -> str:
        raise NotImplementedError

    def _hour(self, column: str) -> str:
        raise NotImplementedError

    def _has_sensor(self, n: int) -> str:
        """SQL: the incident ``i`` involves one of ``n`` bound sensor ids."""
        raise NotImplementedError

    def _for_update(self) -> str:
        return ""

    @contextlib.contextmanager
    def _cursor(self, write: bool = False):
        raise NotImplementedError
        yield

    def _columns(self, table: str) -> set[str]:
        raise NotImplementedError

    # ------------------------------------------------------------ helpers
    def _q(self, text: str) -> str:
        text = text.format(**{t: self._table(t) for t in TABLES}, src="{src}")
        if self.ph != "?":
            text = text.replace("%", "%%").replace("?", self.ph)
        return text

    def _rows(self, text: str, params=(), src: str | None = None) -> tuple[list[str], list[tuple]]:
        q = self._q(text)
        if src is not None:
            q = q.replace("{src}", self._table(src))
        with self._cursor() as cur:
            cur.execute(q, list(params))
            return [d[0] for d in cur.description], cur.fetchall()

    def _frame(self, text: str, params=(), src: str | None = None) -> pd.DataFrame:
        cols, rows = self._rows(text, params, src)
        return pd.DataFrame(rows, columns=cols)

    def _scalar(self, text: str, params=()):
        _, rows = self._rows(text, params)
        return rows[0][0] if rows else None

    # ------------------------------------------------------------ reads
    def anomalies(self, filters: Filters | None = None) -> pd.DataFrame:
        filters = filters or Filters()
        missing = frozenset(c for c in ADDED_COLUMNS if c not in self._columns("anomalies"))
        text, params = build_sql(filters, "sqlite", missing)  # ? placeholders: _q adapts them
        c = self._collate()  # ids in code-point order on both engines
        text = text.replace("ORDER BY a.event_time, a.sensor_id, a.model_version",
                            f"ORDER BY a.event_time, a.sensor_id{c}, a.model_version{c}")
        frame = self._frame(text, params)
        frame.columns = QUERY_COLUMNS
        return normalise(frame)

    def _incident_sql(self, f: IncidentFilters) -> tuple[str, list]:
        where, params = [], []
        if f.status:
            where.append(f"i.status IN ({', '.join('?' * len(f.status))})")
            params += list(f.status)
        if f.kind:
            where.append(f"i.kind IN ({', '.join('?' * len(f.kind))})")
            params += list(f.kind)
        if f.zone is not None:
            where.append("i.zone = ?")
            params.append(str(f.zone))
        if f.muted is not None:
            where.append("i.muted = ?")
            params.append(bool(f.muted))
        if f.min_severity is not None:
            where.append("i.peak_severity >= ?")
            params.append(float(f.min_severity))
        if f.since is not None:
            where.append("i.last_seen >= ?")
            params.append(self._p_time(f.since))
        if f.until is not None:
            where.append("i.opened_at < ?")
            params.append(self._p_time(f.until))
        if f.sensors:
            where.append(self._has_sensor(len(f.sensors)))
            params += [str(s) for s in f.sensors]
        text = INCIDENT_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        return text + f" ORDER BY i.opened_at DESC, i.incident_id{self._collate()}", params

    def _collate(self) -> str:
        return ""

    def incidents(self, filters: IncidentFilters | None = None) -> pd.DataFrame:
        f = filters or IncidentFilters()
        text, params = self._incident_sql(f)
        return incident_frame(self._frame(text + " LIMIT ? OFFSET ?", params + [f.limit, f.offset]))

    def all_incidents(self, filters: IncidentFilters | None = None) -> pd.DataFrame:
        """Every incident matching ``filters`` (limit and offset ignored): for reports and stats."""
        text, params = self._incident_sql(filters or IncidentFilters())
        return incident_frame(self._frame(text, params))

    def incident(self, incident_id: str) -> dict | None:
        frame = incident_frame(self._frame(INCIDENT_SELECT + " WHERE i.incident_id = ?", [str(incident_id)]))
        if frame.empty:
            return None
        actions = action_records(self._frame(ACTIONS_SELECT, [str(incident_id)]))
        return incident_dict(frame.iloc[0].to_dict(), actions)

    def sensors(self) -> pd.DataFrame:
        frame = self._frame(f"SELECT {_cols(REGISTRY_COLUMNS)} FROM {{sensors}} ORDER BY sensor_id{self._collate()}")
        for c in ("latitude", "longitude"):
            frame[c] = frame[c].astype(float)
        return frame

    def _last_readings(self) -> pd.DataFrame:
        src = "scores" if self._scalar("SELECT 1 FROM {scores} LIMIT 1") is not None else "anomalies"
        return self._frame(LAST_READING, src=src)

    def _open_incidents(self) -> pd.DataFrame:
        return incident_frame(self._frame(INCIDENT_SELECT + " WHERE i.status <> ?", ["closed"]))

    def sensor_states(self, now=None) -> pd.DataFrame:
        return states_frame(self._last_readings(), self.sensors(), self._open_incidents(), self.mutes(), now,
                            self.silent_after)

    def _known_sensor(self, sensor_id: str) -> bool:
        for table in ("sensors", "scores", "anomalies"):
            if self._scalar(f"SELECT 1 FROM {{{table}}} WHERE sensor_id = ? LIMIT 1", [sensor_id]) is not None:
                return True
        return False

    def _known_zone(self, zone: str) -> bool:
        return any(self._scalar(f"SELECT 1 FROM {{{t}}} WHERE zone = ? LIMIT 1", [zone]) is not None
                   for t in ("sensors", "incidents"))

    def series(self, sensor_id: str, since=None, until=None, limit: int = 10_000) -> pd.DataFrame:
        since, until = utc(since, "since"), utc(until, "until")
        check_range(since, until)
        if not isinstance(limit, int) or not 1 <= limit <= SERIES_CAP:
            raise ConfigError(f"series limit {limit!r} is outside 1..{SERIES_CAP}: ask for fewer rows")
        where, params = ["sensor_id = ?"], [str(sensor_id)]
        if since is not None:
            where.append("event_time >= ?")
            params.append(self._p_time(since))
        if until is not None:
            where.append("event_time < ?")
            params.append(self._p_time(until))
        frame = self._frame(f"SELECT {_cols(SCORE_COLUMNS)} FROM {{scores}} WHERE {' AND '.join(where)} "
                            f"ORDER BY event_time DESC, model_version{self._collate()} DESC LIMIT ?", params + [limit])
        if frame.empty and not self._known_sensor(str(sensor_id)):
            raise NotFound(f"no sensor {sensor_id!r} in {self.describe()}: list them with `sentinel incidents` "
                           "or the sensor registry")
        return score_frame(frame.iloc[::-1])

    def stats(self, since=None, until=None) -> pd.DataFrame:
        newest = self._scalar("SELECT MAX(event_time) FROM {scores}")
        since, until = stats_range(since, until, utc(newest) if newest is not None else None)
        value, hour = self._json_number('"values"'), self._hour("r.event_time")
        hourly = self._frame(
            f"SELECT r.sensor_id, {hour} AS hour, COUNT(r.v) AS n, SUM(r.v) AS total, SUM(r.v * r.v) AS squares "
            f"FROM (SELECT sensor_id, event_time, MAX({value}) AS v FROM {{scores}} "
            "WHERE event_time >= ? AND event_time < ? GROUP BY sensor_id, event_time) r "
            "WHERE r.v IS NOT NULL GROUP BY 1, 2",
            [self._json_path(self.feature), self._p_time(since - pd.Timedelta(days=30)), self._p_time(until)])
        anomalies = self._frame(
            f"SELECT r.sensor_id, {hour} AS hour, COUNT(DISTINCT r.event_time) AS anomalies FROM {{anomalies}} r "
            "WHERE r.event_time >= ? AND r.event_time < ? GROUP BY 1, 2", [self._p_time(since), self._p_time(until)])
        incidents = self.all_incidents(IncidentFilters(since=since, until=until))
        incidents = incidents[(incidents["opened_at"] >= since) & (incidents["opened_at"] < until)]
        return stats_frame(self._hour_frame(hourly), self._hour_frame(anomalies), incidents, since, until)

    def _hour_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame

    def mutes(self, active_at=None) -> pd.DataFrame:
        text, params = f"SELECT {_cols(MUTE_COLUMNS)} FROM {{mutes}}", []
        t = utc(active_at, "active_at")
        if t is not None:
            text += " WHERE starts_at <= ? AND ends_at > ?"
            params = [self._p_time(t), self._p_time(t)]
        return mute_frame(self._frame(text, params))

    def health(self) -> dict:
        out = {"reachable": False, "store": self.describe(), "kind": self.kind, "newest_batch": None,
               "counts": {}, "error": None}
        try:
            self._scalar("SELECT 1")
            out["reachable"] = True
            counts = self._rows("SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {{{t}}})" for t in TABLES)
                                + ", (SELECT COUNT(*) FROM {incidents} WHERE status <> ?)", ["closed"])[1][0]
            out["counts"] = {**dict(zip(TABLES, map(int, counts[:-1]))), "incidents_open": int(counts[-1])}
            frame = self._frame(f"SELECT {_cols(BATCH_COLUMNS)} FROM {{batches}} "
                                "ORDER BY written_at DESC, batch_id DESC LIMIT 1")
            out["newest_batch"] = batch_dict(frame.iloc[0].to_dict()) if len(frame) else None
        except StoreError as exc:
            out["error"] = str(exc)
        return out

    # ------------------------------------------------------------ operator writes
    def _act(self, incident_id, action, actor, label, comment) -> dict:
        rules = self._rules()
        iid = str(incident_id)
        with self._cursor(write=True) as cur:
            cur.execute(self._q(INCIDENT_SELECT + " WHERE i.incident_id = ?" + self._for_update()), [iid])
            row = cur.fetchone()
            if row is None:
                raise NotFound(f"no incident {iid!r} in {self.describe()}: list them with `sentinel incidents list`")
            record = incident_frame(pd.DataFrame([row], columns=INCIDENT_COLUMNS)).iloc[0].to_dict()
            plan = rules.plan_action(iid, record, action, actor, label=label, comment=comment)
            changes = dict(plan.changes)
            if set(changes) - OPERATOR_WRITABLE:
                raise StoreError(f"the incident rules asked to change {sorted(set(changes) - OPERATOR_WRITABLE)}, "
                                 "which operators do not own: fix sentinel.incidents.lifecycle")
            values = [self._p_time(v) if isinstance(v, pd.Timestamp) else v for v in changes.values()]
            cur.execute(self._q(f"UPDATE {{incidents}} SET {', '.join(f'{k} = ?' for k in changes)} "
                                "WHERE incident_id = ?"), values + [iid])
            a = plan.audit
            cur.execute(self._q("INSERT INTO {incident_actions} (incident_id, action, actor, at, label, comment) "
                                "VALUES (?, ?, ?, ?, ?, ?)"),
                        [iid, a["action"], a["actor"], self._p_time(a["at"]), a.get("label"), a.get("comment")])
        return self.incident(iid)

    def add_mute(self, sensor_id=None, zone=None, starts_at=None, ends_at=None, reason="", actor="") -> str:
        rules = self._rules()
        mute = rules.validate_mute(sensor_id, zone, starts_at, ends_at, reason, actor)  # shape first
        if mute.sensor_id is not None and not self._known_sensor(mute.sensor_id):
            raise NotFound(f"no sensor {mute.sensor_id!r} in {self.describe()}: mute a sensor from the registry "
                           "or one that has reported")
        if mute.zone is not None and not self._known_zone(mute.zone):
            raise NotFound(f"no zone {mute.zone!r} in {self.describe()}: mute a zone of the sensor registry")
        rec = mute.record()
        with self._cursor(write=True) as cur:
            cur.execute(self._q(f"INSERT INTO {{mutes}} ({_cols(MUTE_COLUMNS)}) VALUES "
                                f"({', '.join('?' * len(MUTE_COLUMNS))}) ON CONFLICT (mute_id) DO NOTHING"),
                        [self._p_time(rec[c]) if isinstance(rec[c], pd.Timestamp) else rec[c] for c in MUTE_COLUMNS])
        return mute.mute_id


# ---------------------------------------------------------------- SQLite
_NO_TABLE = re.compile(r"no such (table|column): (\S+)")


class SqliteStore(SqlStore):
    kind = "sqlite"

    def __init__(self, store, settings, rules=None):
        super().__init__(store, settings, rules)
        self.path = Path(store.target)
        if not self.path.is_file():
            raise ConfigError(f"SQLite store {self.path} does not exist: check --store (or run the deploy job first)")
        self._uri = f"file:{quote(str(self.path.resolve()))}"

    def _p_time(self, t):
        return one_time_text(t)

    def _json_number(self, column: str) -> str:
        return f"json_extract({column}, ?)"

    def _json_path(self, feature: str) -> str:
        if '"' in feature:
            raise ConfigError(f"feature name {feature!r} holds a double quote: rename it in data.features")
        return f'$."{feature}"'

    def _hour(self, column: str) -> str:
        return f"substr({column}, 1, 13)"  # 'YYYY-MM-DD HH' of the UTC text

    def _hour_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        if len(frame):
            frame = frame.assign(hour=pd.to_datetime(frame["hour"] + ":00:00", utc=True))
        return frame

    def _has_sensor(self, n: int) -> str:
        return (f"EXISTS (SELECT 1 FROM json_each(i.sensors) j WHERE json_extract(j.value, '$.sensor_id') "
                f"IN ({', '.join('?' * n)}))")

    def _columns(self, table: str) -> set[str]:
        _, rows = self._rows(f"SELECT name FROM pragma_table_info('{table}')")
        return {r[0] for r in rows}

    @contextlib.contextmanager
    def _cursor(self, write: bool = False):
        try:
            con = sqlite3.connect(f"{self._uri}?mode={'rw' if write else 'ro'}", uri=True, timeout=30,
                                  isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path} cannot be opened ({exc}): check the file and its permissions") from None
        try:
            if write:
                con.execute("BEGIN IMMEDIATE")  # the write lock before reading: check and change see one state
            cur = con.cursor()
            try:
                yield cur
            except BaseException:
                if write:
                    con.rollback()
                raise
            if write:
                con.commit()
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        finally:
            con.close()

    def _error(self, exc: sqlite3.Error) -> StoreError:
        m = _NO_TABLE.search(str(exc))
        if m:
            return StoreError(f"SQLite store {self.path} has no {m.group(1)} {m.group(2)}: it was written by an older "
                              "version (start the deploy job once to upgrade it) or is not a Pressure Sentinel store")
        if "locked" in str(exc) or "busy" in str(exc):
            return StoreError(f"SQLite store {self.path} stayed locked by another writer for 30 s: retry")
        return StoreError(f"SQLite store {self.path} cannot be used ({exc}): is it a Pressure Sentinel store?")


# ---------------------------------------------------------------- PostgreSQL
def quote_ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


class PostgresStore(SqlStore):
    kind = "postgres"
    ph = "%s"
    POOL_MAX = 8

    def __init__(self, store, settings, rules=None):
        super().__init__(store, settings, rules)
        self.schema = store.namespace
        self._pool = None

    def _table(self, name: str) -> str:
        return f"{quote_ident(self.schema)}.{name}"

    def _collate(self) -> str:
        return ' COLLATE "C"'

    def _p_time(self, t):
        t = utc(t)
        return None if t is None else t.to_pydatetime()

    def _json_number(self, column: str) -> str:
        return f"({column}->>?)::float8"

    def _json_path(self, feature: str) -> str:
        return str(feature)

    def _hour(self, column: str) -> str:
        return f"date_trunc('hour', {column} AT TIME ZONE 'UTC')"

    def _hour_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        if len(frame):
            frame = frame.assign(hour=pd.to_datetime(frame["hour"]).dt.tz_localize("UTC"))
        return frame

    def _has_sensor(self, n: int) -> str:
        return (f"EXISTS (SELECT 1 FROM jsonb_array_elements(i.sensors) j WHERE j->>'sensor_id' "
                f"IN ({', '.join('?' * n)}))")

    def _for_update(self) -> str:
        return " FOR UPDATE"

    def _columns(self, table: str) -> set[str]:
        _, rows = self._rows("SELECT column_name FROM information_schema.columns WHERE table_schema = ? "
                             "AND table_name = ?", [self.schema, table])
        return {r[0] for r in rows}

    def _get_pool(self):
        if self._pool is None:
            import psycopg2
            from psycopg2.pool import ThreadedConnectionPool
            try:
                self._pool = ThreadedConnectionPool(0, self.POOL_MAX, self.store.target or "", connect_timeout=10,
                                                    application_name="sentinel-store")
            except psycopg2.Error as exc:
                raise self._connect_error(exc) from None
        return self._pool

    def _connect_error(self, exc) -> StoreError:
        return StoreError(f"cannot connect to PostgreSQL ({' '.join(str(exc).split())}): check --store and the "
                          "PG* environment")

    @contextlib.contextmanager
    def _cursor(self, write: bool = False):
        import psycopg2
        from psycopg2 import errors
        from psycopg2.pool import PoolError
        pool = self._get_pool()
        try:
            conn = pool.getconn()
        except PoolError:
            raise StoreError(f"all {self.POOL_MAX} PostgreSQL connections of this client are busy: retry") from None
        except psycopg2.Error as exc:
            raise self._connect_error(exc) from None
        broken = False
        try:
            with conn, conn.cursor() as cur:  # one transaction, rolled back on any error
                yield cur
        except (errors.UndefinedTable, errors.UndefinedColumn) as exc:
            what = (str(exc).strip().splitlines() or ["a table"])[0]
            raise StoreError(f"PostgreSQL schema {self.schema!r} cannot answer ({what}): check ?schema= (default "
                             "sinks.postgres.schema) or start the deploy job once to create or upgrade it") from None
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            broken = True
            raise self._connect_error(exc) from None
        except psycopg2.Error as exc:
            raise StoreError(f"PostgreSQL schema {self.schema!r} refused the statement "
                             f"({' '.join(str(exc).split())}): report it with the command you ran") from None
        finally:
            pool.putconn(conn, close=broken or bool(conn.closed))

    def release(self) -> None:
        if self._pool is not None:
            self._pool.closeall()
            self._pool = None


__all__ = ["SqlStore", "SqliteStore", "PostgresStore", "INCIDENT_LIST_CAP", "sort_incidents"]
