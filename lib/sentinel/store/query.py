"""Reading the anomaly store, whichever it is (SQLite, PostgreSQL, S3).

Stores are named by URL:

    sqlite:///relative/path.db   sqlite:////absolute/path.db   (or a plain file path)
    postgresql://USER@HOST:PORT/DB[?schema=NAME]   (password from PGPASSWORD / ~/.pgpass;
                                                    schema default: sinks.postgres.schema)
    s3://BUCKET/PREFIX   (endpoint: sinks.s3.endpoint_url, else SENTINEL_S3_ENDPOINT, else AWS)

Every store returns the same rows for the same filters: columns ``QUERY_COLUMNS``, ordered by
event_time, sensor_id, model_version (code-point order for ids, as SQLite and ``COLLATE "C"``
sort), times as UTC, ``values`` as canonical JSON (sorted keys). The zone filter joins the
sensor registry (the ``sensors`` table; on S3 ``{prefix}/sensors/sensors.parquet``).
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlparse

import pandas as pd

from sentinel.config import ConfigError, Settings

log = logging.getLogger("sentinel.store")

QUERY_COLUMNS = ["event_time", "sensor_id", "zone", "severity", "score", "threshold", "model_version",
                 "values", "expected", "explanation", "batch_id", "detected_at"]
# Anomaly columns later versions added: read as NULL from a store written before them.
ADDED_COLUMNS = ("expected", "explanation")
NATURAL_KEY = ["sensor_id", "event_time", "model_version"]
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


# ---------------------------------------------------------------- store URLs
@dataclass(frozen=True)
class Store:
    kind: str            # sqlite | postgres | s3
    target: str          # sqlite: file path; postgres: libpq DSN/URL ('' = PG* env); s3: bucket
    namespace: str = ""  # postgres: schema; s3: prefix

    def describe(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.target}"
        if self.kind == "postgres":
            return f"{self.target or 'postgresql:// (PG* environment)'} schema {self.namespace}"
        return f"s3://{self.target}/{self.namespace}"


def parse_store(url: str, settings: Settings | None = None) -> Store:
    """A store URL (see the module doc) -> :class:`Store`. Raises ConfigError with the fix."""
    settings = settings or Settings()
    text = (url or "").strip()
    if not text:
        raise ConfigError("--store is empty: pass sqlite:///PATH, postgresql://USER@HOST:PORT/DB or s3://BUCKET/PREFIX")
    known = ("sqlite:", "postgresql:", "postgres:", "s3:", "s3a:")
    scheme = text.split(":", 1)[0].lower() if "://" in text or text.lower().startswith(known) else ""
    if scheme == "sqlite":
        path = re.sub(r"^sqlite:(//)?/?", "", text, flags=re.I)
        if not path:
            raise ConfigError(f"store {url!r} names no file: write sqlite:///relative.db or sqlite:////abs/path.db")
        if not Path(path).exists() and Path("/" + path).exists():
            path = "/" + path  # sqlite:///tmp/x.db meant /tmp/x.db
        return Store("sqlite", path)
    if scheme in ("postgresql", "postgres"):
        from sentinel.store.sinks.postgres import check_dsn
        u = urlparse(text)
        query = parse_qsl(u.query, keep_blank_values=True)
        schema = next((v for k, v in query if k == "schema"), None) or settings.sinks.postgres.schema
        rest = [(k, v) for k, v in query if k != "schema"]
        dsn = f"postgresql://{u.netloc}{u.path}" + (f"?{urlencode(rest)}" if rest else "")
        if u.password:
            raise ConfigError("the --store URL contains a password: remove it and set PGPASSWORD (or ~/.pgpass)")
        try:
            check_dsn(dsn)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("setting 'sinks.postgres.dsn'", "--store")) from None
        return Store("postgres", dsn, schema)
    if scheme in ("s3", "s3a"):
        from sentinel.store.storage import parse_s3_url
        bucket, prefix = parse_s3_url(text)
        return Store("s3", bucket, prefix)
    if scheme:
        raise ConfigError(f"unknown store {url!r}: use sqlite:///PATH, postgresql://USER@HOST:PORT/DB or s3://BUCKET/PREFIX")
    return Store("sqlite", text)  # a plain path


def default_store(settings: Settings) -> Store:
    """The first store in ``sinks.enabled`` (what the deploy job writes)."""
    sinks = settings.sinks
    first = sinks.enabled[0] if sinks.enabled else "sqlite"
    if first == "postgres":
        return Store("postgres", sinks.postgres.dsn, sinks.postgres.schema)
    if first == "s3":
        return Store("s3", sinks.s3.bucket, sinks.s3.prefix.strip("/"))
    return Store("sqlite", sinks.sqlite.path)


# ---------------------------------------------------------------- filters
@dataclass(frozen=True)
class Filters:
    sensors: tuple[str, ...] = ()
    since: pd.Timestamp | None = None      # inclusive
    until: pd.Timestamp | None = None      # exclusive
    min_severity: float | None = None
    zone: str | None = None
    limit: int | None = None


_RELATIVE = re.compile(r"^-?\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hour|hours|d|day|days|w|week|weeks)$", re.I)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "hours": 3600,
           "d": 86400, "day": 86400, "days": 86400, "w": 604800, "week": 604800, "weeks": 604800}


def parse_time(text: str | None, now: pd.Timestamp | None = None) -> pd.Timestamp | None:
    """``--since/--until`` value -> UTC timestamp. Accepts ISO-8601 (naive = UTC), ``now``, or a
    duration back from now: ``24h``, ``-30m``, ``7d``, ``2w``."""
    if text is None or str(text).strip() == "":
        return None
    t = str(text).strip()
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    if t.lower() == "now":
        return now
    m = _RELATIVE.match(t)
    if m:
        return now - pd.Timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2).lower()])
    try:
        ts = pd.Timestamp(t)
    except (ValueError, TypeError):
        ts = pd.NaT
    if pd.isna(ts):
        raise ConfigError(f"time {t!r} is neither ISO-8601 (2026-03-25T16:00:00Z) nor a duration like 24h or 7d")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")



# ---------------------------------------------------------------- SQL
SELECT_TEMPLATE = ('SELECT a.event_time, a.sensor_id, s.zone, a.severity, a.score, a.threshold, a.model_version, '
                   'a."values", {expected}, {explanation}, a.batch_id, a.detected_at FROM {{anomalies}} AS a '
                   'LEFT JOIN {{sensors}} AS s ON s.sensor_id = a.sensor_id')


def build_sql(filters: Filters, dialect: str, missing: frozenset[str] = frozenset()) -> tuple[str, list]:
    """The query as a template (``{anomalies}``, ``{sensors}`` stand for the tables) and its
    parameters. Every value is a bound parameter; nothing from the user is spliced in.
    ``missing``: ADDED_COLUMNS the store's anomalies table lacks (selected as NULL)."""
    if dialect not in ("sqlite", "postgres"):
        raise ValueError(f"unknown dialect {dialect!r}")
    ph = "?" if dialect == "sqlite" else "%s"
    where, params = [], []

    def t(ts: pd.Timestamp):
        return ts.strftime(_SQLITE_TIME) if dialect == "sqlite" else ts.to_pydatetime()

    if filters.sensors:
        where.append(f"a.sensor_id IN ({', '.join([ph] * len(filters.sensors))})")
        params += [str(s) for s in filters.sensors]
    if filters.since is not None:
        where.append(f"a.event_time >= {ph}")
        params.append(t(filters.since))
    if filters.until is not None:
        where.append(f"a.event_time < {ph}")
        params.append(t(filters.until))
    if filters.min_severity is not None:
        where.append(f"a.severity >= {ph}")
        params.append(float(filters.min_severity))
    if filters.zone is not None:
        where.append(f"s.zone = {ph}")
        params.append(str(filters.zone))
    text = SELECT_TEMPLATE.format(**{c: f"NULL AS {c}" if c in missing else f'a."{c}"' for c in ADDED_COLUMNS})
    if where:
        text += " WHERE " + " AND ".join(where)
    collate = ' COLLATE "C"' if dialect == "postgres" else ""
    text += f" ORDER BY a.event_time, a.sensor_id{collate}, a.model_version{collate}"
    if filters.limit:
        text += f" LIMIT {ph}"
        params.append(int(filters.limit))
    return text, params


# ---------------------------------------------------------------- query
def query(store: Store, filters: Filters, settings: Settings | None = None) -> pd.DataFrame:
    """Anomalies matching ``filters`` from ``store``: QUERY_COLUMNS, normalised (see module doc).
    The same as ``open_store(store, settings).anomalies(filters)``."""
    from sentinel.store.client import open_store
    client = open_store(store, settings or Settings())
    try:
        return client.anomalies(filters)
    finally:
        client.release()


def filter_anomalies(frame: pd.DataFrame, filters: Filters, zones: dict) -> pd.DataFrame:
    """Filters applied in pandas to anomaly rows read from S3: de-duplicated on the natural key
    (the first write kept, like ON CONFLICT DO NOTHING), zone joined, sorted, limited."""
    if frame.empty:
        return pd.DataFrame(columns=QUERY_COLUMNS)
    frame = frame.copy()
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame = frame.sort_values("batch_id", kind="stable").drop_duplicates(NATURAL_KEY, keep="first")
    frame["zone"] = [zones.get(s) for s in frame["sensor_id"]]
    keep = pd.Series(True, index=frame.index)
    if filters.sensors:
        keep &= frame["sensor_id"].isin([str(s) for s in filters.sensors])
    if filters.since is not None:
        keep &= frame["event_time"] >= filters.since
    if filters.until is not None:
        keep &= frame["event_time"] < filters.until
    if filters.min_severity is not None:
        keep &= frame["severity"] >= float(filters.min_severity)
    if filters.zone is not None:
        keep &= frame["zone"].map(lambda z: z == filters.zone)
    frame = sort_rows(frame[keep.to_numpy()])
    if filters.limit:
        frame = frame.head(int(filters.limit))
    return frame.reindex(columns=QUERY_COLUMNS)


def sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """event_time, then sensor_id and model_version in code-point order (= SQLite BINARY and
    PostgreSQL COLLATE "C" on UTF-8)."""
    keys = list(zip(pd.to_datetime(frame["event_time"], utc=True).astype("int64").tolist(),
                    frame["sensor_id"].astype(str).tolist(), frame["model_version"].astype(str).tolist()))
    return frame.iloc[sorted(range(len(keys)), key=keys.__getitem__)]


def _canonical_json(v) -> str:
    obj = json.loads(v) if isinstance(v, (str, bytes)) else v
    return json.dumps(obj, sort_keys=True)


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """One shape for every store: UTC timestamps (µs), floats, int batch ids, canonical JSON."""
    out = pd.DataFrame({c: frame[c].to_numpy() if c in frame else None for c in QUERY_COLUMNS},
                       index=range(len(frame)))
    for c in ("event_time", "detected_at"):
        out[c] = pd.to_datetime(out[c], utc=True, format="mixed").dt.floor("us")
    for c in ("severity", "score", "threshold"):
        out[c] = out[c].astype(float)
    out["batch_id"] = out["batch_id"].astype("int64")
    out["sensor_id"] = out["sensor_id"].astype(str)
    out["model_version"] = out["model_version"].astype(str)
    out["zone"] = [None if z is None or (isinstance(z, float) and math.isnan(z)) else str(z) for z in out["zone"]]
    out["values"] = [_canonical_json(v) for v in out["values"]]
    out["expected"] = [None if _missing(v) else _canonical_json(v) for v in out["expected"]]
    out["explanation"] = [None if _missing(v) else str(v) for v in out["explanation"]]
    return out.reset_index(drop=True)


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))



def _iso(ts) -> str:
    return "" if ts is None or pd.isna(ts) else ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _printable(s: str) -> str:
    """Control characters shown escaped (a newline in an id must not break a table row)."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in s)


