"""``sentinel query`` and ``sentinel report``: read the anomaly store, whichever it is.

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

import argparse
import hashlib
import json
import logging
import math
import re
import sqlite3
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlparse

import pandas as pd

from sentinel.config import ConfigError, Settings

log = logging.getLogger("sentinel.analysis")

QUERY_COLUMNS = ["event_time", "sensor_id", "zone", "severity", "score", "threshold", "model_version",
                 "values", "batch_id", "detected_at"]
NATURAL_KEY = ["sensor_id", "event_time", "model_version"]
FORMATS = ("table", "csv", "json")
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
        from sentinel.sinks.postgres import check_dsn
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
        from sentinel.storage import parse_s3_url
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


def filters_from_args(args) -> Filters:
    now = pd.Timestamp.now(tz="UTC")
    f = Filters(sensors=tuple(args.sensor or ()), since=parse_time(args.since, now), until=parse_time(args.until, now),
                min_severity=args.min_severity, zone=args.zone, limit=getattr(args, "limit", None))
    if f.limit is not None and f.limit < 0:
        raise ConfigError("--limit must be 0 (no limit) or positive")
    if f.since is not None and f.until is not None and f.since >= f.until:
        raise ConfigError(f"--since ({f.since}) is not before --until ({f.until}): swap them")
    return f


# ---------------------------------------------------------------- SQL
SELECT_TEMPLATE = ('SELECT a.event_time, a.sensor_id, s.zone, a.severity, a.score, a.threshold, a.model_version, '
                   'a."values", a.batch_id, a.detected_at FROM {anomalies} AS a '
                   'LEFT JOIN {sensors} AS s ON s.sensor_id = a.sensor_id')


def build_sql(filters: Filters, dialect: str) -> tuple[str, list]:
    """The query as a template (``{anomalies}``, ``{sensors}`` stand for the tables) and its
    parameters. Every value is a bound parameter; nothing from the user is spliced in."""
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
    text = SELECT_TEMPLATE
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
    """Anomalies matching ``filters`` from ``store``: QUERY_COLUMNS, normalised (see module doc)."""
    settings = settings or Settings()
    if store.kind == "sqlite":
        frame = _query_sqlite(store, filters)
    elif store.kind == "postgres":
        frame = _query_postgres(store, filters)
    elif store.kind == "s3":
        frame = _query_s3(store, filters, settings)
    else:  # pragma: no cover - parse_store only makes the three kinds
        raise ValueError(store.kind)
    return normalise(frame)


def _query_sqlite(store: Store, filters: Filters) -> pd.DataFrame:
    path = Path(store.target)
    if not path.is_file():
        raise ConfigError(f"SQLite store {path} does not exist: check --store (or run the deploy job first)")
    text, params = build_sql(filters, "sqlite")
    con = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute(text.format(anomalies="anomalies", sensors="sensors"), params).fetchall()
    except sqlite3.OperationalError as exc:
        raise ConfigError(f"SQLite store {path} cannot be queried ({exc}): is it a Pressure Sentinel store?") from None
    finally:
        con.close()
    return pd.DataFrame(rows, columns=QUERY_COLUMNS)


def _query_postgres(store: Store, filters: Filters) -> pd.DataFrame:
    import psycopg2
    from psycopg2 import errors, sql
    text, params = build_sql(filters, "postgres")
    stmt = sql.SQL(text).format(anomalies=sql.Identifier(store.namespace, "anomalies"),
                                sensors=sql.Identifier(store.namespace, "sensors"))
    try:
        con = psycopg2.connect(store.target or "", connect_timeout=10, application_name="sentinel-query")
    except psycopg2.OperationalError as exc:
        raise ConfigError(f"cannot connect to PostgreSQL ({' '.join(str(exc).split())}): check --store and PG* env") from None
    try:
        with con, con.cursor() as cur:
            cur.execute(stmt, params)
            rows = cur.fetchall()
    except errors.UndefinedTable:
        raise ConfigError(f"PostgreSQL schema {store.namespace!r} has no anomaly tables: check ?schema= "
                          f"(default sinks.postgres.schema) or run the deploy job first") from None
    finally:
        con.close()
    return pd.DataFrame(rows, columns=QUERY_COLUMNS)


def _query_s3(store: Store, filters: Filters, settings: Settings) -> pd.DataFrame:
    from botocore.exceptions import BotoCoreError, ClientError

    from sentinel.config import S3Settings
    from sentinel.sinks.s3 import S3Sink
    cfg = settings.sinks.s3
    sink = S3Sink(S3Settings(bucket=store.target, prefix=store.namespace, region=cfg.region,
                             endpoint_url=cfg.endpoint_url))
    day = lambda ts: None if ts is None else ts.strftime("%Y-%m-%d")  # noqa: E731
    try:
        frame = sink.read("anomalies", day(filters.since), day(filters.until))
        sensors = sink.read_sensors()
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"cannot read s3://{store.target}/{store.namespace} ({exc}): check --store, "
                          f"sinks.s3.endpoint_url / SENTINEL_S3_ENDPOINT and credentials") from None
    if frame.empty:
        return pd.DataFrame(columns=QUERY_COLUMNS)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    # a natural key written by two batches: keep the first write, like ON CONFLICT DO NOTHING
    frame = frame.sort_values("batch_id", kind="stable").drop_duplicates(NATURAL_KEY, keep="first")
    zones = dict(zip(sensors["sensor_id"], sensors["zone"])) if len(sensors) else {}
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
    frame = frame[keep.to_numpy()]
    frame = sort_rows(frame)
    if filters.limit:
        frame = frame.head(int(filters.limit))
    return frame[QUERY_COLUMNS]


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
    return out.reset_index(drop=True)


# ---------------------------------------------------------------- output
def _iso(ts) -> str:
    return "" if ts is None or pd.isna(ts) else ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _printable(s: str) -> str:
    """Control characters shown escaped (a newline in an id must not break a table row)."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in s)


def format_rows(frame: pd.DataFrame, fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "json":
        recs = []
        for r in frame.itertuples(index=False):
            d = r._asdict()
            d["event_time"], d["detected_at"] = _iso(d["event_time"]), _iso(d["detected_at"])
            d["values"] = json.loads(d["values"])
            d["batch_id"] = int(d["batch_id"])
            recs.append(d)
        return json.dumps(recs, indent=1, ensure_ascii=False) + "\n"
    text = frame.copy()
    for c in ("event_time", "detected_at"):
        text[c] = [_iso(t) for t in text[c]]
    if fmt == "csv":
        return text.to_csv(index=False, lineterminator="\n")
    if text.empty:
        return "(no anomalies)\n"
    cells = [[_printable("" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))) for v in row]
             for row in text.itertuples(index=False)]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(QUERY_COLUMNS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(QUERY_COLUMNS, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines) + f"\n({len(cells)} rows)\n"


# ---------------------------------------------------------------- CLI: query
def _add_filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="URL",
                   help="sqlite:///PATH | postgresql://USER@HOST:PORT/DB[?schema=S] | s3://BUCKET/PREFIX "
                        "(default: the first of sinks.enabled)")
    p.add_argument("--sensor", action="append", metavar="ID", help="only this sensor (repeatable)")
    p.add_argument("--since", metavar="T", help="event time from T (inclusive): ISO-8601 (naive = UTC) or 24h, 7d ...")
    p.add_argument("--until", metavar="T", help="event time before T (exclusive): same forms as --since")
    p.add_argument("--min-severity", type=float, metavar="X", help="severity (score / threshold) at least X")
    p.add_argument("--zone", metavar="Z", help="only sensors of zone Z in the sensor registry")


def add_query_args(p: argparse.ArgumentParser) -> None:
    _add_filter_args(p)
    p.add_argument("--limit", type=int, metavar="N", help="at most N rows (the earliest; default: all)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")


def _store_from_args(args, settings: Settings) -> Store:
    return parse_store(args.store, settings) if args.store else default_store(settings)


def run_query(args, settings: Settings) -> int:
    store = _store_from_args(args, settings)
    frame = query(store, filters_from_args(args), settings)
    sys.stdout.write(format_rows(frame, args.format))
    return 0


# ---------------------------------------------------------------- report
def add_report_args(p: argparse.ArgumentParser) -> None:
    _add_filter_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for summary.md, summary.png and one PNG per sensor")
    p.add_argument("--history", metavar="FILE", help="readings (CSV/Parquet/JSON lines) to draw each sensor's "
                                                     "series under its anomalies (columns: data.sensor_field, "
                                                     "data.time_field, data.features)")
    p.add_argument("--max-sensors", type=int, default=50, metavar="N",
                   help="plot the N sensors with most anomalies (default: 50)")


def run_report(args, settings: Settings) -> int:
    store = _store_from_args(args, settings)
    filters = filters_from_args(argparse.Namespace(**{**vars(args), "limit": None}))
    frame = query(store, filters, settings)
    history = read_history(args.history, settings) if args.history else None
    out = write_report(frame, args.out, history, list(settings.data.features), store.describe(),
                       max_sensors=args.max_sensors)
    print(f"report: {out['summary_md']} ({len(frame)} anomalies, {len(out['sensors'])} sensor plots)")
    return 0


def read_history(path: str, settings: Settings) -> pd.DataFrame:
    """Readings -> sensor_id, event_time (UTC) and the feature columns present."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--history {path} does not exist: check the path")
    if p.suffix in (".parquet", ".pq") or p.is_dir():
        frame = pd.read_parquet(p)
    elif p.suffix in (".json", ".jsonl", ".ndjson"):
        frame = pd.read_json(p, lines=True)
    else:
        frame = pd.read_csv(p, dtype={settings.data.sensor_field: str})
    d = settings.data
    if d.time_field not in frame:
        raise ConfigError(f"--history {path} has no time column {d.time_field!r}: set data.time_field")
    feats = [f for f in d.features if f in frame]
    if not feats:
        raise ConfigError(f"--history {path} has none of the features {list(d.features)}: set data.features")
    col = frame[d.time_field]
    times = (pd.to_datetime(col, unit="ms", utc=True, errors="coerce") if pd.api.types.is_numeric_dtype(col)
             else pd.to_datetime(col, utc=True, errors="coerce", format="mixed"))
    out = pd.DataFrame({"sensor_id": frame[d.sensor_field].astype(str) if d.sensor_field in frame else "sensor",
                        "event_time": times})
    for f in feats:
        out[f] = pd.to_numeric(frame[f], errors="coerce")
    return out.dropna(subset=["event_time"]).sort_values(["sensor_id", "event_time"]).reset_index(drop=True)


def safe_name(sensor_id: str) -> str:
    """A file name for a sensor's plot: ASCII slug + hash, never a path (``../../etc`` stays put)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", str(sensor_id)).strip("_")[:48] or "sensor"
    digest = hashlib.sha1(str(sensor_id).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"sensor-{slug}-{digest}.png"


def _mpl_text(s) -> str:
    """Plain text for matplotlib: '$' would start mathtext, control characters are escaped."""
    return _printable(str(s)).replace("$", r"\$")


def _md(s) -> str:
    """A markdown table cell: pipes, backticks, HTML and line breaks neutralised."""
    s = _printable("" if s is None else str(s))
    for a, b in (("\\", "\\\\"), ("|", "\\|"), ("`", "\\`"), ("<", "&lt;"), (">", "&gt;"), ("*", "\\*"),
                 ("_", "\\_"), ("[", "\\["), ("]", "\\]")):
        s = s.replace(a, b)
    return s


def summarise(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Anomalies per sensor, per zone and per hour (UTC)."""
    if frame.empty:
        empty = pd.DataFrame(columns=["anomalies"])
        return {"sensor": empty, "zone": empty, "hour": empty}
    f = frame.assign(zone=frame["zone"].fillna("(no zone)"), hour=frame["event_time"].dt.floor("h"))
    per_sensor = f.groupby("sensor_id").agg(zone=("zone", "first"), anomalies=("severity", "size"),
                                            max_severity=("severity", "max"), mean_severity=("severity", "mean"),
                                            first=("event_time", "min"), last=("event_time", "max"))
    per_sensor = per_sensor.sort_values(["anomalies", "max_severity"], ascending=False)
    per_zone = f.groupby("zone").agg(anomalies=("severity", "size"), sensors=("sensor_id", "nunique"),
                                     max_severity=("severity", "max")).sort_values("anomalies", ascending=False)
    per_hour = f.groupby("hour").agg(anomalies=("severity", "size"), sensors=("sensor_id", "nunique"))
    return {"sensor": per_sensor, "zone": per_zone, "hour": per_hour}


def write_report(frame: pd.DataFrame, out_dir: str | Path, history: pd.DataFrame | None = None,
                 features: list[str] | None = None, source: str = "", max_sensors: int = 50) -> dict:
    """Draw one PNG per sensor with anomalies and summary.md + summary.png into ``out_dir``."""
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():  # ids in scripts the default font lacks: boxes, not warnings
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from", category=UserWarning)
        return _write_report(plt, frame, out_dir, history, features, source, max_sensors)


def _write_report(plt, frame, out_dir, history, features, source, max_sensors) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    features = features or ["pressure"]
    tables = summarise(frame)
    sensor_files: dict[str, str] = {}
    top = list(tables["sensor"].index[:max_sensors]) if len(frame) else []
    for sid in top:
        rows = frame[frame["sensor_id"] == sid]
        hist = history[history["sensor_id"] == sid] if history is not None else None
        name = safe_name(sid)
        _plot_sensor(plt, sid, rows, hist if hist is not None and len(hist) else None, features, out / name)
        sensor_files[sid] = name
    _plot_summary(plt, tables, out / "summary.png")
    md = _summary_md(frame, tables, sensor_files, source, history is not None, max_sensors)
    (out / "summary.md").write_text(md, encoding="utf-8")
    return {"summary_md": out / "summary.md", "summary_png": out / "summary.png",
            "sensors": {sid: out / n for sid, n in sensor_files.items()}}


def _plot_sensor(plt, sid, rows: pd.DataFrame, hist: pd.DataFrame | None, features: list[str], path: Path) -> None:
    sev = rows["severity"].to_numpy()
    norm = plt.Normalize(vmin=1.0, vmax=max(float(sev.max()), 1.0001))
    if hist is not None:
        fig, (ax, ax_sev) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True, height_ratios=[3, 1.3],
                                         layout="constrained")
        feat = next((f for f in features if f in hist), None)
        ax.plot(hist["event_time"], hist[feat], lw=0.7, color="0.35", label=_mpl_text(feat))
        y = [json.loads(v).get(feat, math.nan) for v in rows["values"]]
        pts = ax.scatter(rows["event_time"], y, c=sev, cmap="autumn_r", norm=norm, s=26, zorder=3,
                         edgecolors="k", linewidths=0.3, label="anomaly")
        ax.set_ylabel(_mpl_text(feat))
        ax.legend(loc="upper left", fontsize=8)
    else:
        fig, ax_sev = plt.subplots(1, 1, figsize=(11, 3.5), layout="constrained")
        ax = None
    pts2 = ax_sev.scatter(rows["event_time"], sev, c=sev, cmap="autumn_r", norm=norm, s=18,
                          edgecolors="k", linewidths=0.3)
    ax_sev.axhline(1.0, color="tab:blue", lw=0.8, ls="--", label="threshold (severity 1)")
    ax_sev.set_ylabel("severity")
    ax_sev.legend(loc="upper left", fontsize=8)
    fig.colorbar(pts if ax is not None else pts2, ax=[a for a in (ax, ax_sev) if a is not None], label="severity")
    zone = rows["zone"].iloc[0]
    title = f"{_mpl_text(sid)}" + (f" (zone {_mpl_text(zone)})" if zone else "") + \
        f": {len(rows)} anomalies, max severity {sev.max():.2f}"
    (ax or ax_sev).set_title(title, fontsize=10)
    _date_axis(ax_sev)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _date_axis(ax) -> None:
    import matplotlib.dates as mdates
    loc = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def _plot_summary(plt, tables: dict, path: Path) -> None:
    fig, axes = plt.subplots(3, 1, figsize=(11, 11), layout="constrained")
    per_sensor = tables["sensor"].head(30)
    for ax, tab, title in ((axes[0], per_sensor, "anomalies per sensor (top 30)"),
                           (axes[1], tables["zone"], "anomalies per zone")):
        if len(tab):
            labels = [_mpl_text(x)[:24] for x in tab.index]
            ax.bar(range(len(tab)), tab["anomalies"], color="tab:red")
            ax.set_xticks(range(len(tab)), labels, rotation=60, ha="right", fontsize=7)
            ax.set_xlim(-0.6, max(len(tab), 10) - 0.4)  # a few bars stay bar-shaped
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("anomalies")
    ax = axes[2]
    hours = tables["hour"]
    if len(hours):
        ax.bar(hours.index, hours["anomalies"], width=1 / 24, align="edge", color="tab:orange")
        _date_axis(ax)
    ax.set_title("anomalies per hour (UTC)", fontsize=10)
    ax.set_ylabel("anomalies")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _summary_md(frame, tables, sensor_files, source, with_history, max_sensors) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Pressure Sentinel anomaly report", "",
             f"- store: `{_printable(source)}`" if source else "- store: (frame)",
             f"- generated: {now}",
             f"- anomalies: {len(frame)} from {frame['sensor_id'].nunique() if len(frame) else 0} sensors"]
    if len(frame):
        lines.append(f"- event time: {_iso(frame['event_time'].min())} .. {_iso(frame['event_time'].max())}")
    lines += ["", "![summary](summary.png)", "", "## Anomalies per sensor", ""]
    if len(frame):
        lines += ["| sensor | zone | anomalies | max severity | mean severity | first | last | plot |",
                  "|---|---|---:|---:|---:|---|---|---|"]
        for sid, r in tables["sensor"].iterrows():
            plot = f"[png]({sensor_files[sid]})" if sid in sensor_files else ""
            lines.append(f"| {_md(sid)} | {_md(r['zone'])} | {int(r['anomalies'])} | {r['max_severity']:.2f} | "
                         f"{r['mean_severity']:.2f} | {_iso(r['first'])} | {_iso(r['last'])} | {plot} |")
        if len(tables["sensor"]) > max_sensors:
            lines += ["", f"Plots for the {max_sensors} sensors with most anomalies only (--max-sensors)."]
        lines += ["", "## Anomalies per zone", "", "| zone | anomalies | sensors | max severity |", "|---|---:|---:|---:|"]
        for zone, r in tables["zone"].iterrows():
            lines.append(f"| {_md(zone)} | {int(r['anomalies'])} | {int(r['sensors'])} | {r['max_severity']:.2f} |")
        lines += ["", "## Anomalies per hour (UTC)", "", "| hour | anomalies | sensors |", "|---|---:|---:|"]
        for hour, r in tables["hour"].iterrows():
            lines.append(f"| {hour.strftime('%Y-%m-%d %H:00')} | {int(r['anomalies'])} | {int(r['sensors'])} |")
    else:
        lines.append("No anomalies match the filters.")
    lines += ["", "Severity = score / threshold (1 = at the alarm threshold)."
              + (" Sensor plots draw the readings from --history with anomalies on them." if with_history else "")]
    return "\n".join(lines) + "\n"
